"""Sign-in throttling: per account and per address, refused with a 429 page, every attempt audited."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from tests.app_fixtures import PASSWORD

pytestmark = pytest.mark.django_db
WRONG = "not-the-password-4417"


def sign_in(username: str, password: str, address: str = "127.0.0.1", **extra: Any) -> Any:
    """POST the login form from `address`, as a browser with no session would."""
    from django.test import Client

    client = Client(REMOTE_ADDR=address, **extra)
    response = client.post("/login/", {"username": username, "password": password})
    response.signed_in = "_auth_user_id" in client.session
    return response


def let_the_cool_off_pass() -> None:
    """Age the recorded failures past the lockout, as waiting 15 minutes would."""
    from axes.models import AccessAttempt
    from django.conf import settings
    from django.db.models import F

    later = settings.AXES_COOLOFF_TIME + timedelta(seconds=1)
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - later)


def test_forty_wrong_passwords_lock_the_account_until_the_cool_off(personas: Any) -> None:
    from dashboard.models import AuditEntry

    answers = [sign_in("carol", WRONG).status_code for _ in range(40)]
    assert answers == [200] * 9 + [429] * 31
    refused = sign_in("carol", PASSWORD)
    assert refused.status_code == 429 and not refused.signed_in
    page = refused.content.decode()
    assert "Too many failed sign-ins" in page and "15 minutes" in page
    assert "right password is refused" in page

    failed = AuditEntry.objects.filter(action="login.failed").order_by("id")
    assert failed.count() == 41
    assert [e.result for e in failed] == ["failed"] * 10 + ["denied"] * 31
    assert {(e.user, e.destination) for e in failed} == {("anonymous", "carol")}
    assert {(e.detail["username"], e.detail["address"]) for e in failed} == {("carol", "127.0.0.1")}
    everything = json.dumps(list(AuditEntry.objects.values("detail", "destination", "user")))
    assert WRONG not in everything and PASSWORD not in everything

    let_the_cool_off_pass()
    again = sign_in("carol", PASSWORD)
    assert again.status_code == 302 and again.signed_in
    ok = AuditEntry.objects.get(action="login.ok")
    assert (ok.user, ok.detail["address"]) == ("carol", "127.0.0.1")


def test_one_account_is_locked_whatever_address_the_guesses_come_from(personas: Any) -> None:
    for n in range(10):
        sign_in("bob", WRONG, address=f"198.51.100.{n}")
    assert sign_in("bob", PASSWORD, address="198.51.100.99").status_code == 429
    # Those addresses made one failure each: another account signs in from them.
    assert sign_in("carol", PASSWORD, address="198.51.100.3").signed_in


def test_one_address_is_locked_whatever_accounts_it_guesses(personas: Any) -> None:
    for n in range(10):
        sign_in(f"guess-{n}", WRONG, address="203.0.113.9")
    locked = sign_in("alice", PASSWORD, address="203.0.113.9")
    assert locked.status_code == 429 and not locked.signed_in
    assert sign_in("alice", PASSWORD, address="203.0.113.10").signed_in


def test_behind_a_proxy_the_address_is_the_one_it_forwards(personas: Any, settings: Any) -> None:
    from dashboard.models import AuditEntry

    settings.SLUICE_PROXY_COUNT = 1
    # The left entry is the client's to forge; the proxy appended the right one.
    for n in range(10):
        forwarded = f"10.9.9.{n}, 192.0.2.44"
        sign_in(f"guess-{n}", WRONG, address="10.0.0.1", HTTP_X_FORWARDED_FOR=forwarded)
    assert set(AuditEntry.objects.values_list("detail__address", flat=True)) == {"192.0.2.44"}
    through_proxy = {"address": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "192.0.2.45"}
    assert sign_in("alice", PASSWORD, **through_proxy).signed_in
    blocked = {"address": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "1.1.1.1, 192.0.2.44"}
    assert sign_in("alice", PASSWORD, **blocked).status_code == 429
