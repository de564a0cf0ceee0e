"""Regex filters run in RE2, in time linear in the record: no pattern stalls a page, a
search or the server, and a pattern RE2 cannot run is refused with the reason.

`(a+)+$` is the probe's pattern: Python's backtracking `re` takes seconds over
"a" * 24 + "!" and twice as long for every "a" more.
"""

from __future__ import annotations

import html
import statistics
import threading
import time

import pytest
import requests
from kafka import KafkaProducer

from brokers.kafka.filters import FilterError, compile_filters
from dashboard.kinds.kafka import search as kafka_search
from dashboard.models import Search

pytestmark = pytest.mark.django_db

WORST = "(a+)+$"
# With backtracking, the first takes about 2 s and the second about 16 times that.
POISON = [b"a" * 24 + b"!", b"a" * 28 + b"!"]


@pytest.fixture
def topic(make_topic, unique_name) -> str:
    return make_topic(f"regex-{unique_name}")


def test_the_worst_pattern_over_a_real_topic_answers_at_once(
    kafka_broker, client_for, topic, produce
):
    produce(topic, [*POISON, b"aaa"], partition=0)
    carol = client_for("carol")
    filters = {"body": WORST, "mode": "regex", "count": "10"}
    started = time.monotonic()
    api = carol.get(f"/api/v1/brokers/kafka/topics/{topic}/messages", filters)
    page = carol.get(f"/brokers/kafka/topics/{topic}/messages", filters)
    elapsed = time.monotonic() - started
    assert api.status_code == 200 and page.status_code == 200
    assert [r["value"] for r in api.json()["records"]] == ["aaa"]  # the poison never matches
    assert api.json()["scanned"] == 3
    assert 'data-offset="2"' in page.content.decode()
    # Both reads, Kafka round trips included; backtracking would take a minute or more.
    assert elapsed < 10, elapsed


def test_the_worst_pattern_in_a_whole_topic_search_finishes_at_once(
    kafka_broker, personas, topic, produce
):
    produce(topic, [*POISON, b"aaa"], partition=0)
    search = kafka_search.create(
        personas["carol"], kafka_broker, topic, {"body": WORST, "mode": "regex"}, enqueue=False
    )
    started = time.monotonic()
    kafka_search.run(search.pk)
    elapsed = time.monotonic() - started
    search.refresh_from_db()
    assert (search.state, search.scanned, search.matched) == (Search.DONE, 3, 1)
    assert elapsed < 10, elapsed


REFUSED = [
    ("a{4294967296}", "{4294967296} repeats more than 1000 times"),
    (r"(\w+) \1", "backreferences like \\1 are not supported"),
    ("price(?=USD)", "lookahead (?=...) is not supported"),
    ("(?<!un)paid", "lookbehind (?<=...) is not supported"),
]


@pytest.mark.parametrize(
    "pattern, says", REFUSED, ids=["huge-repeat", "backref", "ahead", "behind"]
)
def test_a_pattern_re2_cannot_run_is_a_400_that_says_why(
    kafka_broker, client_for, client, token_for, topic, produce, pattern, says
):
    produce(topic, 1, partition=0)
    carol = client_for("carol")
    filters = {"body": pattern, "mode": "regex"}
    page = carol.get(f"/brokers/kafka/topics/{topic}/messages", filters)
    assert page.status_code == 400
    assert says in html.unescape(page.content.decode())
    api = carol.get(f"/api/v1/brokers/kafka/topics/{topic}/messages", filters)
    assert api.status_code == 400 and says in api.json()["error"]
    searched = client.post(
        f"/api/v1/brokers/kafka/topics/{topic}/searches",
        filters,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token_for('carol')}",
    )
    assert searched.status_code == 400 and says in searched.json()["error"]
    assert not Search.objects.exists()  # nothing was started


def test_a_regex_matches_bytes_as_documented():
    def hits(pattern: str, *values: bytes) -> list[bytes]:
        class R:
            def __init__(self, value: bytes) -> None:
                self.key, self.value = None, value
                self.headers: list[tuple[str, bytes | None]] = []

        matcher = compile_filters({"body": pattern, "mode": "regex"})
        return [r.value for r in matcher.select([R(v) for v in values])]

    cafe = "café".encode()
    assert hits("^caf.$", cafe, b"cafe") == [b"cafe"]  # "." is one byte; é is two
    assert hits("^caf..$", cafe) == [cafe]
    assert hits("café", cafe) == [cafe]  # typed text is matched as its UTF-8
    assert hits(r"^\w+$", cafe, b"cafe") == [b"cafe"]  # \w is ASCII
    assert hits(r"\xff", b"\xff\x00", b"ok") == [b"\xff\x00"]  # any byte can be named
    assert hits(r"(?i)ERROR \d+", b"error 17", b"error x") == [b"error 17"]
    with pytest.raises(FilterError, match="not valid"):
        compile_filters({"body": "(", "mode": "regex"})


def test_healthz_answers_within_100_ms_while_the_worst_pattern_runs(stack, unique_name):
    """The filtered browse runs over and over on a live server; /healthz is asked meanwhile."""
    from kafka.admin import KafkaAdminClient, NewTopic

    bootstrap = stack.brokers["kafka"]["bootstrap_servers"]
    topic = f"regex-live-{unique_name}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, 1, 1)])
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    for i in range(3000):
        producer.send(topic, POISON[i % 2])
    producer.flush()
    producer.close()
    session = stack.login()
    url = f"{stack.url}/brokers/kafka/topics/{topic}/messages"
    busy, stop = threading.Event(), threading.Event()
    answers: list[int] = []

    def browse() -> None:
        while not stop.is_set():
            busy.set()
            response = session.get(url, params={"body": WORST, "mode": "regex"}, timeout=300)
            busy.clear()
            answers.append(response.status_code)

    worker = threading.Thread(target=browse, daemon=True)
    worker.start()
    took: list[float] = []
    try:
        deadline = time.monotonic() + 30
        while len(took) < 20 and time.monotonic() < deadline:
            if not busy.wait(5):
                break
            started = time.monotonic()
            assert requests.get(f"{stack.url}/healthz", timeout=30).status_code == 200
            if busy.is_set():  # the filtered read was running all along
                took.append(time.monotonic() - started)
    finally:
        stop.set()
        worker.join(timeout=10)
        admin.delete_topics([topic])
        admin.close()
    assert len(took) >= 10, (took, answers)
    assert answers and set(answers) == {200}
    # The median: one probe may lose a scheduling slice on a busy machine; backtracking
    # holds every probe for seconds.
    assert statistics.median(took) < 0.1, took
