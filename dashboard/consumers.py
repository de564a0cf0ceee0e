"""The websocket consumer: checks the user, joins the group of the view it watches, relays."""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from channels.generic.websocket import WebsocketConsumer

from dashboard import live
from dashboard.auth import role_of


class LiveConsumer(WebsocketConsumer):
    view: live.View | None = None

    def connect(self) -> None:
        user = self.scope.get("user")
        if role_of(user) is None:
            # 4401/4403 tell the page's script not to retry with the same session.
            self.close(code=4401 if not getattr(user, "is_authenticated", False) else 4403)
            return
        raw = dict(_query(self.scope)).get("view", "")
        self.view = live.parse(raw)
        if self.view is None:
            self.close(code=4404)
            return
        async_to_sync(self.channel_layer.group_add)(self.view.group, self.channel_name)
        live.watch(self.view)
        self.accept()

    def disconnect(self, code: int) -> None:
        if self.view is not None:
            async_to_sync(self.channel_layer.group_discard)(self.view.group, self.channel_name)
            live.unwatch(self.view)
            self.view = None

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # The page only listens; htmx's ws extension may send form data, which is ignored.
        pass

    def fragment(self, event: dict[str, Any]) -> None:
        self.send(text_data=event["html"])


def _query(scope: dict[str, Any]) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(scope.get("query_string", b"").decode("utf-8", "replace"))
