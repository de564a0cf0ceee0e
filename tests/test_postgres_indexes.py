"""On PostgreSQL at scale, the queries on the big tables read them through an index.

The project's migrations run on a fresh database of `$SLUICE_TEST_POSTGRES_URL`
(the "pg" alias, added by tests/conftest.py), filled with 5,000 destinations, a
day of collections and change-only samples and a week of rollups, then
ANALYZEd. Each test calls the real function with the "pg" connection standing
in for the default one, so that ORM and raw SQL alike go there, captures the
SQL it ran and EXPLAINs it: no Seq Scan on the history tables or the
destinations, and an index scan on the index that should serve it. What
PostgreSQL still reads whole fails the test.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import DEFAULT_DB_ALIAS, connections
from django.test.utils import CaptureQueriesContext

from dashboard.collection import history, queries
from dashboard.models import Broker, Collection, Destination, Gap, Rollup, Sample

URL = os.environ.get("SLUICE_TEST_POSTGRES_URL")
pytestmark = [
    pytest.mark.skipif(
        not URL, reason="SLUICE_TEST_POSTGRES_URL is not set (`make test` starts a PostgreSQL)"
    ),
    pytest.mark.django_db(databases=["default", "pg"] if URL else ["default"]),
]

BROKERS = 5
PER_BROKER = 1_000  # 5,000 destinations
NOW = 1_800_000_000
# A day and the half hour before, which the next prune drops.
START = NOW - 86_400 - 1_800
COLLECT_EVERY = 5  # the default interval: 17,640 collections per broker
COLLECTIONS_EACH = (NOW - START) // COLLECT_EVERY
CHANGE_EVERY = 1_800  # each destination changes every half hour: 245,000 samples
SAMPLES_EACH = (NOW - START) // CHANGE_EVERY
ROLLUP_EVERY = 14_400  # a week of rollups, 43 per destination: 215,000 rows
# As every 10 minutes in production, everything but the last minutes is rolled up already.
ROLLED_UNTIL = NOW - 1_200
TABLES = {m: m._meta.db_table for m in (Destination, Rollup, Sample, Collection, Gap)}
# Gaps are few (a destination that went away), so scanning them whole is the right plan.
HISTORY = {TABLES[m] for m in (Rollup, Sample, Collection)}
BIG_TABLES = HISTORY | {TABLES[Destination]}


@pytest.fixture(scope="module")
def filled(django_db_setup: None, django_db_blocker: Any) -> Iterator[dict[str, Any]]:
    """The pg database at scale; the ids of the first broker's first destinations."""
    # Only ever the database made for this run, never the one the URL names.
    assert connections["pg"].settings_dict["NAME"].startswith("test_sluice_")
    with django_db_blocker.unblock():
        brokers = [
            Broker.objects.using("pg").create(name=f"b{n}", kind="rabbitmq") for n in range(BROKERS)
        ]
        Destination.objects.using("pg").bulk_create(
            [
                Destination(
                    broker=b,
                    kind="queue",
                    key=f"q{n}",
                    name=f"orders.{n}",
                    backlog=(n * 7919) % 10_000,
                    consumers=n % 3,
                    # A few in trouble, as on a real overview.
                    trouble=2 if n % 97 == 0 else 1 if n % 41 == 0 else 0,
                )
                for b in brokers
                for n in range(PER_BROKER)
            ],
            batch_size=1_000,
        )
        dest, sample, rollup, coll, gap = (
            TABLES[m] for m in (Destination, Sample, Rollup, Collection, Gap)
        )
        figures = "destination_id, ts, backlog, in_flight, consumers, in_rate, out_rate, lag"
        values = "mod(d.id * t, 5000), 0, 1, 1.5, 1.5, NULL"
        with connections["pg"].cursor() as cursor:
            # The rows are consistent by construction: skip the foreign-key triggers,
            # which would otherwise take most of a minute (needs a superuser).
            cursor.execute("SET session_replication_role = replica")
            # Written in time order, as the collector does.
            cursor.execute(
                f"INSERT INTO {coll} (broker_id, ts) SELECT b.id, t FROM {Broker._meta.db_table} b,"
                " generate_series(%s, %s, %s) t ORDER BY t, b.id",
                [START, NOW - COLLECT_EVERY, COLLECT_EVERY],
            )
            # Each destination changes at its own collection within every CHANGE_EVERY.
            cursor.execute(
                f"INSERT INTO {sample} ({figures}) SELECT d.id, t + mod(d.id, %s) * %s, {values}"
                f" FROM {dest} d, generate_series(%s, %s, %s) t ORDER BY 2, 1",
                [CHANGE_EVERY // COLLECT_EVERY, COLLECT_EVERY]
                + [START, NOW - CHANGE_EVERY, CHANGE_EVERY],
            )
            cursor.execute(
                f"INSERT INTO {rollup} ({figures}) SELECT d.id, t, {values}"
                f" FROM {dest} d, generate_series(%s, %s, %s) t ORDER BY t, d.id",
                [ROLLED_UNTIL - 42 * ROLLUP_EVERY, ROLLED_UNTIL, ROLLUP_EVERY],
            )
            # One destination in a hundred stopped being listed for a while.
            cursor.execute(
                f"INSERT INTO {gap} (destination_id, ts) SELECT id, %s FROM {dest}"
                " WHERE mod(id, 100) = 0",
                [NOW - 3_600],
            )
            cursor.execute("SET session_replication_role = DEFAULT")
            cursor.execute("ANALYZE")
        first = list(
            Destination.objects.using("pg")
            .filter(broker=brokers[0])
            .order_by("id")
            .values_list("id", flat=True)[:100]
        )
        yield {"first": first[0], "page": first}
        with connections["pg"].cursor() as cursor:
            cursor.execute(f"TRUNCATE {', '.join(BIG_TABLES)}, {Broker._meta.db_table} CASCADE")


def captured(call: Callable[[], Any]) -> list[str]:
    """The SQL that call() ran on the big tables, with the pg connection as the default one."""
    pg = connections["pg"]
    # django.db.connection and the ORM both look the alias up here; raw SQL ignores routers.
    default = getattr(connections._connections, DEFAULT_DB_ALIAS)
    setattr(connections._connections, DEFAULT_DB_ALIAS, pg)
    try:
        with CaptureQueriesContext(pg) as ctx:
            call()
    finally:
        setattr(connections._connections, DEFAULT_DB_ALIAS, default)
    return [
        q["sql"]
        for q in ctx.captured_queries
        if q["sql"].lstrip().upper().startswith(("SELECT", "DELETE", "UPDATE", "WITH"))
        and any(table in q["sql"] for table in BIG_TABLES)
    ]


def scans(sql: str) -> list[tuple[str, str, str]]:
    """(node type, table, index) of every scan in sql's plan."""
    with connections["pg"].cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}")
        (plan,) = cursor.fetchone()
    if isinstance(plan, str):
        plan = json.loads(plan)
    found: list[tuple[str, str, str]] = []

    def walk(node: dict[str, Any], table: str = "") -> None:
        # A Bitmap Index Scan names its index; its table is its Bitmap Heap Scan parent's.
        table = node.get("Relation Name", table)
        if "Relation Name" in node or "Index Name" in node:
            found.append((node["Node Type"], table, node.get("Index Name", "")))
        for child in node.get("Plans", []):
            walk(child, table)

    walk(plan[0]["Plan"])
    return found


