"""Planning and applying changes of a Kafka consumer group's committed offsets.

Talks to: the cluster through a `brokers.kafka.adapter.Kafka` adapter, using its shared
admin client (OffsetFetch, ListGroups, Metadata, ListOffsets, DescribeGroups v2,
OffsetCommit) and, per plan, one short-lived consumer without a group (Fetch,
for each partition's high watermark: Tansu's ListOffsets(latest) can be too
low, see brokers/kafka/adapter.py).

A reset is always planned first (`plan_reset`, `plan_restore`; nothing
changes), then applied (`apply`), which asks the group's coordinator again
whether the group has members. Kafka takes offset commits from outside a group
only while it is Empty, and a consumer still running would overwrite the new
offsets with its next commit anyway.

Cannot:
    - reset a partition the group has never committed: undoing that would need
      OffsetDelete, which Tansu lacks. Such partitions are left to the
      consumers' `auto.offset.reset` and listed in `Plan.skipped`;
    - tell whether a KIP-848 group (Kafka 4 `group.protocol=consumer`) is
      empty: DescribeGroups does not describe it, so applying is refused;
    - keep commit metadata on brokers that drop it (Tansu does).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import kafka.errors as errors
from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.admin import OffsetSpec

from brokers.base import BrokerError
from brokers.kafka.adapter import Kafka
from brokers.kafka.reset_spec import (  # noqa: F401 - the spec's API, re-exported for callers
    KINDS,
    InvalidReset,
    ResetSpec,
    describe_spec,
    iso,
    parse_spec,
    parse_timestamp,
)

# States in which a group has no members, so that its offsets may be changed.
IDLE_STATES = ("Empty", "Dead")


class UnknownGroup(InvalidReset):
    """The broker knows no group of that name."""


class GroupActive(BrokerError):
    """The group has members, so its offsets must not be changed; nothing changed."""

    def __init__(self, group: str, state: GroupState, joined: bool = False) -> None:
        self.group = group
        self.state = state
        members = list(state.members)
        shown = ", ".join(m.label for m in members[:5])
        if len(members) > 5:
            shown += f" and {len(members) - 5} more"
        if joined:
            lead = f"A consumer joined group {group!r} while the offsets were being written"
        elif members:
            lead = (
                f"Group {group!r} is {state.state or 'active'} with {len(members)} active "
                f"member{'s' if len(members) != 1 else ''}: {shown}"
            )
        elif state.error:
            lead = f"Cannot tell whether group {group!r} has members ({state.error})"
        else:
            lead = f"Group {group!r} is {state.state}, not Empty"
        super().__init__(
            f"{lead}. Nothing was changed. Stop the group's consumers first (Kafka accepts "
            "offset changes only while a group has no members), then apply again.",
            retryable=True,
        )


@dataclass(frozen=True)
class Member:
    member_id: str
    client_id: str = ""
    host: str = ""  # as the coordinator saw it, e.g. "/10.0.0.7"; "" on Tansu

    @property
    def label(self) -> str:
        who = self.client_id or self.member_id
        return f"{who} on {self.host.lstrip('/')}" if self.host else who


@dataclass(frozen=True)
class GroupState:
    state: str  # Empty, Stable, PreparingRebalance, CompletingRebalance, Dead; "" if unknown
    members: tuple[Member, ...] = ()
    error: str = ""  # why the coordinator could not describe the group

    @property
    def active(self) -> bool:
        """True unless the coordinator says the group is idle: unknown counts as active."""
        return bool(self.members) or self.state not in IDLE_STATES or bool(self.error)


@dataclass(frozen=True)
class Change:
    """One partition's committed offset, now and as planned."""

    topic: str
    partition: int
    before: int | None  # the committed offset; None: no commit (only when restoring)
    after: int
    start: int  # the earliest offset still in the log
    end: int  # the offset the next message will get
    metadata: str | None = None  # the commit's metadata, kept as it was
    note: str = ""  # why `after` is not what was asked, or what to know about it

    @property
    def lag_before(self) -> int | None:
        return None if self.before is None else max(0, self.end - self.before)

    @property
    def lag_after(self) -> int:
        return max(0, self.end - self.after)

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "lag_before": self.lag_before, "lag_after": self.lag_after}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Change:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class Plan:
    group: str
    changes: tuple[Change, ...]
    state: GroupState
    # Partitions left alone, and why ("orders/2 has no committed offset...").
    skipped: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class GroupInfo:
    """What the reset form needs: the group's state and what it has committed."""

    group: str
    state: GroupState
    committed: dict[str, dict[int, int]]  # topic -> partition -> committed offset


