"""Each broker kind as the contract suite sees it: the only kind-specific code of the suite.

A registration says how to make a dead-letter source of N messages at the
kind's real broker (every message names one of two origins, where a replay
sends it back), how to count what is in the source and read what reached the
origins, the job and publish request bodies for that kind, the options of an
unreachable broker, and what the kind cannot do, with the reason. The test
modules ask the registration and never test the kind themselves.

Message n of a source goes to origin n % 2. `closed` origins refuse every copy
(RabbitMQ: no binding routes there; Kafka: no such topic; NATS: no stream
stores the subject) until `open`ed.
"""

from __future__ import annotations

from tests.contract.kinds.base import Copy, Registration, Source
from tests.contract.kinds.kafka import Kafka
from tests.contract.kinds.nats import Nats
from tests.contract.kinds.rabbitmq import RabbitMQ

KINDS: dict[str, type[Registration]] = {kind.name: kind for kind in (RabbitMQ, Kafka, Nats)}

__all__ = ["KINDS", "Copy", "Registration", "Source"]
