"""Payment sandbox for the sample shop: approves well-formed cards of known brands, with a few natural declines.

`python -m shop.payment_sandbox --port 18090 [--decline-rate 0.02]`
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
from typing import Any

from aiohttp import web

DEFAULT_PORT = 18090
DEFAULT_DECLINE_RATE = 0.02
LATENCY_SECONDS = (0.002, 0.008)


def luhn_valid(number: str) -> bool:
    if not number.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def brand(number: str) -> str | None:
    """The card brand when prefix and length fit a known network, else None."""
    if not number.isdigit():
        return None
    if number.startswith("4") and len(number) in (13, 16, 19):
        return "visa"
    if len(number) == 16 and (51 <= int(number[:2]) <= 55 or 2221 <= int(number[:4]) <= 2720):
        return "mastercard"
    if len(number) == 15 and number[:2] in ("34", "37"):
        return "amex"
    return None


def create_app(decline_rate: float = DEFAULT_DECLINE_RATE, rng: random.Random | None = None) -> web.Application:
    rng = rng or random.Random()

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def authorize(request: web.Request) -> web.Response:
        try:
            body: Any = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return web.json_response({"approved": False, "reason": "invalid_request"}, status=400)
        await asyncio.sleep(rng.uniform(*LATENCY_SECONDS))
        card = str(body.get("card_number", ""))
        if brand(card) is None or not luhn_valid(card):
            return web.json_response({"approved": False, "reason": "invalid_card"}, status=402)
        if rng.random() < decline_rate:
            return web.json_response({"approved": False, "reason": "insufficient_funds"}, status=402)
        return web.json_response({"approved": True, "auth_code": secrets.token_hex(4).upper(), "brand": brand(card)})

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_post("/authorize", authorize)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shop.payment_sandbox", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument(
        "--decline-rate",
        type=float,
        default=DEFAULT_DECLINE_RATE,
        help="share of valid cards declined with insufficient_funds (default 0.02)",
    )
    args = parser.parse_args(argv)
    web.run_app(
        create_app(args.decline_rate), host=args.host, port=args.port, print=None, access_log=None, shutdown_timeout=5
    )


if __name__ == "__main__":
    main()
