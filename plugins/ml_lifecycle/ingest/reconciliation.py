"""Reconcile Kafka offsets with the rows the sink landed in the warehouse.

Plain functions over plain data: the operator gathers the numbers from Kafka
and Snowflake, this module decides what they mean.

Every offset of a partition, from 0 to the log end, must be *accounted*: landed
in ``POS_TRANSACTIONS`` or quarantined in ``POS_QUARANTINE``, exactly once.
The sink group's committed offset says how far the sink has acknowledged.
Offsets at or after it that are already accounted are "landed, commit
pending" (the sink wrote them and has not committed yet, or crashed between
the two steps); offsets after it that are not accounted are consumer lag.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class ProblemKind(StrEnum):
    GAP = "gap"
    DUPLICATE = "duplicate"
    LAG = "lag"
    BEYOND_LOG_END = "beyond_log_end"
    LOAD_ERROR = "load_error"
    STALE = "stale"
    EMPTY_WINDOW = "empty_window"


# Problems that time can fix: the sink catches up. The others mean data was
# lost, doubled or corrupted and need a person.
RETRYABLE_KINDS = frozenset({ProblemKind.LAG, ProblemKind.STALE})


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    message: str
    partition: int | None = None


@dataclass(frozen=True)
class KafkaPartitionOffsets:
    """What the broker reports for one partition."""

    partition: int
    log_start: int
    log_end: int
    committed: int | None
    """Offset the sink group will read next; ``None`` if the group never committed."""


@dataclass(frozen=True)
class AccountedOffsets:
    """What the warehouse holds for one partition, landed and quarantined together."""

    partition: int
    landed_rows: int = 0
    quarantined_rows: int = 0
    distinct_offsets: int = 0
    min_offset: int | None = None
    max_offset: int | None = None
    inner_gaps: Sequence[tuple[int, int]] = ()
    """Inclusive ranges of offsets missing between ``min_offset`` and ``max_offset``."""
    duplicate_examples: Sequence[int] = ()

    @property
    def rows(self) -> int:
        return self.landed_rows + self.quarantined_rows

    @property
    def duplicate_rows(self) -> int:
        return self.rows - self.distinct_offsets


@dataclass(frozen=True)
class PartitionReport:
    partition: int
    kafka: KafkaPartitionOffsets
    accounted: AccountedOffsets
    missing_ranges: tuple[tuple[int, int], ...]
    consumer_lag: int
    commit_pending: int
    problems: tuple[Problem, ...] = field(default=())

    @property
    def missing_offsets(self) -> int:
        return sum(end - start + 1 for start, end in self.missing_ranges)

    @property
    def passed(self) -> bool:
        return not self.problems


def _count(value: int) -> str:
    return f"{value:,}"


def _describe_range(start: int, end: int) -> str:
    return f"[{start}, {end}]" if start != end else f"[{start}]"


def _subtract_accounted(start: int, end: int, accounted: AccountedOffsets) -> list[tuple[int, int]]:
    """Return the inclusive ranges within ``[start, end]`` that the warehouse does not hold."""
    if end < start:
        return []
    if accounted.min_offset is None or accounted.max_offset is None:
        return [(start, end)]

    holes: list[tuple[int, int]] = []
    if start < accounted.min_offset:
        holes.append((start, min(end, accounted.min_offset - 1)))
    for gap_start, gap_end in accounted.inner_gaps:
        low, high = max(gap_start, start), min(gap_end, end)
        if low <= high:
            holes.append((low, high))
    if end > accounted.max_offset:
        holes.append((max(start, accounted.max_offset + 1), end))
    return holes


def reconcile_partition(kafka: KafkaPartitionOffsets, accounted: AccountedOffsets) -> PartitionReport:
    """Compare one partition's offsets in Kafka with what the warehouse accounts for."""
    problems: list[Problem] = []
    partition = kafka.partition
    committed = kafka.committed if kafka.committed is not None else 0

    # Offsets the group committed must all be in the warehouse. Offsets the
    # broker already deleted by retention are included: the sink must have read
    # them before they went, so a hole there is lost data too.
    missing = _subtract_accounted(0, min(committed, kafka.log_end) - 1, accounted)
    for start, end in missing:
        problems.append(
            Problem(
                ProblemKind.GAP,
                f"partition {partition}: {_count(end - start + 1)} offsets missing in {_describe_range(start, end)}",
                partition,
            )
        )

    if accounted.duplicate_rows > 0:
        examples = ", ".join(str(offset) for offset in accounted.duplicate_examples[:5])
        problems.append(
            Problem(
                ProblemKind.DUPLICATE,
                f"partition {partition}: {_count(accounted.duplicate_rows)} duplicate rows "
                f"(offsets landed more than once, for example {examples or 'unknown'})",
                partition,
            )
        )

    if accounted.max_offset is not None and accounted.max_offset >= kafka.log_end:
        problems.append(
            Problem(
                ProblemKind.BEYOND_LOG_END,
                f"partition {partition}: the warehouse holds offset {accounted.max_offset} but the log ends "
                f"at {kafka.log_end}; the topic may have been recreated",
                partition,
            )
        )

    # After the committed offset: what is already accounted is waiting for the
    # sink's commit; what is not accounted is lag.
    uncommitted_holes = _subtract_accounted(committed, kafka.log_end - 1, accounted)
    consumer_lag = sum(end - start + 1 for start, end in uncommitted_holes)
    commit_pending = max(kafka.log_end - committed, 0) - consumer_lag
    if consumer_lag > 0:
        first, last = uncommitted_holes[0][0], uncommitted_holes[-1][1]
        problems.append(
            Problem(
                ProblemKind.LAG,
                f"partition {partition}: consumer lag of {_count(consumer_lag)} offsets not yet landed in "
                f"{_describe_range(first, last)} (committed {kafka.committed}, log end {kafka.log_end})",
                partition,
            )
        )

    return PartitionReport(
        partition=partition,
        kafka=kafka,
        accounted=accounted,
        missing_ranges=tuple(missing),
        consumer_lag=consumer_lag,
        commit_pending=commit_pending,
        problems=tuple(problems),
    )


