"""Entry point of a bundle: `python -m storefront` with cwd = the extracted bundle."""

import logging

from aiohttp import web

from storefront.app import create_app
from storefront.settings import Settings


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings.from_env()
    # run_app turns SIGTERM into a graceful shutdown that runs the app's cleanup hooks.
    web.run_app(
        create_app(settings), host="127.0.0.1", port=settings.port, shutdown_timeout=10, print=None, access_log=None
    )


if __name__ == "__main__":
    main()
