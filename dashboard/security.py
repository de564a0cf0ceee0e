"""Headers every answer carries, and /static/ served with them.

- Content-Security-Policy: scripts, styles and connections come from Sluice
  itself, and no inline script or style runs (templates carry none; htmx's
  inline indicator style is switched off in base.html).
- Permissions-Policy: none of the browser's devices or sensors; Sluice uses none.
- Cache-Control: no-store on every answer to a signed-in user (pages and API
  answers carry message bodies, which must not stay in a browser's or a proxy's
  cache once the user has gone).

Static files are served by `StaticFiles` (dashboard/asgi.py), outside Django's
middleware, so it adds these headers (and nosniff) itself; and a path that
climbs out of the static folders (`/static/..%2f..`) is a 404, never a 500.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.exceptions import SuspiciousFileOperation
from django.http import Http404, HttpRequest, HttpResponseBase
from django.utils.cache import add_never_cache_headers

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        # CSP 3: 'self' also matches ws: and wss: to the page's own host and port.
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
PERMISSIONS_POLICY = ", ".join(
    f"{feature}=()"
    for feature in (
        "accelerometer",
        "camera",
        "display-capture",
        "geolocation",
        "gyroscope",
        "magnetometer",
        "microphone",
        "midi",
        "payment",
        "usb",
    )
)


def add_policies(response: HttpResponseBase) -> None:
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")


class SecurityHeadersMiddleware:
    """The policies on every answer; no-store on those to a signed-in user."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        add_policies(response)
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            add_never_cache_headers(response)
        return response


class StaticFiles(ASGIStaticFilesHandler):
    """Django's static files handler, with the policies, and 404 for paths out of bounds."""

    def serve(self, request: HttpRequest) -> Any:
        try:
            return super().serve(request)
        except (SuspiciousFileOperation, ValueError):
            # A path out of the static folders, or one no file can have (a NUL byte).
            raise Http404("No such file.") from None

    async def get_response_async(self, request: HttpRequest) -> Any:
        response = await super().get_response_async(request)
        add_policies(response)
        return response
