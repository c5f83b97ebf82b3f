"""The storefront's edge cache (Varnish, deploy/varnish): ban by surrogate key through Varnish's management CLI,
authenticated by the per-machine secret (the only way to change what the edge holds: the VCL refuses PURGE and
BAN over HTTP), and read pages through the edge as a shopper would. Surrogate keys are validated before they reach
a ban expression, so a release manifest cannot smuggle an expression of its own."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from releasegate_platform.catalog import Catalog, CatalogError, EdgeSpec

# A surrogate key as the storefront sends them (`price`, `content`, `template`, `product:sku-1`): no space, no
# quote, no regular-expression syntax, so it can be matched as a whole word without escaping.
KEY = re.compile(r"^[a-z][a-z0-9_-]{0,31}(:[A-Za-z0-9_-]{1,32})?$")
KEY_HEADER = "Surrogate-Key"
CLI_OK, CLI_AUTH = 200, 107
CLI_TIMEOUT = 5.0


class EdgeError(Exception):
    """The edge could not be reached, refused the management secret, or refused a ban."""


class KeyRefused(EdgeError, ValueError):
    """A surrogate key that is not one (bad input from a manifest or an operator)."""


def checked_keys(keys: list[Any] | tuple[Any, ...]) -> list[str]:
    """The keys, each validated; KeyRefused names the first that is not a surrogate key."""
    out = []
    for key in keys:
        if not isinstance(key, str) or not KEY.fullmatch(key):
            raise KeyRefused(
                f"{key!r} is not a surrogate key (lower-case word, optionally `:<id>`, e.g. product:sku-1)"
            )
        out.append(key)
    return out


def ban_expression(key: str) -> str:
    """Varnish CLI `ban` arguments that drop every cached object tagged with `key` (a whole word of its
    Surrogate-Key header)."""
    # `\s` rather than a space (the CLI splits a ban's quoted argument at spaces), sent as `\\s`: the CLI unescapes
    return f'ban obj.http.{KEY_HEADER} ~ "(^|\\\\s){checked_keys([key])[0]}(\\\\s|$)"'


FLUSH_EXPRESSION = f"ban obj.http.{KEY_HEADER} ~ ."  # every object the storefront tagged


def auth_response(challenge: str, secret: bytes) -> str:
    """Varnish's CLI authentication: SHA-256 over challenge, newline, the secret file's bytes, challenge, newline."""
    digest = hashlib.sha256()
    digest.update(challenge.encode() + b"\n" + secret + challenge.encode() + b"\n")
    return digest.hexdigest()


@dataclass(frozen=True)
class EdgePage:
    status: int
    body: Any
    cache: str  # "hit" or "miss", as the edge reports it (X-Edge-Cache)


class VarnishEdge:
    """One Varnish instance: `url` where shoppers read through it, `admin` its CLI `host:port`, `secret_file` the
    CLI secret (`.run/secrets/varnish/secret`)."""

    def __init__(self, url: str, admin: str, secret_file: Path) -> None:
        self.url, self._secret_file = url.rstrip("/"), secret_file
        host, _, port = admin.rpartition(":")
        if not host or not port.isdigit():
            raise EdgeError(f"edge admin address {admin!r} is not host:port")
        self._host, self._port = host, int(port)

    async def ban(self, keys: list[str]) -> list[str]:
        """Ban every object tagged with one of `keys`; returns the ban expressions Varnish accepted."""
        expressions = [ban_expression(k) for k in checked_keys(keys)]
        await self._cli(expressions)
        return expressions

    async def flush(self) -> str:
        """Ban everything the storefront tagged (a rollback: whatever the candidate put there, declared or not)."""
        await self._cli([FLUSH_EXPRESSION])
        return FLUSH_EXPRESSION

    async def get(self, path: str, host: str) -> EdgePage:
        """GET `path` through the edge with the Host header `host`."""
        try:
            async with httpx.AsyncClient(timeout=5.0) as client:
                r = await client.get(self.url + path, headers={"Host": host})
        except httpx.HTTPError as exc:
            raise EdgeError(f"edge {self.url} unreachable: {exc}") from None
        try:
            body = r.json()
        except ValueError:
            body = r.text
        return EdgePage(r.status_code, body, r.headers.get("X-Edge-Cache", "?"))

    async def _cli(self, commands: list[str]) -> None:
        try:
            secret = self._secret_file.read_bytes()
        except OSError as exc:
            raise EdgeError(f"no edge management secret: {exc}") from None
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(self._host, self._port), CLI_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise EdgeError(f"edge management CLI {self._host}:{self._port} unreachable: {exc}") from None
        try:
            status, body = await _read(reader)
            if status == CLI_AUTH:
                writer.write(f"auth {auth_response(body.split(chr(10), 1)[0], secret)}\n".encode())
                await writer.drain()
                status, body = await _read(reader)
            if status != CLI_OK:
                raise EdgeError(f"edge refused the management secret ({status}: {body.strip()[:80]})")
            for command in commands:
                writer.write(command.encode() + b"\n")
                await writer.drain()
                status, body = await _read(reader)
                if status != CLI_OK:
                    raise EdgeError(f"edge refused `{command}` ({status}: {body.strip()[:200]})")
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            raise EdgeError(f"edge management CLI {self._host}:{self._port} failed: {exc!r}") from None
        finally:
            writer.close()


async def _read(reader: asyncio.StreamReader) -> tuple[int, str]:
    """One CLI answer: a `<status> <length>` line, `length` bytes of body, a newline."""
    head = await asyncio.wait_for(reader.readline(), CLI_TIMEOUT)
    status, length = head.split()
    body = await asyncio.wait_for(reader.readexactly(int(length) + 1), CLI_TIMEOUT)
    return int(status), body[:-1].decode(errors="replace")


def catalog_edge(catalog: Catalog) -> Callable[[str], EdgeSpec | None]:
    """The catalog's edge entry of a service, read at each use (None: no edge, or no valid entry)."""

    def spec_of(service: str) -> EdgeSpec | None:
        try:
            return catalog.get(service).edge
        except CatalogError:
            return None

    return spec_of


class Flushable(Protocol):
    async def flush(self) -> str: ...


def rollback_flusher(
    spec_of: Callable[[str], EdgeSpec | None], edge: Flushable
) -> Callable[[str, str], Awaitable[str]]:
    """What the rollback service runs after traffic is back on stable: ban everything the service tagged at the
    edge of that environment, so stable's pages return (the candidate may have cached pages it never declared).
    Returns a note for the step's reason; a failed ban is said there, never hidden (the traffic is restored
    either way, and what stays cached expires with its max-age)."""

    async def flush(service: str, environment: str) -> str:
        spec = spec_of(service)
        if spec is None or spec.environment != environment:
            return ""
        try:
            return f"; edge: {await edge.flush()}"
        except EdgeError as exc:
            return f"; edge NOT purged ({exc}): pages the candidate cached stay until their max-age"

    return flush