# -- reading --------------------------------------------------------------------


def describe_group(adapter: Kafka, group: str) -> GroupInfo:
    """The group's state, members and committed offsets; UnknownGroup if there is no such group."""
    try:
        committed = _committed(adapter, group)
        state = _group_state(adapter, group)
        if not committed and not _listed(adapter, group):
            raise UnknownGroup(f"the broker knows no consumer group named {group!r}")
    except errors.KafkaError as exc:
        raise adapter._error(exc) from None
    by_topic: dict[str, dict[int, int]] = {}
    for tp, oam in sorted(committed.items()):
        by_topic.setdefault(tp.topic, {})[tp.partition] = oam.offset
    return GroupInfo(group=group, state=state, committed=by_topic)


def group_state(adapter: Kafka, group: str) -> GroupState:
    """The group's state and members, from its coordinator (DescribeGroups v2)."""
    try:
        return _group_state(adapter, group)
    except errors.KafkaError as exc:
        raise adapter._error(exc) from None


def _group_state(adapter: Kafka, group: str) -> GroupState:
    adapter.admin()  # _describe_groups uses the shared admin client
    described = adapter._describe_groups(adapter._coordinators([group])).get(group)
    if described is None:
        return GroupState(state="", error="the coordinator did not describe it")
    if described.error_code != 0:
        return GroupState(state="", error=errors.for_code(described.error_code).__name__)
    members = tuple(
        Member(member_id=m.member_id, client_id=m.client_id, host=m.client_host)
        for m in described.members
    )
    return GroupState(state=described.group_state, members=members)


def _committed(adapter: Kafka, group: str) -> dict[Any, Any]:
    """TopicPartition -> OffsetAndMetadata for every partition the group has committed."""
    got = adapter.admin().list_group_offsets({group: None}).get(group) or {}
    return {tp: oam for tp, oam in got.items() if oam.offset >= 0}


def _listed(adapter: Kafka, group: str) -> bool:
    """Whether some broker lists the group (ListGroups asks every broker)."""
    return any(g["group_id"] == group for g in adapter.admin().list_groups())


def _require_commits(adapter: Kafka, group: str, committed: dict[Any, Any]) -> None:
    if committed:
        return
    if not _listed(adapter, group):
        raise UnknownGroup(f"the broker knows no consumer group named {group!r}")
    raise InvalidReset(f"group {group!r} has no committed offsets: there is nothing to reset")


def _partition_counts(adapter: Kafka, topics: list[str]) -> dict[str, int]:
    """Partitions per topic; topics the cluster does not know are left out."""
    if not topics:
        return {}
    described = adapter.admin().describe_topics(topics)
    return {t["name"]: len(t["partitions"]) for t in described if t["error_code"] == 0}


def _bounds(adapter: Kafka, tps: list[Any]) -> tuple[dict[Any, int], dict[Any, int]]:
    """Earliest offset and end of each partition.

    The end is the larger of ListOffsets(latest) and the high watermark a Fetch
    reports: Tansu answers ListOffsets with the last batch's base offset + 1.
    """
    if not tps:
        return {}, {}
    admin = adapter.admin()
    earliest = admin.list_partition_offsets({tp: OffsetSpec.EARLIEST for tp in tps})
    latest = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in tps})
    start = {tp: earliest[tp].offset for tp in tps}
    end = {tp: latest[tp].offset for tp in tps}
    consumer = adapter.client(
        KafkaConsumer,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
        max_partition_fetch_bytes=64 * 1024,
    )
    try:
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, end[tp])
        deadline = time.monotonic() + adapter.timeout
        while True:
            missing = [tp for tp in tps if consumer.highwater(tp) is None]
            if not missing:
                break
            if time.monotonic() > deadline:
                names = ", ".join(f"{tp.topic}/{tp.partition}" for tp in missing[:5])
                raise BrokerError(f"no fetch answer within {adapter.timeout:g} s for {names}")
            consumer.poll(timeout_ms=100, max_records=1)
        for tp in tps:
            end[tp] = max(end[tp], consumer.highwater(tp))
    finally:
        consumer.close()
    return start, end


# -- planning ---------------------------------------------------------------------


def plan_reset(adapter: Kafka, group: str, spec: ResetSpec) -> Plan:
    """The changes `spec` makes to `group`; changes nothing. InvalidReset on bad input."""
    try:
        return _plan_reset(adapter, group, spec)
    except errors.KafkaError as exc:
        raise adapter._error(exc) from None


