"""HAProxy runtime API client (TCP or unix socket): server slots, weights and state, read back for evidence.

The runtime API reads one line of words: whitespace separates arguments, `;` separates commands and `\\` escapes
either. So every argument is checked against the shape of its role (a backend, a server slot, a map key...)
and refused with a ValueError before anything is sent; nothing is quoted or cleaned up."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from contracts.names import shown

MAINT_FLAGS = 0x01 | 0x02 | 0x20 | 0x40  # forced, inherited, resolution and hostname maintenance (not CMAINT)
TIMEOUT_SECONDS = 10.0
MAX_REPLY_BYTES = 16 << 20

# `<service>_<environment>` and `<service>_<environment>_wave`, from two names of at most 63 characters.
BACKEND = re.compile(r"[a-z0-9][a-z0-9._-]{0,139}")
# Server slots (`s1`), map keys (tenants, services) and map values (a backend, `1`): plain names.
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,139}")
# Map files are absolute paths of plain segments (no `.` or `..` segment, no spaces).
MAP_FILE = re.compile(r"(/(?!\.\.?(/|$))[A-Za-z0-9._@+-]{1,255})+")
IPV4 = re.compile(r"(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}")
STATES = frozenset({"ready", "drain", "maint"})
MAX_WEIGHT = 256
# Printable ASCII except what the runtime API gives a meaning to: spaces split, `;` chains, `\` and quotes escape.
_WORD = re.compile(r"[!#-&(-:<-\[\]-~]+")
# How the runtime API words a refusal ("No such server.", "Can't find backend.", "Unknown map identifier...",
# "'set server <srv> state' expects..."). It is the reply's first line; data lines never begin so (`show servers
# state` starts with its format version, `show map` lines with a pointer), and a map key or a backend that merely
# contains one of these words ("invalid", "required-co") is data, not a refusal.
_REFUSAL = re.compile(
    r"(unknown|no such|can't|cannot|require|invalid|not found|key not found|permission denied|missing|failed"
    r"|out of memory|empty|absolute weight|relative weight|backend is using|')",
    re.IGNORECASE,
)

Transport = Callable[[bytes], Awaitable[bytes]]


class HAProxyError(Exception):
    """The runtime API refused a command or could not be reached."""


class UnsafeArgument(HAProxyError, ValueError):
    """An argument that could change what a runtime API command means; nothing was sent."""


@dataclass(frozen=True)
class ServerState:
    backend: str
    name: str
    addr: str
    port: int
    operational: bool
    maintenance: bool
    weight: int


def checked(role: str, value: object, pattern: re.Pattern[str]) -> str:
    """`value` if it is a string that matches the pattern of its role whole; UnsafeArgument otherwise."""
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise UnsafeArgument(
            f"refusing HAProxy {role} {shown(value)}: it must match {pattern.pattern} "
            f"(no whitespace, ';', quotes, backslashes or control characters)"
        )
    return value


def _number(role: str, value: object, low: int, high: int) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UnsafeArgument(f"refusing HAProxy {role} {shown(value)}: it must be an integer from {low} to {high}")
    return str(value)


class HAProxy:
    def __init__(self, address: str, transport: Transport | None = None) -> None:
        """`transport` sends one command line and returns the whole reply (tests record it); default: a new
        connection to `address` per command, as the runtime API closes it after each reply."""
        self._address = address
        self._transport = transport or self._exchange

    async def _exchange(self, line: bytes) -> bytes:
        try:
            if self._address.startswith("/"):
                connecting = asyncio.open_unix_connection(self._address)
            else:
                host, _, port = self._address.rpartition(":")
                connecting = asyncio.open_connection(host, int(port))
            reader, writer = await asyncio.wait_for(connecting, TIMEOUT_SECONDS)
        except (OSError, ValueError, TimeoutError) as exc:
            raise HAProxyError(f"HAProxy runtime API at {self._address} unreachable: {exc or 'timed out'}") from None
        try:
            writer.write(line)
            await writer.drain()
            reply = await asyncio.wait_for(self._read_all(reader), TIMEOUT_SECONDS)
        except (OSError, TimeoutError) as exc:
            raise HAProxyError(f"HAProxy runtime API at {self._address} did not answer: {exc or 'timed out'}") from None
        finally:
            writer.close()
        return reply

    async def _read_all(self, reader: asyncio.StreamReader) -> bytes:
        """The reply up to the end of the connection; refused past MAX_REPLY_BYTES rather than held in memory."""
        chunks, size = [], 0
        while chunk := await reader.read(1 << 16):
            size += len(chunk)
            if size > MAX_REPLY_BYTES:
                raise HAProxyError(
                    f"HAProxy runtime API at {self._address} replied with more than {MAX_REPLY_BYTES} bytes"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    async def _run(self, *words: str) -> str:
        """Send one command made of already role-checked words; every word is checked once more, so no path
        through this client sends a separator."""
        for word in words:
            checked("argument", word, _WORD)
        command = " ".join(words)
        out = (await self._transport(command.encode("ascii") + b"\n")).decode("utf-8", "replace")
        if _REFUSAL.match(out.lstrip()):
            raise HAProxyError(f"HAProxy refused {command!r}: {out.strip()[:500]}")
        return out

    async def servers(self, backend: str) -> list[ServerState]:
        out = await self._run("show", "servers", "state", checked("backend", backend, BACKEND))
        states = []
        for line in out.splitlines():
            parts = line.split()
            if len(parts) < 19 or not parts[0].isdigit():
                continue
            states.append(
                ServerState(
                    backend=parts[1],
                    name=parts[3],
                    addr=parts[4],
                    port=int(parts[18]),
                    operational=parts[5] == "2",
                    maintenance=int(parts[6]) & MAINT_FLAGS != 0,
                    weight=int(parts[7]),
                )
            )
        return states

    def _server(self, backend: str, server: str) -> str:
        return f"{checked('backend', backend, BACKEND)}/{checked('server', server, NAME)}"

    async def point(self, backend: str, server: str, port: int, addr: str = "127.0.0.1") -> None:
        await self._run(
            "set",
            "server",
            self._server(backend, server),
            "addr",
            checked("address", addr, IPV4),
            "port",
            _number("port", port, 1, 65535),
        )

    async def set_state(self, backend: str, server: str, state: str) -> None:
        if state not in STATES:
            raise UnsafeArgument(
                f"refusing HAProxy server state {shown(state)}: it must be one of {', '.join(sorted(STATES))}"
            )
        await self._run("set", "server", self._server(backend, server), "state", state)

    async def set_weight(self, backend: str, server: str, weight: int) -> None:
        await self._run("set", "weight", self._server(backend, server), _number("weight", weight, 0, MAX_WEIGHT))

    async def map_entries(self, map_file: str) -> dict[str, str]:
        out = await self._run("show", "map", checked("map file", map_file, MAP_FILE))
        return {p[1]: p[2] for p in (line.split() for line in out.splitlines()) if len(p) == 3}

    async def map_set(self, map_file: str, key: str, value: str) -> None:
        map_file, key = checked("map file", map_file, MAP_FILE), checked("map key", key, NAME)
        value = checked("map value", value, NAME)
        verb = "set" if key in await self.map_entries(map_file) else "add"
        await self._run(verb, "map", map_file, key, value)

    async def map_del(self, map_file: str, key: str) -> None:
        await self._run("del", "map", checked("map file", map_file, MAP_FILE), checked("map key", key, NAME))

    async def map_clear(self, map_file: str) -> None:
        await self._run("clear", "map", checked("map file", map_file, MAP_FILE))
