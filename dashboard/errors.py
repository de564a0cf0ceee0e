"""Every error answer says what went wrong, in the form the caller reads.

Django answers some refusals with an empty body (405 from `require_POST`, 400 from a
bad Host): a script sees nothing and a person a blank page. This fills them in.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus

from django.http import HttpRequest, HttpResponse, JsonResponse

from dashboard.auth import is_api


def _sentence(response: HttpResponse) -> str:
    if response.status_code == 405 and response.has_header("Allow"):
        return f"This address takes {response['Allow']} only."
    try:
        return f"{HTTPStatus(response.status_code).phrase}."
    except ValueError:
        return f"Error {response.status_code}."


class ErrorMessageMiddleware:
    """Give a 4xx or 5xx answer with an empty body a one-sentence message."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code < 400 or getattr(response, "streaming", False):
            return response
        if response.content.strip():
            return response
        message = _sentence(response)
        if is_api(request):
            filled: HttpResponse = JsonResponse({"error": message}, status=response.status_code)
        else:
            filled = HttpResponse(message, status=response.status_code, content_type="text/plain")
        for name in ("Allow", "WWW-Authenticate", "Retry-After"):
            if response.has_header(name):
                filled[name] = response[name]
        return filled
