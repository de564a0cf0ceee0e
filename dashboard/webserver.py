"""`python -m dashboard.webserver --host H --port P`: the web tier, as `make run` and Docker start it.

uvicorn runs SLUICE_WEB_WORKERS processes serving `dashboard.asgi:application` on one
listening socket, and starts a new one if a worker dies. Each worker holds its own
websockets; the Redis channel layer brings every group's pushes to all of them.
HTTP requests are bounded per worker by dashboard/web_limits.py.
"""

from __future__ import annotations

import argparse
import os

import uvicorn

# uvicorn stops taking requests at SIGTERM and waits this long for those in progress.
GRACEFUL_SECONDS = 5
# The supervisor kills a worker that does not answer its ping this long. A worker busy
# in one long call that holds the GIL (decoding a big answer) is slow, not hung.
HEALTHCHECK_SECONDS = 30


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dashboard.webserver", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    # Read here so that a bad value stops the server before any worker starts.
    from django.conf import settings

    uvicorn.run(
        "dashboard.asgi:application",
        host=args.host,
        port=args.port,
        workers=settings.SLUICE_WEB_WORKERS,
        # websockets' own implementation; Channels needs no lifespan events.
        ws="websockets-sansio",
        lifespan="off",
        # Sluice reads X-Forwarded-For itself, only from the proxies SLUICE_PROXY_COUNT
        # names; uvicorn would trust any local peer's and rewrite the client address.
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
        timeout_worker_healthcheck=HEALTHCHECK_SECONDS,
    )


if __name__ == "__main__":
    main()
