"""ASGI entry point: HTTP through Django, websockets through Channels."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
django_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from dashboard.live.routing import websocket_urlpatterns  # noqa: E402
from dashboard.live.sockets import SameOrigin  # noqa: E402
from dashboard.security import StaticFiles  # noqa: E402
from dashboard.web_limits import WebLimits  # noqa: E402

application = ProtocolTypeRouter(
    {
        # A few requests in progress per worker, a short wait, then a clear 503 (web_limits.py).
        # Static files come from the app itself, so `make run` needs no web server in front.
        "http": WebLimits(
            StaticFiles(django_app),
            concurrency=settings.SLUICE_WEB_CONCURRENCY,
            queue_seconds=settings.SLUICE_WEB_QUEUE_SECONDS,
            request_timeout=settings.SLUICE_REQUEST_TIMEOUT,
        ),
        "websocket": SameOrigin(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
