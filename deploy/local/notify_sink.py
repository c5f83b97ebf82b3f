"""The local stack's stand-in for Slack, Teams and webhook receivers: the notifier's routes point here (secret
`notifier/ops-slack.url` = `http://127.0.0.1:19500/slack/ops`), and every message received is appended as one JSON
line to `.run/logs/notify-sink.jsonl`, so a person or `make demo` can see what would have reached the channel.

    python deploy/local/notify_sink.py [--host 127.0.0.1] [--port 19500] [--log .run/logs/notify-sink.jsonl]

POST /slack/<channel>, /teams/<channel>, /webhook/<channel>: a JSON object of at most 64 KiB (a bigger body is
refused with 413), shaped as the platform takes it (Slack: `blocks`; Teams: a `message` with `attachments`);
answered 200 `ok` as Slack does, or 400 with the reason. GET /health: 200.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 19500
DEFAULT_LOG = Path(__file__).resolve().parents[2] / ".run" / "logs" / "notify-sink.jsonl"
MAX_BODY = 64 * 1024
# what a person checking a delivery wants to see; everything else (Host, Accept-Encoding...) is noise
HEADERS_KEPT = ("Content-Type", "User-Agent", "X-Releasegate-Event-Id", "X-Releasegate-Signature")
LOG_KEY: web.AppKey[Path] = web.AppKey("log", Path)
LOCK_KEY: web.AppKey[asyncio.Lock] = web.AppKey("lock", asyncio.Lock)


def shape_error(kind: str, body: Any) -> str | None:
    """Why `body` is not what the platform `kind` accepts, or None."""
    if not isinstance(body, dict):
        return "invalid_payload: not a JSON object"
    if kind == "slack" and not (isinstance(body.get("blocks"), list) and body["blocks"]):
        return "invalid_blocks: no blocks"
    if kind == "teams" and not (body.get("type") == "message" and isinstance(body.get("attachments"), list)):
        return "invalid_payload: not a message with attachments"
    return None


def append(log: Path, line: str) -> None:
    with log.open("a", encoding="utf-8") as f:
        f.write(line)


async def receive(request: web.Request) -> web.Response:
    kind = request.match_info["kind"]
    if request.content_length is not None and request.content_length > MAX_BODY:
        return web.Response(status=413, text=f"request_too_large: more than {MAX_BODY} bytes")
    try:
        raw = await request.read()  # aiohttp refuses a longer chunked body too (client_max_size)
    except web.HTTPRequestEntityTooLarge:
        return web.Response(status=413, text=f"request_too_large: more than {MAX_BODY} bytes")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return web.Response(status=400, text="invalid_payload: not JSON")
    if (error := shape_error(kind, body)) is not None:
        return web.Response(status=400, text=error)
    record = {
        "at": datetime.now(UTC).isoformat(),
        "path": request.path,
        "headers": {name: request.headers[name] for name in HEADERS_KEPT if name in request.headers},
        "body": body,
    }
    line = json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n"
    async with request.app[LOCK_KEY]:  # one line per message, never two interleaved
        await asyncio.to_thread(append, request.app[LOG_KEY], line)
    return web.Response(text="ok")


async def health(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_app(log: Path = DEFAULT_LOG) -> web.Application:
    log.parent.mkdir(parents=True, exist_ok=True)
    app = web.Application(client_max_size=MAX_BODY)
    app[LOG_KEY] = log
    app[LOCK_KEY] = asyncio.Lock()
    app.router.add_get("/health", health)
    app.router.add_post(r"/{kind:slack|teams|webhook}/{channel:[A-Za-z0-9_-]{1,64}}", receive)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python deploy/local/notify_sink.py", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--log", type=Path, default=DEFAULT_LOG)
    args = parser.parse_args(argv)
    web.run_app(create_app(args.log), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