def reconcile_topic(
    kafka_offsets: Iterable[KafkaPartitionOffsets], accounted: Iterable[AccountedOffsets]
) -> list[PartitionReport]:
    """Reconcile every partition the broker reports; warehouse rows of unknown partitions are ignored."""
    by_partition = {item.partition: item for item in accounted}
    return [
        reconcile_partition(offsets, by_partition.get(offsets.partition, AccountedOffsets(offsets.partition)))
        for offsets in sorted(kafka_offsets, key=lambda item: item.partition)
    ]


def format_problems(problems: Sequence[Problem]) -> str:
    """Join problems into one message, one per line, in partition order."""
    ordered = sorted(problems, key=lambda problem: (problem.partition is None, problem.partition or 0))
    return "\n".join(f"- {problem.message}" for problem in ordered)


def check_freshness(
    newest_event: dt.datetime | None, window_end: dt.datetime, max_staleness: dt.timedelta
) -> list[Problem]:
    """Flag a window whose newest landed event is older than ``max_staleness`` before its end.

    Both datetimes are naive UK wall-clock times, the form the sales data uses.
    """
    if newest_event is None:
        return [
            Problem(
                ProblemKind.STALE, f"no event landed with an event time before {window_end:%Y-%m-%d %H:%M}"
            )
        ]
    age = window_end - newest_event
    if age > max_staleness:
        hours = age.total_seconds() / 3600
        limit = max_staleness.total_seconds() / 3600
        return [
            Problem(
                ProblemKind.STALE,
                f"newest landed event is from {newest_event:%Y-%m-%d %H:%M}, {hours:.1f} h before the window end "
                f"{window_end:%Y-%m-%d %H:%M}; expected at most {limit:.0f} h",
            )
        ]
    return []


@dataclass(frozen=True)
class LoadHistoryEntry:
    """One row of the warehouse's load history for a file the sink staged."""

    file_name: str
    status: str
    rows_parsed: int | None
    rows_loaded: int | None
    first_error: str | None = None


LOADED_STATUSES = frozenset({"LOADED", "LOAD_SKIPPED"})


def check_load_history(entries: Iterable[LoadHistoryEntry]) -> list[Problem]:
    """Flag files that did not load completely: partially loaded, failed, or rows parsed but not loaded."""
    problems = []
    for entry in entries:
        parsed, loaded = entry.rows_parsed or 0, entry.rows_loaded or 0
        if entry.status.upper() not in LOADED_STATUSES or parsed > loaded:
            error = f": {entry.first_error}" if entry.first_error else ""
            problems.append(
                Problem(
                    ProblemKind.LOAD_ERROR,
                    f"file {entry.file_name} has status {entry.status} with {_count(loaded)} of "
                    f"{_count(parsed)} parsed rows loaded{error}",
                )
            )
    return problems