def seq_scans(sql: str, tables: set[str]) -> list[tuple[str, str, str]]:
    return [scan for scan in scans(sql) if scan[0] == "Seq Scan" and scan[1] in tables]


def assert_indexed(sql: str, table: str, index: str, tables: set[str] = BIG_TABLES) -> None:
    plan = scans(sql)
    assert not seq_scans(sql, tables), f"a sequential scan in:\n{sql}\nplan: {plan}"
    used = [s for s in plan if s[1] == table and s[2] == index and "Index" in s[0]]
    assert used, f"{table} is not read through {index} in:\n{sql}\nplan: {plan}"


SAMPLE_INDEX = Sample._meta.indexes[0].name  # (destination, ts)
ROLLUP_INDEX = "rollup_bucket"  # unique (destination, ts)
RANK_INDEX = Destination._meta.indexes[0].name  # (trouble, backlog)
# The tables that grow with the destinations; collections grow only with the brokers.
PER_DESTINATION = {TABLES[m] for m in (Destination, Sample, Rollup)}


@pytest.mark.parametrize("window", ["1h", "24h"])
def test_a_destination_chart_reads_its_samples_through_the_index(filled, window):
    (sql,) = captured(lambda: queries.history(filled["first"], window, now=NOW))
    assert_indexed(sql, TABLES[Sample], SAMPLE_INDEX, PER_DESTINATION)


def test_a_week_long_chart_reads_its_rollups_through_the_index(filled):
    (sql,) = captured(lambda: queries.history(filled["first"], "7d", now=NOW))
    assert_indexed(sql, TABLES[Rollup], ROLLUP_INDEX)


def scanned_whole(sql: list[str], tables: set[str]) -> list[str]:
    """Each statement of sql that reads one of tables sequentially, shortened, with those tables."""
    return [
        f"{' '.join(q.split())[:160]} -> {[scan[1] for scan in seq]}"
        for q in sql
        if (seq := seq_scans(q, tables))
    ]


def test_a_page_of_sparklines_reads_only_its_rows_through_the_indexes(filled):
    sql = captured(lambda: queries.sparklines(filled["page"], now=NOW))
    bad = scanned_whole(sql, BIG_TABLES)
    assert not bad, "\n".join(bad)
    # An hour is a small part of each table: the planner may take it by time, or by
    # destination and broker; through an index either way.
    (samples,) = [q for q in sql if "ORDER BY destination_id, ts" in q]
    (times,) = [q for q in sql if TABLES[Collection] in q]
    for q, table in ((samples, TABLES[Sample]), (times, TABLES[Collection])):
        assert any(s[1] == table and "Index" in s[0] for s in scans(q)), (q, scans(q))


def test_the_overview_ranking_reads_the_first_page_through_the_index(filled):
    sql = captured(lambda: list(queries.page_of(queries.Listing()).object_list))
    # The paginator's COUNT(*) reads every row by nature; the page itself must not.
    (ranked,) = [s for s in sql if "ORDER BY" in s]
    assert_indexed(ranked, TABLES[Destination], RANK_INDEX)


def test_rolling_up_reads_only_the_history_not_rolled_up_yet(filled):
    sql = captured(lambda: history.roll_up(NOW - 600))
    assert sql
    # Every destination is rolled up, so reading all of them is right.
    bad = scanned_whole(sql, HISTORY)
    assert not bad, "\n".join(bad)


def test_pruning_reads_only_the_history_past_retention(filled):
    sql = captured(lambda: history.prune(now=NOW - 600))
    assert sql
    bad = scanned_whole(sql, HISTORY)
    assert not bad, "\n".join(bad)


def test_the_plans_are_judged_at_scale(filled):
    assert Destination.objects.using("pg").count() == BROKERS * PER_BROKER
    assert Sample.objects.using("pg").count() == BROKERS * PER_BROKER * SAMPLES_EACH
    assert Collection.objects.using("pg").count() == BROKERS * COLLECTIONS_EACH
    assert Rollup.objects.using("pg").count() == BROKERS * PER_BROKER * 43
