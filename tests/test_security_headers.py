"""Response headers: CSP, Permissions-Policy, nosniff on /static/, no-store for signed-in users, HTTPS."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from asgiref.sync import async_to_sync

from dashboard import security
from dashboard.views import charts

ROOT = Path(__file__).resolve().parent.parent


def _asgi_get(path: str) -> tuple[int, dict[str, str], bytes]:
    """One GET through the ASGI application, as daphne calls it (the path already decoded)."""
    from dashboard.asgi import application

    messages: list[dict[str, Any]] = []

    async def go() -> None:
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": b"", "more_body": False}
            # The client stays: Django drops an answer whose client has gone.
            await asyncio.sleep(60)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            messages.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode("utf-8", "surrogateescape"),
            "query_string": b"",
            "headers": [(b"host", b"127.0.0.1")],
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000),
        }
        await application(scope, receive, send)

    async_to_sync(go)()
    start = next(m for m in messages if m["type"] == "http.response.start")
    headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return start["status"], headers, body


# -- the policies ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/jobs/", "/audit/", "/admin/", "/healthz"])
def test_every_answer_carries_the_csp_and_the_permissions_policy(client_for, path):
    answer = client_for("alice").get(path)
    assert answer.status_code == 200
    csp = answer["Content-Security-Policy"]
    assert csp == security.CONTENT_SECURITY_POLICY
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in csp
    policy = answer["Permissions-Policy"]
    for feature in ("camera", "microphone", "geolocation", "payment", "usb"):
        assert f"{feature}=()" in policy
    assert answer["X-Content-Type-Options"] == "nosniff"


def test_the_login_page_has_the_policies_too(client_for):
    answer = client_for(None).get("/login/")
    assert answer["Content-Security-Policy"] == security.CONTENT_SECURITY_POLICY


# -- caching -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/jobs/", "/audit/", "/admin/"])
def test_pages_for_a_signed_in_user_are_not_stored(client_for, path):
    answer = client_for("carol" if path != "/admin/" else "alice").get(path)
    assert answer.status_code == 200
    assert "no-store" in answer["Cache-Control"]
    assert "private" in answer["Cache-Control"]


def test_api_answers_are_not_stored(client_for, token_for, rabbit_broker):
    token = token_for("carol")
    for path in ("/api/v1/brokers", "/api/v1/brokers/rabbit/destinations"):
        answer = client_for(None).get(path, HTTP_AUTHORIZATION=f"Bearer {token}")
        assert answer.status_code == 200, path
        assert "no-store" in answer["Cache-Control"], path


def test_an_error_page_for_a_signed_in_user_is_not_stored_either(client_for):
    answer = client_for("carol").get("/brokers/no-such-broker/")
    assert answer.status_code == 404
    assert "no-store" in answer["Cache-Control"]


# -- /static/ ------------------------------------------------------------------------------


def test_static_files_carry_nosniff_and_the_policies(db):
    status, headers, body = _asgi_get("/static/css/sluice.css")
    assert status == 200
    assert b".htmx-indicator" in body
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-security-policy"] == security.CONTENT_SECURITY_POLICY
    assert "camera=()" in headers["permissions-policy"]
    # Files are the same for everyone: they may be cached.
    assert "no-store" not in headers.get("cache-control", "")


@pytest.mark.parametrize(
    "path",
    [
        "/static/../..",  # /static/..%2f.. once the server has decoded it
        "/static/../../etc/passwd",
        "/static/css/../../../dashboard/settings.py",
        "/static/..\\..\\etc\\passwd",
        "/static/a\x00b.css",
        "/static/" + "a" * 5000,
        "/static/no-such-file.css",
    ],
)
def test_a_path_out_of_the_static_folders_is_a_404(db, path):
    status, headers, body = _asgi_get(path)
    assert status == 404
    assert headers["x-content-type-options"] == "nosniff"
    assert b"ALLOWED_HOSTS" not in body and b"SECRET_KEY" not in body


def test_daphne_answers_a_climb_out_of_static_with_404(stack):
    for path in ("/static/..%2f..", "/static/..%2f..%2f..%2fetc%2fpasswd", "/static/%2e%2e/%2e%2e"):
        answer = requests.get(f"{stack.url}{path}", timeout=10, allow_redirects=False)
        assert answer.status_code == 404, (path, answer.status_code)
    css = requests.get(f"{stack.url}/static/css/sluice.css", timeout=10)
    assert css.status_code == 200
    assert css.headers["X-Content-Type-Options"] == "nosniff"


# -- no inline script or style for the CSP to refuse ----------------------------------------


# The project's templates and each broker kind's (dashboard/kinds/<kind>/templates/).
TEMPLATES = [
    *(ROOT / "templates").rglob("*.html"),
    *(ROOT / "dashboard").glob("**/templates/**/*.html"),
]


def test_templates_carry_no_inline_style_or_script():
    assert any("kinds" in path.parts for path in TEMPLATES)
    inline = re.compile(r'\sstyle="|<style|<script(?![^>]*\ssrc=)|\son[a-z]+="|javascript:', re.I)
    found = [
        f"{path.relative_to(ROOT)}: {m.group(0)!r}"
        for path in TEMPLATES
        for m in inline.finditer(path.read_text())
    ]
    assert found == []


@pytest.mark.parametrize("debug", [False, True])
def test_pages_load_scripts_from_files_only(client_for, settings, debug):
    """django-htmx adds its debug script under DEBUG: a file too, with no inline code."""
    settings.DEBUG = debug
    page = client_for("carol").get("/").content.decode()
    scripts = re.findall(r"<script\b[^>]*>", page)
    assert scripts and all(" src=" in tag for tag in scripts), scripts
    assert ("django-htmx.js" in page) is debug
    assert not re.search(r"\sstyle=|<style", page)
    assert '"includeIndicatorStyles": false' in page


def test_charts_draw_without_style_attributes():
    spark = charts.sparkline([1, 5, 3, 9])
    chart = charts.line_chart([("backlog", "s-backlog", [(0, 1.0), (30, 4.0), (60, None)])], 0, 60)
    for svg in (spark, chart):
        assert "<svg" in svg and "style=" not in svg


def test_the_progress_bar_is_drawn_without_a_style_attribute():
    from django.template.loader import render_to_string

    bar = render_to_string("dashboard/_bar.html", {"percent": 37, "state": "running"})
    assert 'width="37"' in bar and "style" not in bar


# -- behind HTTPS --------------------------------------------------------------------------


def _settings_under(env: dict[str, str], *names: str) -> subprocess.CompletedProcess[str]:
    code = f"import dashboard.settings as s; print(repr([getattr(s, n) for n in {names!r}]))"
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_https_settings_come_from_the_environment():
    names = (
        "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE",
        "SECURE_HSTS_SECONDS",
        "SECURE_PROXY_SSL_HEADER",
    )
    plain = _settings_under({}, *names)
    assert plain.stdout.strip() == "[False, False, 0, None]", plain.stderr
    https = _settings_under(
        {"SLUICE_HTTPS": "true", "SLUICE_PROXY_SSL_HEADER": "X-Forwarded-Proto: https"}, *names
    )
    assert https.stdout.strip() == (
        "[True, True, 31536000, ('HTTP_X_FORWARDED_PROTO', 'https')]"
    ), https.stderr
    shorter = _settings_under({"SLUICE_HTTPS": "1", "SLUICE_HSTS_SECONDS": "300"}, *names)
    assert shorter.stdout.strip() == "[True, True, 300, None]", shorter.stderr


@pytest.mark.parametrize(
    "env,message",
    [
        (
            {"SLUICE_PROXY_SSL_HEADER": "X-Forwarded-Proto"},
            "SLUICE_PROXY_SSL_HEADER must look like",
        ),
        ({"SLUICE_HTTPS": "maybe"}, "SLUICE_HTTPS must be true or false"),
        ({"SLUICE_HSTS_SECONDS": "-1"}, "SLUICE_HSTS_SECONDS must be at least 0"),
    ],
)
def test_bad_https_settings_stop_the_start(env, message):
    result = _settings_under(env, "SECURE_HSTS_SECONDS")
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and message in result.stderr


def test_hsts_is_sent_over_https_behind_a_proxy(client_for, settings):
    settings.SECURE_HSTS_SECONDS = 31_536_000
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    client = client_for("carol")
    assert "Strict-Transport-Security" not in client.get("/")
    secure = client.get("/", HTTP_X_FORWARDED_PROTO="https")
    assert secure["Strict-Transport-Security"] == "max-age=31536000"
