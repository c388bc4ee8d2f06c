"""Reconciliation of Kafka offsets with landed rows, on plain data."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from ml_lifecycle.ingest.reconciliation import (
    AccountedOffsets,
    KafkaPartitionOffsets,
    LoadHistoryEntry,
    ProblemKind,
    check_freshness,
    check_load_history,
    format_problems,
    reconcile_partition,
    reconcile_topic,
)


def accounted(partition: int, offsets: list[int], quarantined: int = 0) -> AccountedOffsets:
    """Describe what the warehouse holds when ``offsets`` (with repeats) are landed or quarantined."""
    distinct = sorted(set(offsets))
    gaps = [(a + 1, b - 1) for a, b in itertools.pairwise(distinct) if b - a > 1]
    repeated = sorted({offset for offset in offsets if offsets.count(offset) > 1})
    return AccountedOffsets(
        partition=partition,
        landed_rows=len(offsets) - quarantined,
        quarantined_rows=quarantined,
        distinct_offsets=len(distinct),
        min_offset=distinct[0] if distinct else None,
        max_offset=distinct[-1] if distinct else None,
        inner_gaps=tuple(gaps),
        duplicate_examples=tuple(repeated),
    )


class TestReconcilePartition:
    def test_complete_partition_passes(self) -> None:
        report = reconcile_partition(KafkaPartitionOffsets(0, 0, 100, 100), accounted(0, list(range(100))))

        assert report.passed
        assert report.consumer_lag == 0
        assert report.commit_pending == 0
        assert report.missing_ranges == ()

    def test_gap_named_with_range_and_count(self) -> None:
        offsets = [offset for offset in range(7000) if not 5000 <= offset <= 6203]

        report = reconcile_partition(KafkaPartitionOffsets(2, 0, 7000, 7000), accounted(2, offsets))

        assert report.missing_ranges == ((5000, 6203),)
        assert report.missing_offsets == 1204
        assert [problem.message for problem in report.problems] == [
            "partition 2: 1,204 offsets missing in [5000, 6203]"
        ]

    def test_missing_head_of_partition_is_a_gap(self) -> None:
        report = reconcile_partition(KafkaPartitionOffsets(1, 30, 50, 50), accounted(1, list(range(10, 50))))

        assert report.missing_ranges == ((0, 9),)
        assert report.problems[0].kind is ProblemKind.GAP

    def test_duplicate_rows_reported(self) -> None:
        report = reconcile_partition(KafkaPartitionOffsets(0, 0, 10, 10), accounted(0, [*range(10), 3, 7]))

        assert report.accounted.duplicate_rows == 2
        (problem,) = report.problems
        assert problem.kind is ProblemKind.DUPLICATE
        assert problem.message == (
            "partition 0: 2 duplicate rows (offsets landed more than once, for example 3, 7)"
        )

    def test_lag_when_offsets_not_landed(self) -> None:
        report = reconcile_partition(KafkaPartitionOffsets(3, 0, 1500, 1000), accounted(3, list(range(1000))))

        assert report.consumer_lag == 500
        assert report.commit_pending == 0
        (problem,) = report.problems
        assert problem.kind is ProblemKind.LAG
        assert problem.message == (
            "partition 3: consumer lag of 500 offsets not yet landed in [1000, 1499] (committed 1000, log end 1500)"
        )

    def test_landed_but_not_committed_is_commit_pending(self) -> None:
        report = reconcile_partition(KafkaPartitionOffsets(0, 0, 1500, 1000), accounted(0, list(range(1500))))

        assert report.passed
        assert report.consumer_lag == 0
        assert report.commit_pending == 500

    def test_partly_landed_after_commit(self) -> None:
        report = reconcile_partition(KafkaPartitionOffsets(0, 0, 1500, 1000), accounted(0, list(range(1200))))

        assert report.commit_pending == 200
        assert report.consumer_lag == 300

    def test_never_committed_group_lags_everything(self) -> None:
        report = reconcile_partition(KafkaPartitionOffsets(0, 0, 40, None), AccountedOffsets(0))

        assert report.consumer_lag == 40
        assert report.missing_ranges == ()

    def test_quarantined_offsets_count_as_accounted(self) -> None:
        report = reconcile_partition(
            KafkaPartitionOffsets(0, 0, 10, 10), accounted(0, list(range(10)), quarantined=3)
        )

        assert report.passed
        assert report.accounted.quarantined_rows == 3

    def test_offsets_beyond_log_end_flagged(self) -> None:
        report = reconcile_partition(KafkaPartitionOffsets(0, 0, 5, 5), accounted(0, list(range(8))))

        assert ProblemKind.BEYOND_LOG_END in {problem.kind for problem in report.problems}


def test_topic_reports_every_broker_partition() -> None:
    reports = reconcile_topic(
        [KafkaPartitionOffsets(1, 0, 5, 5), KafkaPartitionOffsets(0, 0, 0, None)],
        [accounted(1, list(range(5))), accounted(9, [0])],
    )

    assert [report.partition for report in reports] == [0, 1]
    assert all(report.passed for report in reports)


def test_problems_listed_in_partition_order() -> None:
    reports = reconcile_topic(
        [KafkaPartitionOffsets(2, 0, 10, 10), KafkaPartitionOffsets(0, 0, 10, 5)],
        [accounted(2, [0, 1, 2, 9]), accounted(0, list(range(5)))],
    )

    message = format_problems([problem for report in reports for problem in report.problems])

    assert message.splitlines() == [
        "- partition 0: consumer lag of 5 offsets not yet landed in [5, 9] (committed 5, log end 10)",
        "- partition 2: 6 offsets missing in [3, 8]",
    ]


class TestFreshness:
    END = dt.datetime(2011, 12, 5)

    def test_recent_event_passes(self) -> None:
        assert check_freshness(dt.datetime(2011, 12, 4, 16), self.END, dt.timedelta(hours=72)) == []

    def test_old_event_is_stale(self) -> None:
        (problem,) = check_freshness(dt.datetime(2011, 11, 30, 12), self.END, dt.timedelta(hours=72))

        assert problem.kind is ProblemKind.STALE
        assert problem.message == (
            "newest landed event is from 2011-11-30 12:00, 108.0 h before the window end 2011-12-05 00:00; "
            "expected at most 72 h"
        )

    def test_no_event_is_stale(self) -> None:
        (problem,) = check_freshness(None, self.END, dt.timedelta(hours=72))

        assert "no event landed" in problem.message


class TestLoadHistory:
    def test_loaded_and_skipped_files_pass(self) -> None:
        entries = [
            LoadHistoryEntry("a.csv.gz", "LOADED", 100, 100),
            LoadHistoryEntry("b.csv.gz", "LOAD_SKIPPED", 0, 0),
        ]

        assert check_load_history(entries) == []

    @pytest.mark.parametrize(
        ("entry", "expected"),
        [
            (
                LoadHistoryEntry(
                    "p.csv.gz", "PARTIALLY_LOADED", 10000, 5, "Numeric value 'x' is not recognized"
                ),
                "file p.csv.gz has status PARTIALLY_LOADED with 5 of 10,000 parsed rows loaded: "
                "Numeric value 'x' is not recognized",
            ),
            (LoadHistoryEntry("f.csv.gz", "LOAD_FAILED", 10, 0), "file f.csv.gz has status LOAD_FAILED"),
            (LoadHistoryEntry("l.csv.gz", "LOADED", 10, 9), "with 9 of 10 parsed rows loaded"),
        ],
    )
    def test_incomplete_loads_reported(self, entry: LoadHistoryEntry, expected: str) -> None:
        (problem,) = check_load_history([entry])

        assert problem.kind is ProblemKind.LOAD_ERROR
        assert expected in problem.message
