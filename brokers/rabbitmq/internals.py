"""The pika internals Sluice relies on, each behind one small function.

Checked on pika 1.4.x (1.4.4); pyproject.toml pins `pika>=1.4,<1.5` so that an
upgrade past that range is a deliberate step, with the RabbitMQ tests run
against it (they exercise every one of these). The rest of `brokers.rabbitmq`
uses pika's public API and these functions, never a private name of its own.

Why: pika's BlockingChannel waits for each publisher confirm in turn, and its
pure-Python frame handling costs more per message than everything else. So a
connection is opened by BlockingConnection (handshake, errors, timeouts) and
then driven through its asynchronous core, with frames read by our own reader
(`brokers.rabbitmq.wire`). Each internal, and why the public API does not do
the job:

- `BlockingConnection._impl`, the asynchronous core (a
  `pika.connection.Connection`): its public calls (`channel`, `close`,
  `is_open`...) let a batch be written whole and confirmed pipelined, which
  the blocking API cannot.
- `BlockingConnection._flush_output` with `blocking_connection._IoloopTimerContext`:
  pumps the socket until a condition holds or a timer fires; the blocking API
  only waits inside its own RPCs, and `process_data_events` stops on a time
  limit only, so waiting on a condition of ours would mean polling.
- The core's `_read_frame`, replaced per connection, and the `_frame_buffer`
  it reads: the only place where whole deliveries and confirms can be decoded
  in one go. The reader's contract is pika's: it returns (bytes consumed,
  frame), (0, None) to wait for more input, and a `pika.frame.ProtocolHeader`
  (frame type -1) is consumed and otherwise ignored.
- The core's `_adapter_emit_data`: writes many publishes' frames with one
  send(); the public basic_publish writes each frame on its own.
- The core's `_body_max_length`: the body frame size negotiated with the
  broker, which splitting a body into frames needs.
- The core's `_adapter_disconnect_stream`: drops a connection whose close the
  broker never answered; `close()` would wait for that answer.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import pika
from pika.adapters.blocking_connection import _IoloopTimerContext

# The input not yet decoded into frames, read by the frame reader on every
# frame: attrgetter runs in C, where a Python function would cost a call each.
frame_buffer = operator.attrgetter("_frame_buffer")


def core_of(blocking: pika.BlockingConnection) -> Any:
    """The asynchronous connection a BlockingConnection drives."""
    return blocking._impl


def read_frames_with(core: Any, reader: Callable[[], tuple[int, Any]]) -> None:
    """Have `core` decode its input with `reader` instead of pika's frame decoder."""
    core._read_frame = reader


def pump(blocking: pika.BlockingConnection, done: Callable[[], bool], timeout: float) -> None:
    """Send what is buffered and process input until `done()` or `timeout` seconds have passed.

    Raises pika.exceptions.AMQPError when the connection fails or closes.
    """
    with _IoloopTimerContext(timeout, blocking._impl) as timer:
        blocking._flush_output(timer.is_ready, done)


def emit(core: Any, data: bytes) -> None:
    """Write `data` (whole, encoded frames) to the connection's socket."""
    core._adapter_emit_data(data)


def body_max_length(core: Any) -> int:
    """The largest body frame payload negotiated with the broker."""
    length: int = core._body_max_length
    return length


def disconnect(core: Any) -> None:
    """Drop the connection's socket without waiting for the broker."""
    core._adapter_disconnect_stream()