def _plan_reset(adapter: Kafka, group: str, spec: ResetSpec) -> Plan:
    committed = _committed(adapter, group)
    _require_commits(adapter, group, committed)
    state = _group_state(adapter, group)
    committed_topics = sorted({tp.topic for tp in committed})
    skipped: list[str] = []
    if spec.topic is not None:
        counts = _partition_counts(adapter, [spec.topic])
        if spec.topic not in counts:
            raise InvalidReset(f"the broker knows no topic named {spec.topic!r}")
        if spec.topic not in committed_topics:
            raise InvalidReset(
                f"group {group!r} has no committed offsets on topic {spec.topic!r}; "
                f"it has committed on: {', '.join(committed_topics)}"
            )
        count = counts[spec.topic]
        wanted = spec.partitions if spec.partitions is not None else tuple(range(count))
        beyond = [p for p in wanted if p >= count]
        if beyond:
            raise InvalidReset(
                f"partition {beyond[0]} does not exist: topic {spec.topic!r} has "
                f"partition{'s 0 to ' + str(count - 1) if count > 1 else ' 0 only'}"
            )
        tps = []
        for p in wanted:
            tp = TopicPartition(spec.topic, p)
            if tp in committed:
                tps.append(tp)
            elif spec.partitions is not None:
                raise InvalidReset(
                    f"group {group!r} has no committed offset on {spec.topic}/{p}; only "
                    "committed partitions can be reset (and so undone)"
                )
            else:
                skipped.append(_uncommitted_note(spec.topic, p))
    else:
        counts = _partition_counts(adapter, committed_topics)
        tps = []
        for tp in sorted(committed):
            if tp.topic in counts and tp.partition < counts[tp.topic]:
                tps.append(tp)
            else:
                skipped.append(f"{tp.topic}/{tp.partition} no longer exists; its commit is kept")
    if not tps:
        raise InvalidReset("nothing to reset: " + "; ".join(skipped))
    start, end = _bounds(adapter, tps)
    targets = _targets(adapter, spec, tps, committed, start, end)
    changes = tuple(
        Change(
            topic=tp.topic,
            partition=tp.partition,
            before=committed[tp].offset,
            after=after,
            start=start[tp],
            end=end[tp],
            metadata=committed[tp].metadata,
            note=_join(_position_note(committed[tp].offset, start[tp], end[tp]), note),
        )
        for tp, (after, note) in targets.items()
    )
    return Plan(group=group, changes=changes, state=state, skipped=tuple(skipped))


def _targets(
    adapter: Kafka,
    spec: ResetSpec,
    tps: list[Any],
    committed: dict[Any, Any],
    start: dict[Any, int],
    end: dict[Any, int],
) -> dict[Any, tuple[int, str]]:
    """The new offset of each partition, with a note when it differs from what was asked."""
    out: dict[Any, tuple[int, str]] = {}
    if spec.to == "earliest":
        return {tp: (start[tp], "") for tp in tps}
    if spec.to == "latest":
        return {tp: (end[tp], "") for tp in tps}
    if spec.to == "timestamp":
        ms = spec.value or 0
        found = adapter.admin().list_partition_offsets({tp: ms for tp in tps})
        for tp in tps:
            hit = found[tp]
            # Apache Kafka says "none" with offset -1; Tansu with timestamp -1 (offset 0).
            if hit.offset < 0 or hit.timestamp < 0:
                out[tp] = (end[tp], f"no message at or after {iso(ms)}: set to the end")
            else:
                out[tp] = (min(max(hit.offset, start[tp]), end[tp]), "")
        return out
    if spec.to == "offset":
        offset = spec.value or 0
        problems = []
        for tp in tps:
            if offset < start[tp]:
                problems.append(
                    f"{tp.topic}/{tp.partition} starts at {start[tp]} (older messages are deleted)"
                )
            elif offset > end[tp]:
                problems.append(f"{tp.topic}/{tp.partition} ends at {end[tp]}")
            out[tp] = (offset, "")
        if problems:
            more = f" and {len(problems) - 5} more" if len(problems) > 5 else ""
            raise InvalidReset(
                f"offset {offset} is out of range: {'; '.join(problems[:5])}{more}. "
                "Nothing was changed; choose an offset within each partition's range, "
                "or reset to earliest or latest."
            )
        return out
    shift = spec.value or 0
    for tp in tps:
        wanted = committed[tp].offset + shift
        if wanted < start[tp]:
            out[tp] = (
                start[tp],
                f"{committed[tp].offset} {shift:+d} = {wanted} is before the earliest offset "
                f"({start[tp]}); clamped to {start[tp]}",
            )
        elif wanted > end[tp]:
            out[tp] = (
                end[tp],
                f"{committed[tp].offset} {shift:+d} = {wanted} is beyond the end ({end[tp]}); "
                f"clamped to {end[tp]}",
            )
        else:
            out[tp] = (wanted, "")
    return out


