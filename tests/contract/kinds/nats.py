"""NATS's registration: a dead-letter stream whose messages name their origin subject.

JetStream keeps no dead letters of its own; Sluice reads them from a stream like
this one, or from its capture of max-deliveries and terminated advisories. The
contract uses the stream (quicker to fill); the advisories have their own tests
in tests/nats/.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

import nats as nats_client
from django.conf import settings
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from tests.contract.kinds.base import Copy, Registration, Source


class Nats(Registration):
    """A dead-letter stream `C_<name>_DLQ` whose messages name their origin subject in a header."""

    name = "nats"
    broker_name = "nats"
    service = "nats"
    drains = False
    refused = "kept: failed"
    own_headers = ("x-original-subject", "x-exception-message")
    removing = {"delete_original": True}
    kill_count = 20_000
    # Every copy carries Nats-Msg-Id "sluice:<stream>:<seq>:<subject>": within the
    # target stream's duplicate window (2 minutes) a copy sent again is dropped.
    drops_resent_copies = True

    def __init__(self, services: dict[str, str], unique: str) -> None:
        super().__init__(services, unique)
        self.url = services["url"]
        self.streams: list[str] = []
        # A collection makes Sluice's advisory capture stream when it is missing; made
        # during a test, it goes with the test's own, as tests/nats_fixtures.py's `js` does.
        self.capture = settings.SLUICE_NATS_CAPTURE_STREAM
        self.had_capture = self.capture in self.run(self._names)

    @staticmethod
    async def _names(js: Any) -> list[str]:
        return [info.config.name for info in await js.streams_info()]

    def run(self, work: Callable[[Any], Coroutine[Any, Any, Any]]) -> Any:
        """`await work(jetstream)` on a connection of its own, closed afterwards."""

        async def main() -> Any:
            nc = await nats_client.connect(self.url, connect_timeout=5, allow_reconnect=False)
            try:
                return await work(nc.jetstream())
            finally:
                await nc.close()

        return asyncio.run(main())

    def options(self) -> dict[str, str]:
        return {"url": self.url, "monitoring_url": self.services["monitoring_url"]}

    def unreachable_options(self, port: int) -> dict[str, str]:
        return {"url": f"nats://127.0.0.1:{port}", "monitoring_url": f"http://127.0.0.1:{port}"}

    def _stream(self, name: str, subject: str) -> None:
        self.run(lambda js: js.add_stream(StreamConfig(name=name, subjects=[subject])))
        self.streams.append(name)

    def dead_letters(self, count: int, closed: Iterable[int] = ()) -> Source:
        u = self.fresh()
        dlq, subject = f"C_{u}_DLQ", f"c.{u}.dlq"
        origins = [f"C_{u}_A", f"C_{u}_B"]
        self._stream(dlq, subject)
        for i in set(range(2)) - set(closed):
            self._stream(origins[i], f"c.{u}.{'ab'[i]}.>")
        bodies = self.make_bodies(u, count)

        async def fill(js: Any) -> list[int]:
            acks = []
            for n, body in enumerate(bodies):
                headers = {"x-original-subject": f"c.{u}.{'ab'[n % 2]}.in"}
                headers["x-exception-message"] = "boom"
                acks.append(await js.publish_async(subject, body, headers=headers))
            return [int(ack.seq) for ack in await asyncio.gather(*acks)]

        seqs = self.run(fill)
        return Source(
            f"stream/{dlq}", bodies, [f"{dlq}:{s}" for s in seqs], {"dlq": dlq, "origins": origins}
        )

    def collected_count(self, dest: Any) -> int:
        # A limits stream's backlog is its consumers'; what it holds is counted aside.
        return int(dest.details["extra"]["messages"])

    def open(self, src: Source, origin: int) -> None:
        u = src.names["dlq"].removeprefix("C_").removesuffix("_DLQ")
        self._stream(src.names["origins"][origin], f"c.{u}.{'ab'[origin]}.>")

    def _read(self, stream: str) -> list[Any]:
        """Every message of `stream`, read by an ephemeral consumer of the test's own."""

        async def read(js: Any) -> list[Any]:
            if stream not in await self._names(js):
                return []
            info = await js.stream_info(stream)
            config = ConsumerConfig(ack_policy=AckPolicy.NONE)
            sub = await js.pull_subscribe(
                info.config.subjects[0], durable=None, stream=stream, config=config
            )
            out: list[Any] = []
            while len(out) < info.state.messages:
                out += await sub.fetch(1000, timeout=5)
            return out

        result: list[Any] = self.run(read)
        return result

    def count_source(self, src: Source) -> int:
        async def count(js: Any) -> int:
            return int((await js.stream_info(src.names["dlq"])).state.messages)

        result: int = self.run(count)
        return result

    def _held(self, origin: int, stream: str) -> list[Copy]:
        return [Copy(origin, m.data, dict(m.headers or {})) for m in self._read(stream)]

    def source_messages(self, src: Source) -> list[Copy]:
        return self._held(-1, src.names["dlq"])

    def copies(self, src: Source) -> list[Copy]:
        return [m for i, s in enumerate(src.names["origins"]) for m in self._held(i, s)]

    def publish_request(self, src: Source, body: str, headers: dict[str, str]) -> dict[str, Any]:
        u = src.names["dlq"].removeprefix("C_").removesuffix("_DLQ")
        return {"subject": f"c.{u}.dlq", "body": body, "headers": headers}

    def import_to(self, src: Source, origin: int) -> dict[str, str]:
        u = src.names["dlq"].removeprefix("C_").removesuffix("_DLQ")
        return {"subject": f"c.{u}.{'ab'[origin]}.in"}

    def bad_requests(self, src: Source) -> list[tuple[dict[str, Any], str]]:
        one = src.ids[0]

        def edit(headers: dict[str, Any]) -> dict[str, Any]:
            return {"selection": {"ids": [one]}, "edit": {"id": one, "headers": headers}}

        return [
            ({"source": "advisories/NO_SUCH_STREAM"}, "capture stream is not there"),
            ({"source": "queue/x"}, "source must be"),
            ({"destination": "a b"}, "cannot contain spaces"),
            ({"destination": "orders.*"}, "has a wildcard"),
            ({"destination": f"nowhere.{self.unique}"}, "no stream stores"),
            ({"action": "discard"}, "not discarded"),
            ({"delete_original": "yes"}, "true or false"),
            (edit({"Nats-Rollup": "sub"}), "would purge messages"),
            (edit({"trace": "t\r\nNats-Rollup: all"}), "cannot hold a line break"),
            (edit({"bad name": "v"}), "letters, digits"),
            (edit({"count": 3}), "must have a text value"),
        ]

    def close(self) -> None:
        async def delete(js: Any) -> None:
            made = [*self.streams]
            if not self.had_capture and self.capture in await self._names(js):
                made.append(self.capture)
            for name in made:
                with contextlib.suppress(Exception):
                    await js.delete_stream(name)

        self.run(delete)
