"""Publishing through the JSON API: what an operator sends lands at the broker, confirmed and
audited; a viewer's or a malformed request sends nothing."""

from __future__ import annotations

from typing import Any

import pytest

from dashboard.models import AuditEntry, Broker
from tests.contract.kinds import Registration

pytestmark = pytest.mark.django_db


def test_an_operator_publishes_through_the_api_and_it_lands_confirmed(
    kind: Registration, broker: Broker, api: Any
) -> None:
    kind.require("publish")
    src = kind.dead_letters(0)
    request = kind.publish_request(src, '{"hello": "contract"}', {"tenant": "acme"})
    sent = api("POST", f"/brokers/{broker.name}/publish", request)
    assert sent["confirmed"] is True and sent.get("routed", True) is True, sent
    (landed,) = kind.source_messages(src)
    assert landed.body == b'{"hello": "contract"}'
    assert landed.headers["tenant"] == "acme"
    entry = AuditEntry.objects.get(action="message.publish")
    assert (entry.user, entry.broker, entry.result, entry.count) == ("bob", broker.name, "ok", 1)


def test_a_viewer_or_a_bad_body_publishes_nothing(
    kind: Registration, broker: Broker, api: Any, api_for: Any
) -> None:
    kind.require("publish")
    src = kind.dead_letters(0)
    path = f"/brokers/{broker.name}/publish"
    viewer = api_for("carol").raw("POST", path, kind.publish_request(src, "x", {}))
    assert viewer.status_code == 403
    bad = {**kind.publish_request(src, "%%% not base64", {}), "body_kind": "base64"}
    refused = api.raw("POST", path, bad)
    assert refused.status_code == 400 and "not valid base64" in refused.json()["error"]
    not_json = api.raw("POST", path, "{not json")
    assert not_json.status_code == 400
    assert kind.count_source(src) == 0
    assert not AuditEntry.objects.filter(action="message.publish", result="ok").exists()
