"""The live websocket: checks the user, joins the group of the view it watches, relays."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qsl

from channels.db import database_sync_to_async

from dashboard.live import watch
from dashboard.live.sockets import GuardedSocket


class LiveConsumer(GuardedSocket):
    view: watch.View | None = None

    async def connect(self) -> None:
        if not await self.admit():
            return
        query = self.scope.get("query_string", b"").decode("utf-8", "replace")
        view = await database_sync_to_async(watch.parse)(dict(parse_qsl(query)).get("view", ""))
        if view is None:
            await self.close(code=4404)
            return
        if not await self.settle():
            return
        self.view = view
        await self.channel_layer.group_add(view.group, self.channel_name)
        await asyncio.to_thread(watch.watch, view)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.release()

    async def release(self) -> None:
        view, self.view = self.view, None
        if view is not None:
            await self.channel_layer.group_discard(view.group, self.channel_name)
            await asyncio.to_thread(watch.unwatch, view)
        await super().release()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # The page only listens; htmx's ws extension may send form data, which is ignored.
        pass

    async def fragment(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["html"])