def plan_restore(adapter: Kafka, group: str, previous: list[Change]) -> Plan:
    """Changes that put back each partition's offset from before `previous` was applied."""
    try:
        return _plan_restore(adapter, group, previous)
    except errors.KafkaError as exc:
        raise adapter._error(exc) from None


def _plan_restore(adapter: Kafka, group: str, previous: list[Change]) -> Plan:
    committed = _committed(adapter, group)
    state = _group_state(adapter, group)
    counts = _partition_counts(adapter, sorted({c.topic for c in previous}))
    skipped: list[str] = []
    wanted: dict[Any, Change] = {}
    for c in previous:
        tp = TopicPartition(c.topic, c.partition)
        if c.before is None:
            skipped.append(f"{c.topic}/{c.partition} had no commit before; left as it is")
        elif c.topic not in counts or c.partition >= counts[c.topic]:
            skipped.append(f"{c.topic}/{c.partition} no longer exists")
        else:
            wanted[tp] = c
    if not wanted:
        raise InvalidReset("nothing to restore: " + "; ".join(skipped))
    tps = list(wanted)
    start, end = _bounds(adapter, tps)
    changes = []
    for tp, c in wanted.items():
        now = committed.get(tp)
        after = c.before if c.before is not None else 0
        if after < start[tp]:
            note = (
                f"{after} is before the earliest offset now ({start[tp]}): restored as it was; "
                "the consumers' auto.offset.reset will apply"
            )
        elif after > end[tp]:
            note = f"{after} is beyond the end now ({end[tp]}): restored as it was"
        else:
            note = ""
        changes.append(
            Change(
                topic=tp.topic,
                partition=tp.partition,
                before=now.offset if now is not None else None,
                after=after,
                start=start[tp],
                end=end[tp],
                metadata=c.metadata,
                note=note,
            )
        )
    return Plan(group=group, changes=tuple(changes), state=state, skipped=tuple(skipped))


def _uncommitted_note(topic: str, partition: int) -> str:
    return (
        f"{topic}/{partition} has no committed offset: left to the consumers' "
        "auto.offset.reset (a reset could not be undone there)"
    )


def _position_note(before: int, start: int, end: int) -> str:
    if before < start:
        return f"the committed offset {before} is before the earliest offset ({start})"
    if before > end:
        return f"the committed offset {before} is beyond the end ({end})"
    return ""


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


# -- applying ---------------------------------------------------------------------


def apply(adapter: Kafka, group: str, changes: list[Change]) -> list[Change]:
    """Commit `changes` for `group` if it has no members; returns them as read back.

    GroupActive if the group has members (now, or joined while writing);
    BrokerError if the broker refused or the offsets read back differ.
    """
    try:
        return _apply(adapter, group, changes)
    except errors.KafkaError as exc:
        raise adapter._error(exc) from None


def _apply(adapter: Kafka, group: str, changes: list[Change]) -> list[Change]:
    if not changes:
        raise InvalidReset("there are no offsets to change")
    state = _group_state(adapter, group)
    if state.active:
        raise GroupActive(group, state)
    admin = adapter.admin()
    offsets = {
        TopicPartition(c.topic, c.partition): OffsetAndMetadata(c.after, c.metadata, None)
        for c in changes
    }
    # One OffsetCommit to the coordinator, outside any generation: a group that
    # gained a member since the check above refuses it (UnknownMemberId).
    result = admin.alter_group_offsets(group, offsets)
    failed = {tp: err for tp, err in result.items() if err is not errors.NoError}
    if failed:
        member_errors = (
            errors.UnknownMemberIdError,
            errors.IllegalGenerationError,
            errors.RebalanceInProgressError,
        )
        if any(issubclass(err, member_errors) for err in failed.values()):
            raise GroupActive(group, _group_state(adapter, group), joined=True)
        shown = "; ".join(
            f"{tp.topic}/{tp.partition}: {err.__name__}" for tp, err in failed.items()
        )
        raise BrokerError(f"the broker refused the new offsets of group {group!r}: {shown}")
    now = _committed(adapter, group)
    wrong = [
        f"{tp.topic}/{tp.partition} is {now[tp].offset if tp in now else 'not committed'}, "
        f"not {oam.offset}"
        for tp, oam in offsets.items()
        if tp not in now or now[tp].offset != oam.offset
    ]
    if wrong:
        raise BrokerError(
            f"the broker accepted the new offsets, but reading them back: {'; '.join(wrong[:5])}"
        )
    return changes
