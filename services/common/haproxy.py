"""HAProxy runtime API client (TCP or unix socket): server slots, weights and state, read back for evidence."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass


MAINT_FLAGS = 0x01 | 0x02 | 0x20 | 0x40  # forced, inherited, resolution and hostname maintenance (not CMAINT)


class HAProxyError(Exception):
    """The runtime API refused a command or could not be reached."""


@dataclass(frozen=True)
class ServerState:
    backend: str
    name: str
    addr: str
    port: int
    operational: bool
    maintenance: bool
    weight: int


class HAProxy:
    def __init__(self, address: str) -> None:
        self._address = address

    async def command(self, cmd: str) -> str:
        try:
            if self._address.startswith("/"):
                reader, writer = await asyncio.open_unix_connection(self._address)
            else:
                host, _, port = self._address.rpartition(":")
                reader, writer = await asyncio.open_connection(host, int(port))
        except OSError as exc:
            raise HAProxyError(f"HAProxy runtime API at {self._address} unreachable: {exc}") from None
        try:
            writer.write(cmd.encode() + b"\n")
            await writer.drain()
            out = (await asyncio.wait_for(reader.read(), 10)).decode()
        finally:
            writer.close()
        lowered = out.lower()
        if any(w in lowered for w in ("unknown command", "no such", "require", "invalid", "not found")):
            raise HAProxyError(f"HAProxy refused {cmd!r}: {out.strip()}")
        return out

    async def servers(self, backend: str) -> list[ServerState]:
        out = await self.command(f"show servers state {backend}")
        states = []
        for line in out.splitlines():
            parts = line.split()
            if len(parts) < 19 or not parts[0].isdigit():
                continue
            states.append(ServerState(backend=parts[1], name=parts[3], addr=parts[4], port=int(parts[18]),
                                      operational=parts[5] == "2", maintenance=int(parts[6]) & MAINT_FLAGS != 0, weight=int(parts[7])))
        return states

    async def point(self, backend: str, server: str, port: int) -> None:
        await self.command(f"set server {backend}/{server} addr 127.0.0.1 port {port}")

    async def set_state(self, backend: str, server: str, state: str) -> None:
        await self.command(f"set server {backend}/{server} state {state}")

    async def set_weight(self, backend: str, server: str, weight: int) -> None:
        await self.command(f"set weight {backend}/{server} {weight}")

    async def map_entries(self, map_file: str) -> dict[str, str]:
        out = await self.command(f"show map {map_file}")
        return {p[1]: p[2] for p in (line.split() for line in out.splitlines()) if len(p) == 3}

    async def map_set(self, map_file: str, key: str, value: str) -> None:
        if key in await self.map_entries(map_file):
            await self.command(f"set map {map_file} {key} {value}")
        else:
            await self.command(f"add map {map_file} {key} {value}")

    async def map_clear(self, map_file: str) -> None:
        await self.command(f"clear map {map_file}")
