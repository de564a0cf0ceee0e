"""Fixtures of the contract suite: each registered kind at its real broker, a Broker row for
it, and the JSON API as a persona calls it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.contract.kinds import KINDS, Registration


@pytest.fixture(params=sorted(KINDS))
def kind(request: pytest.FixtureRequest, unique_name: str) -> Iterator[Registration]:
    """One kind's registration, on the session's broker of that kind; what it made goes after."""
    registration = KINDS[request.param]
    made = registration(request.getfixturevalue(registration.service), unique_name)
    yield made
    made.close()


@pytest.fixture
def broker(db: Any, kind: Registration) -> Any:
    """The Broker row for the kind's real broker, named as the stack names it."""
    from dashboard.models import Broker

    return Broker.objects.create(name=kind.broker_name, kind=kind.name, options=kind.options())


class JsonApi:
    """/api/v1 through Django's test client, with one persona's token."""

    def __init__(self, client: Any, token: str) -> None:
        self.client = client
        self.auth = f"Bearer {token}"

    def raw(self, method: str, path: str, body: Any = None) -> Any:
        """The response itself; `body` a dict (sent as JSON) or str (sent as it is)."""
        data = body if isinstance(body, str) else json.dumps(body) if body is not None else ""
        return self.client.generic(
            method,
            f"/api/v1{path}",
            data=data,
            content_type="application/json",
            HTTP_AUTHORIZATION=self.auth,
        )

    def __call__(self, method: str, path: str, body: Any = None) -> Any:
        response = self.raw(method, path, body)
        assert response.status_code < 300, response.content[:300]
        return response.json()


@pytest.fixture
def api_for(client: Any, token_for: Callable[[str], str]) -> Callable[[str], JsonApi]:
    """The API as a persona calls it: alice admin, bob operator, carol viewer."""
    return lambda persona: JsonApi(client, token_for(persona))


@pytest.fixture
def api(api_for: Callable[[str], JsonApi]) -> JsonApi:
    """The API as bob, the operator, calls it."""
    return api_for("bob")
