"""A small synchronous client for NATS messages and JetStream stream reads, over nats-py.

Talks to: one server's client port (`url`, nats://host:4222) with one nats-py
connection, on a private asyncio loop in a thread of its own ("sluice-nats"),
so synchronous callers (views, Celery tasks, the tail's reader thread) never
touch an event loop and never block Channels' one. `close()` ends the
connection, the loop and the thread.

Options (the Broker row's, `${VAR}`s already expanded by the caller):
    url             nats://host:4222; required here (monitoring does not need it)
    user, password  client credentials (or in the URL: nats://user:pw@host:4222)
    token           a client token
    monitoring_url  ignored here

The API (every failure is a `BrokerError` whose message is safe to show; a bad
subject is `BadSubject`, also a ValueError, raised before anything is sent):
    NatsClient(options, timeout=3.0, name="sluice")    connects, or raises
    .stream_info(name) -> StreamInfo                    Missing, JetStreamOff
    .get(stream, seq=None, *, subject=None, next_by_subject=None,
         start_time=None, direct=True, body_limit=None) -> StoredMsg | None
                                                        one message, None if none matches
    .get_many(stream, count, *, seq=None, start_time=None, subject=None,
              direct=True, body_limit=None) -> list[StoredMsg]
    .publish(subject, body, headers=(), jetstream=True) -> PubAck | None
                                                        None: core NATS, nothing acknowledges
    .request(subject, body, headers=(), timeout=None) -> Reply
                                                        NoResponders, NoReply (both: TooBig)
    .delete_msg(stream, seq) -> None                    Missing if not there
    .subscribe(subject, deliver) -> None                deliver(Delivery) on the client's thread
    .connected, .max_payload, .close(), and `with NatsClient(...) as c:`

Reading never creates a consumer: JetStream's DIRECT GET (`$JS.API.DIRECT.GET.<stream>`,
when the stream allows it, batched) or MESSAGE GET (`$JS.API.STREAM.MSG.GET.<stream>`),
so it works on WorkQueue streams and changes nothing. Headers keep their order
and repeated names (nats-py folds them into a dict; see `brokers.nats.internals`).
The result types, errors and parsing are in `brokers.nats.wire`, re-exported here.

Cannot:
    - read more than one message per MESSAGE GET: streams without allow_direct
      cost one round trip per message;
    - see streams of other accounts than the one the credentials sign in to.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from datetime import datetime
from typing import Any, Self, TypeVar

import nats.errors
from nats.aio.msg import Msg

from brokers.base import BrokerError
from brokers.nats import internals

# The data, errors and helpers live in nats_wire; they are imported from here.
from brokers.nats.wire import (
    API,
    BadSubject,
    Delivery,
    Headers,
    JetStreamOff,
    Missing,
    NoReply,
    NoResponders,
    PubAck,
    Reply,
    StoredMsg,
    StreamInfo,
    TooBig,
    _api_error,
    _check_stream,
    _cut,
    _description,
    _int_header,
    _NoMessage,
    _reason,
    _rfc3339,
    _stream_info,
    check_subject,
    from_api,
    from_direct,
    header_pairs,
    pairs_of,
    parse_time,
    status_of,
    stream_name,
)
from brokers.redact import redact_url

__all__ = [
    "BadSubject",
    "Delivery",
    "Headers",
    "JetStreamOff",
    "Missing",
    "NatsClient",
    "NoReply",
    "NoResponders",
    "PubAck",
    "Reply",
    "StoredMsg",
    "StreamInfo",
    "TooBig",
    "check_subject",
    "header_pairs",
    "parse_time",
]

T = TypeVar("T")

# -- the client ---------------------------------------------------------------------------


class NatsClient:
    """One connection to a NATS server, used synchronously from any thread."""

    def __init__(
        self,
        options: Mapping[str, Any],
        timeout: float = 3.0,
        name: str = "sluice",
        ping_interval: int = 20,
    ) -> None:
        self.url = str(options.get("url") or "").strip()
        if not self.url:
            raise BrokerError(
                "This broker has no client URL: set its option url (nats://host:4222) "
                "to read or send messages.",
                retryable=False,
            )
        self.shown_url = redact_url(self.url)
        self.timeout = timeout
        self._user, self._password, self._token = (
            str(options[k]) if options.get(k) else None for k in ("user", "password", "token")
        )
        self._errors: list[BaseException] = []
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="sluice-nats", daemon=True
        )
        self._thread.start()
        self._nc = internals.Client()
        try:
            # Up to two attempts of `timeout` each (see _connect), plus a margin.
            self._run(self._connect(name, ping_interval), wait=2 * timeout + 1)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return not self._closed and self._nc.is_connected

    @property
    def max_payload(self) -> int:
        """The largest body the server accepts (its max_payload)."""
        return int(self._nc.max_payload)

    @property
    def last_error(self) -> str:
        """What the connection last complained of, for "lost the server: ...".

        A refused login outranks what follows it (the server then resets the
        connection, and the second attempt is reset too)."""
        reasons = [_reason(e) for e in self._errors]
        for reason in reversed(reasons):
            if reason.startswith("authorization failed"):
                return reason
        return reasons[-1] if reasons else "the connection closed"

    # -- JetStream reads -------------------------------------------------------------

    def stream_info(self, name: str) -> StreamInfo:
        _check_stream(name)
        return _stream_info(self._run(self._api(f"STREAM.INFO.{name}", None, name)))

    def get(
        self,
        stream: str,
        seq: int | None = None,
        *,
        subject: str | None = None,
        next_by_subject: str | None = None,
        start_time: datetime | None = None,
        direct: bool = True,
        body_limit: int | None = None,
    ) -> StoredMsg | None:
        """One message: at `seq`; the last on `subject`; the first at/after `seq` or
        `start_time` on `next_by_subject` (wildcards allowed). None if there is none."""
        _check_stream(stream)
        req: dict[str, Any] = {}
        if seq is not None:
            req["seq"] = seq
        if subject:
            req["last_by_subj"] = subject
        if next_by_subject:
            req["next_by_subj"] = next_by_subject
        if start_time is not None:
            req["start_time"] = _rfc3339(start_time)
        return self._run(self._get(stream, req, direct, body_limit))

    def get_many(
        self,
        stream: str,
        count: int,
        *,
        seq: int | None = None,
        start_time: datetime | None = None,
        subject: str | None = None,
        direct: bool = True,
        body_limit: int | None = None,
    ) -> list[StoredMsg]:
        """Up to `count` messages in order from `seq` (or `start_time`), on `subject` if given."""
        _check_stream(stream)
        req: dict[str, Any] = {"next_by_subj": subject or ">"}
        if start_time is not None:
            req["start_time"] = _rfc3339(start_time)
        else:
            req["seq"] = max(1, seq or 1)
        # A batch may come in parts (byte limits): allow a round trip per part.
        wait = self.timeout * (2 + count // 50) if direct else self.timeout * (count + 1)
        return self._run(self._many(stream, req, count, direct, body_limit), wait=wait)

    def delete_msg(self, stream: str, seq: int) -> None:
        """Remove one message (JetStream keeps the gap); Missing if it is not there."""
        _check_stream(stream)
        self._run(self._api(f"STREAM.MSG.DELETE.{stream}", {"seq": seq}, stream, seq))

    # -- sending ---------------------------------------------------------------------

    def publish(
        self, subject: str, body: bytes, headers: Headers = (), jetstream: bool = True
    ) -> PubAck | None:
        """Send one message. JetStream: wait for a stream's PubAck; core: only for the
        server to have read it (a flush), as core NATS acknowledges nothing."""
        check_subject(subject, wildcards=False)
        return self._run(self._publish(subject, body, headers, jetstream))

    def request(
        self, subject: str, body: bytes, headers: Headers = (), timeout: float | None = None
    ) -> Reply:
        """Send a request with a reply inbox and wait for the first answer."""
        check_subject(subject, wildcards=False)
        wait = self.timeout if timeout is None else timeout
        return self._run(self._request(subject, body, headers, wait), wait=wait)

    def subscribe(self, subject: str, deliver: Callable[[Delivery], None]) -> None:
        """Call `deliver` (on the client's thread: keep it quick) with each message on
        `subject`, wildcards allowed, from once this returns until `close()`
        (which `deliver` must not call: it would wait for itself)."""
        check_subject(subject, wildcards=True)
        self._run(self._subscribe(subject, deliver))

    # -- ending ----------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection, stop the loop and end its thread; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
            try:
                future.result(timeout=self.timeout + 2)
            except (concurrent.futures.TimeoutError, nats.errors.Error, OSError):
                pass  # a dead server: nothing left to tell it
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=self.timeout + 2)
        if not self._loop.is_running():
            self._loop.close()

    # -- on the loop -----------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T], wait: float | None = None) -> T:
        if self._closed:
            coro.close()
            raise BrokerError("This NATS client is closed.", retryable=False)
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        limit = (self.timeout if wait is None else wait) + 1.0
        try:
            return future.result(timeout=limit)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise BrokerError(f"{self.shown_url} did not answer within {limit:g} s") from None
        except nats.errors.NoServersError:
            raise BrokerError(f"cannot reach {self.shown_url}: {self.last_error}") from None
        except (nats.errors.Error, OSError) as exc:
            raise BrokerError(f"{self.shown_url}: {_reason(exc)}") from None

    async def _connect(self, name: str, ping_interval: int) -> None:
        async def on_error(exc: Exception) -> None:
            self._errors = [*self._errors[-9:], exc]

        # nats-py 2.16 never gives up on a first connection without reconnect
        # attempts; with one, it tries twice and then raises NoServersError.
        await self._nc.connect(
            servers=[self.url],
            name=name,
            connect_timeout=max(1, round(self.timeout)),
            max_reconnect_attempts=1,
            reconnect_time_wait=0,
            ping_interval=ping_interval,
            max_outstanding_pings=2,
            error_cb=on_error,
            # Every subject is checked by check_subject(), with the server's
            # rules; nats-py's would refuse literal tokens such as "<b>".
            skip_subject_validation=True,
            user=self._user,
            password=self._password,
            token=self._token,
        )

    async def _shutdown(self) -> None:
        if not self._nc.is_closed:
            await self._nc.close()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _api(
        self, what: str, req: dict[str, Any] | None, stream: str, seq: int | None = None
    ) -> dict[str, Any]:
        """A JetStream API call; its error turned into what it means."""
        if stream:
            stream_name(stream)
        payload = json.dumps(req).encode() if req is not None else b""
        try:
            msg = await self._nc.request(f"{API}.{what}", payload, timeout=self.timeout)
        except nats.errors.NoRespondersError:
            raise JetStreamOff(
                f"JetStream is not enabled on {self.shown_url} (nothing answers {API})"
            ) from None
        except nats.errors.TimeoutError:
            raise BrokerError(f"JetStream on {self.shown_url} did not answer in time") from None
        try:
            resp: dict[str, Any] = json.loads(msg.data)
        except ValueError:
            raise BrokerError(f"{API}.{what} answered something that is not JSON") from None
        err = resp.get("error")
        if err:
            raise _api_error(err, stream, seq)
        return resp

    async def _get(
        self, stream: str, req: dict[str, Any], direct: bool, limit: int | None
    ) -> StoredMsg | None:
        stream_name(stream)
        if direct:
            try:
                msg = await self._nc.request(
                    f"{API}.DIRECT.GET.{stream}", json.dumps(req).encode(), timeout=self.timeout
                )
            except nats.errors.NoRespondersError:
                pass  # no allow_direct (or no stream): MESSAGE GET says which
            else:
                status = status_of(msg)
                if status == "404":
                    return None
                if status:
                    raise BrokerError(f"JetStream refused the read: {_description(msg)}")
                return from_direct(stream, msg, limit)
        try:
            resp = await self._api(f"STREAM.MSG.GET.{stream}", req, stream)
        except _NoMessage:
            return None
        return from_api(stream, resp["message"], limit)

    async def _many(
        self, stream: str, req: dict[str, Any], count: int, direct: bool, limit: int | None
    ) -> list[StoredMsg]:
        out: list[StoredMsg] = []
        while len(out) < count:
            got: list[StoredMsg] | None = None
            more = True
            if direct:
                got, more = await self._direct_batch(stream, {**req, "batch": count - len(out)})
                if got is None:  # the stream does not allow direct gets
                    direct = False
            if got is None:
                one = await self._get(stream, req, False, limit)
                got, more = ([one], True) if one else ([], False)
            out += [m if limit is None else _cut(m, limit) for m in got]
            if not got or not more:
                break
            req = {"seq": got[-1].seq + 1, "next_by_subj": req["next_by_subj"]}
        return out[:count]

    async def _direct_batch(
        self, stream: str, req: dict[str, Any]
    ) -> tuple[list[StoredMsg] | None, bool]:
        """One DIRECT GET batch: (messages, whether more match); (None, _) if not allowed."""
        inbox = self._nc.new_inbox()
        sub = await self._nc.subscribe(inbox)
        out: list[StoredMsg] = []
        try:
            await self._nc.publish(
                f"{API}.DIRECT.GET.{stream}", json.dumps(req).encode(), reply=inbox
            )
            while True:
                try:
                    msg = await sub.next_msg(timeout=self.timeout)
                except nats.errors.TimeoutError:
                    raise BrokerError(
                        f"JetStream on {self.shown_url} did not answer in time"
                    ) from None
                status = status_of(msg)
                if status == "503":
                    return None, False
                if status == "404":  # nothing (more) matches
                    return out, False
                if status == "204":  # end of the batch
                    return out, _int_header(msg, "Nats-Num-Pending", 0) > 0
                if status:
                    raise BrokerError(f"JetStream refused the read: {_description(msg)}")
                out.append(from_direct(stream, msg, None))
                pending = _int_header(msg, "Nats-Num-Pending", -1)
                if pending < 0:  # a server without batches answers one message
                    return out, True
        finally:
            await sub.unsubscribe()

    async def _publish(
        self, subject: str, body: bytes, headers: Headers, jetstream: bool
    ) -> PubAck | None:
        if len(body) > self._nc.max_payload:
            raise TooBig(len(body), self._nc.max_payload)
        if not jetstream:
            await self._nc.publish(subject, body, headers=internals.outgoing(headers))
            await self._nc.flush(timeout=max(1, round(self.timeout)))
            return None
        try:
            msg = await self._nc.request(
                subject, body, timeout=self.timeout, headers=internals.outgoing(headers)
            )
        except nats.errors.NoRespondersError:
            raise NoResponders(f"no stream listens on {subject}", retryable=False) from None
        except nats.errors.TimeoutError:
            raise NoReply(
                f"no acknowledgement for {subject} within {self.timeout:g} s: "
                "the message may or may not be stored"
            ) from None
        try:
            ack = json.loads(msg.data)
        except ValueError:
            ack = None
        if not isinstance(ack, dict) or not ("stream" in ack or "error" in ack):
            raise BrokerError(
                f"something other than a stream answered on {subject}: it got the message "
                "as a request, and no stream acknowledged it",
                retryable=False,
            )
        if ack.get("error"):
            err = ack["error"]
            raise BrokerError(
                f"the stream refused it: {err.get('description', err)}", retryable=False
            )
        return PubAck(str(ack["stream"]), int(ack["seq"]), bool(ack.get("duplicate")))

    async def _request(self, subject: str, body: bytes, headers: Headers, wait: float) -> Reply:
        if len(body) > self._nc.max_payload:
            raise TooBig(len(body), self._nc.max_payload)
        began = time.perf_counter()
        try:
            msg = await self._nc.request(
                subject, body, timeout=wait, headers=internals.outgoing(headers)
            )
        except nats.errors.NoRespondersError:
            raise NoResponders(f"no responders: nothing subscribes to {subject}") from None
        except nats.errors.TimeoutError:
            raise NoReply(f"no reply within {wait:g} s") from None
        took = (time.perf_counter() - began) * 1000
        return Reply(msg.subject, pairs_of(msg), bytes(msg.data), took)

    async def _subscribe(self, subject: str, deliver: Callable[[Delivery], None]) -> None:
        async def on_message(msg: Msg) -> None:
            deliver(Delivery(msg.subject, msg.reply, pairs_of(msg), bytes(msg.data), time.time()))

        await self._nc.subscribe(subject, cb=on_message)
        # Once the server has the subscription, what is published from now on is seen.
        await self._nc.flush(timeout=max(1, round(self.timeout)))
