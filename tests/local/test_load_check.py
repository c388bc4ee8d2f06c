"""pos_load_check and sales_data_validation against the real broker, warehouse emulator and sink.

Each failure kind is produced for real. Rows are deleted or copied in the
warehouse, events are produced without a sink to land them, and a sink is
killed between its warehouse commit and its Kafka commit. Other tests use a
window without data and events around the UK daylight saving changes. The
operators run with their real hooks; only the Airflow task context is built
by hand.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ml_lifecycle.exceptions import LoadCheckFailed, LoadCheckLagging, ValidationFailed
from ml_lifecycle.hooks.warehouse import WarehouseHook
from ml_lifecycle.ingest.events import EVENT_FIELDS
from ml_lifecycle.local.process import python_module_command, start_service
from ml_lifecycle.local.replay import default_retail_csv, producer_config, replay_file
from ml_lifecycle.local.stack import LocalStack
from ml_lifecycle.local.task_context import manual_task_context
from ml_lifecycle.operators.load_check import PosLoadCheckOperator
from ml_lifecycle.operators.validation import GreatExpectationsSqlOperator

pytestmark = pytest.mark.integration

LOCAL_CONFIG = Path(__file__).resolve().parents[2] / "include" / "config" / "local.yaml"
# The data starts on Wednesday 2010-12-01; the slice is its first week.
SLICE_END = "2010-12-06"
SLICE_WINDOW = {"window_end": SLICE_END, "weeks": 1}
MOCK_SESSION_TIMEOUT_MS = 3000
_runs = itertools.count(1)


class RecordingTaskInstance:
    """The part of a task instance the operators use: XCom pushes, kept for the test to read."""

    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


def task_context(params: dict[str, Any], run_id: str | None = None) -> dict[str, Any]:
    """Build the Airflow context the operators read: parameters, run id, outlet events."""
    return manual_task_context(
        params,
        run_id=run_id or f"manual__test_{next(_runs)}",
        dag=SimpleNamespace(dag_id="test_dag"),
        ti=RecordingTaskInstance(),
    )


def warehouse() -> WarehouseHook:
    return WarehouseHook(snowflake_conn_id="snowflake_default")


def scalar(sql: str, parameters: dict[str, Any] | None = None) -> Any:
    (row,) = warehouse().fetch_dicts(sql, parameters)
    return next(iter(row.values()))


def run_sink_until_idle(stack: LocalStack, *, env: dict[str, str] | None = None) -> int:
    """Run the sink as its own process until the topic is drained; return its exit status."""
    name = f"sink-{next(_runs)}"
    service = start_service(
        name,
        python_module_command(
            "ml_lifecycle.local.sink",
            "--exit-when-idle",
            "2",
            "--session-timeout-ms",
            str(MOCK_SESSION_TIMEOUT_MS),
            "--work-dir",
            str(stack.layout.root / name),
        ),
        run_dir=stack.layout.run,
        log_dir=stack.layout.logs,
        env={**os.environ, **stack.connection_env(), **(env or {})},
    )
    try:
        return service.process.wait(timeout=120)
    finally:
        service.stop()


def check(params: dict[str, Any] | None = None, run_id: str | None = None) -> dict[str, Any]:
    return PosLoadCheckOperator(task_id="reconcile_kafka_offsets").execute(
        task_context(params or SLICE_WINDOW, run_id)
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Warehouse, broker and AWS emulator with the first lines of the real data landed by the sink."""
    root = tmp_path_factory.mktemp("load-check")
    local = LocalStack(root=root, config_path=LOCAL_CONFIG, with_airflow=False, with_sink=False).start()
    saved = dict(os.environ)
    os.environ.update(local.connection_env())
    try:
        slice_path = root / "slice.csv"
        with gzip.open(default_retail_csv(), "rt", encoding="utf-8", newline="") as reader:
            rows = list(
                itertools.takewhile(lambda row: row["InvoiceDate"] < SLICE_END, csv.DictReader(reader))
            )
        with slice_path.open("w", encoding="utf-8", newline="") as writer:
            csv_writer = csv.DictWriter(writer, fieldnames=list(rows[0]))
            csv_writer.writeheader()
            csv_writer.writerows(rows)
        replay_file(slice_path, producer_config("kafka_default"), local.config.kafka.topic)
        assert run_sink_until_idle(local) == 0
        local.slice_lines = len(rows)  # type: ignore[attr-defined]
        yield local
    finally:
        os.environ.clear()
        os.environ.update(saved)
        local.stop()


def test_clean_load_passes_and_writes_audit_rows(stack: LocalStack) -> None:
    summary = check(run_id="manual__clean")
    audit = warehouse().fetch_dicts(
        "SELECT * FROM LIFECYCLE.AUDIT.LOAD_CHECKS WHERE DAG_RUN_ID = 'manual__clean' ORDER BY KAFKA_PARTITION"
    )

    assert summary["landed_rows"] == stack.slice_lines
    assert summary["quarantined_rows"] == 0
    assert summary["log_end_offsets"] == stack.slice_lines
    assert summary["missing_offsets"] == 0
    assert summary["consumer_lag"] == 0
    assert summary["window_rows"] == stack.slice_lines
    assert summary["log_end_offsets"] == summary["accounted_rows"] == stack.slice_lines
    assert summary["balanced"] is True
    assert [row["KAFKA_PARTITION"] for row in audit] == [0, 1, 2, 3]
    assert sum(row["LANDED_ROWS"] for row in audit) == stack.slice_lines
    assert all(row["PASSED"] for row in audit)


def test_rerun_replaces_audit_rows(stack: LocalStack) -> None:
    check(run_id="manual__rerun")
    check(run_id="manual__rerun")

    assert scalar("SELECT COUNT(*) FROM LIFECYCLE.AUDIT.LOAD_CHECKS WHERE DAG_RUN_ID = 'manual__rerun'") == 4


def test_gap_names_partition_and_range(stack: LocalStack) -> None:
    hook = warehouse()
    # DDL runs on its own: fakesnow cannot create a table inside a transaction
    # that already changed data, and Snowflake commits DDL at once anyway.
    hook.run(
        "CREATE OR REPLACE TABLE LIFECYCLE.RAW.GAP_BACKUP AS SELECT * FROM LIFECYCLE.RAW.POS_TRANSACTIONS "
        "WHERE RECORD_METADATA:partition::INTEGER = 2 AND RECORD_METADATA:offset::INTEGER BETWEEN 100 AND 149"
    )
    hook.run_script(
        [
            "DELETE FROM LIFECYCLE.RAW.POS_TRANSACTIONS "
            "WHERE RECORD_METADATA:partition::INTEGER = 2 AND RECORD_METADATA:offset::INTEGER BETWEEN 100 AND 149",
        ]
    )
    try:
        with pytest.raises(LoadCheckFailed) as failure:
            check(run_id="manual__gap")
        audit = hook.fetch_dicts(
            "SELECT KAFKA_PARTITION, MISSING_OFFSETS, PASSED FROM LIFECYCLE.AUDIT.LOAD_CHECKS "
            "WHERE DAG_RUN_ID = 'manual__gap' ORDER BY KAFKA_PARTITION"
        )
    finally:
        hook.run_script(["INSERT INTO LIFECYCLE.RAW.POS_TRANSACTIONS SELECT * FROM LIFECYCLE.RAW.GAP_BACKUP"])
        hook.run("DROP TABLE LIFECYCLE.RAW.GAP_BACKUP")

    assert "partition 2: 50 offsets missing in [100, 149]" in str(failure.value)
    assert "1 problems" in str(failure.value)
    assert [row["MISSING_OFFSETS"] for row in audit] == [0, 0, 50, 0]
    assert [row["PASSED"] for row in audit] == [True, True, False, True]


def test_duplicate_rows_counted(stack: LocalStack) -> None:
    hook = warehouse()
    copy = (
        "INSERT INTO LIFECYCLE.RAW.POS_TRANSACTIONS SELECT * FROM LIFECYCLE.RAW.POS_TRANSACTIONS "
        "WHERE RECORD_METADATA:partition::INTEGER = 1 AND RECORD_METADATA:offset::INTEGER IN (7, 8, 9)"
    )
    hook.run_script([copy])
    try:
        with pytest.raises(LoadCheckFailed) as failure:
            check()
    finally:
        # Delete all copies of the three offsets, then put one of each back.
        hook.run(
            "CREATE OR REPLACE TABLE LIFECYCLE.RAW.DUPLICATES AS SELECT DISTINCT RECORD_METADATA::VARCHAR AS M, "
            "RECORD_CONTENT::VARCHAR AS C FROM LIFECYCLE.RAW.POS_TRANSACTIONS "
            "WHERE RECORD_METADATA:partition::INTEGER = 1 AND RECORD_METADATA:offset::INTEGER IN (7, 8, 9)"
        )
        hook.run_script(
            [
                "DELETE FROM LIFECYCLE.RAW.POS_TRANSACTIONS "
                "WHERE RECORD_METADATA:partition::INTEGER = 1 AND RECORD_METADATA:offset::INTEGER IN (7, 8, 9)",
                "INSERT INTO LIFECYCLE.RAW.POS_TRANSACTIONS SELECT PARSE_JSON(M), PARSE_JSON(C) "
                "FROM LIFECYCLE.RAW.DUPLICATES",
            ]
        )
        hook.run("DROP TABLE LIFECYCLE.RAW.DUPLICATES")

    assert "partition 1: 3 duplicate rows (offsets landed more than once, for example 7, 8, 9)" in str(
        failure.value
    )
    assert check()["duplicate_rows"] == 0


def test_partially_loaded_file_reported(stack: LocalStack) -> None:
    hook = warehouse()
    # fakesnow 0.12.1 cannot load part of a file (no ON_ERROR = CONTINUE), so
    # the load-history row a partial load leaves in Snowflake is written directly.
    hook.run_script(
        [
            "INSERT INTO LIFECYCLE._fs_information_schema._fs_load_history VALUES ('RAW', "
            "'sink_stage/pos_transactions/p0-broken.csv.gz', 'POS_LANDING', CURRENT_TIMESTAMP(), "
            "'PARTIALLY_LOADED', 5, 10000, 'Numeric value ''abc'' is not recognized', 2, 14, 'QUANTITY', 9995, 10000)"
        ]
    )
    try:
        with pytest.raises(LoadCheckFailed) as failure:
            check()
    finally:
        hook.run_script(
            [
                "DELETE FROM LIFECYCLE._fs_information_schema._fs_load_history WHERE STATUS = 'PARTIALLY_LOADED'"
            ]
        )

    assert (
        "file sink_stage/pos_transactions/p0-broken.csv.gz has status PARTIALLY_LOADED with 5 of 10,000 parsed "
        "rows loaded: Numeric value 'abc' is not recognized"
    ) in str(failure.value)


def test_stale_window_is_retryable(stack: LocalStack) -> None:
    # The landed data ends on 2010-12-05; the week to 2010-12-13 has no event.
    with pytest.raises(LoadCheckLagging) as failure:
        check({"window_end": "2010-12-13", "weeks": 1})

    assert "newest landed event is from 2010-12-05" in str(failure.value)
    assert "h before the window end 2010-12-13 00:00; expected at most 72 h" in str(failure.value)


def test_empty_window_fails_the_load_check(stack: LocalStack) -> None:
    with pytest.raises(LoadCheckLagging) as failure:
        check({"window_end": "2010-11-29", "weeks": 1})

    assert "no event landed with an event time before 2010-11-29 00:00" in str(failure.value)


def test_lag_then_commit_pending_then_caught_up(stack: LocalStack, tmp_path: Path) -> None:
    extra = tmp_path / "extra.csv"
    rows = [
        {
            "InvoiceNo": f"9{index:05d}",
            "StockCode": "85123A",
            "Description": "WHITE HANGING HEART T-LIGHT HOLDER",
            "Quantity": "2",
            "InvoiceDate": "2010-12-05 10:00:00",
            "UnitPrice": "2.55",
            "CustomerID": "17850.0",
            "Country": "United Kingdom",
        }
        for index in range(40)
    ]
    with extra.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    # One key, so all 40 events go to one partition.
    replay_file(extra, producer_config("kafka_default"), stack.config.kafka.topic)

    with pytest.raises(LoadCheckLagging) as lagging:
        check()

    # The sink lands the batch, then dies before it commits the Kafka offsets.
    status = run_sink_until_idle(stack, env={"ML_LIFECYCLE_SINK_FAIL_POINT": "after_warehouse_commit"})
    pending = check(run_id="manual__pending")
    recovered = run_sink_until_idle(stack)
    caught_up = check()

    assert "consumer lag of 40 offsets not yet landed" in str(lagging.value)
    assert status == 17
    assert pending["commit_pending"] == 40
    assert pending["consumer_lag"] == 0
    assert pending["landed_rows"] == stack.slice_lines + 40
    assert (
        scalar(
            "SELECT SUM(COMMIT_PENDING) FROM LIFECYCLE.AUDIT.LOAD_CHECKS WHERE DAG_RUN_ID = 'manual__pending'"
        )
        == 40
    )
    assert recovered == 0
    assert caught_up["commit_pending"] == 0
    assert caught_up["landed_rows"] == stack.slice_lines + 40
    assert caught_up["duplicate_rows"] == 0
    assert caught_up["balanced"] is True
    assert pending["balanced"] is True


class TestValidation:
    def validate(self, params: dict[str, Any]) -> dict[str, Any]:
        return GreatExpectationsSqlOperator(task_id="validate_pos_lines").execute(task_context(params))

    def test_landed_week_passes(self, stack: LocalStack) -> None:
        summary = self.validate(SLICE_WINDOW)

        assert summary["success"] is True
        assert summary["evaluated_expectations"] == 17
        assert summary["data_docs"].endswith(".html")

    def test_rerun_keeps_one_audit_row(self, stack: LocalStack) -> None:
        for _ in range(2):
            GreatExpectationsSqlOperator(task_id="validate_pos_lines").execute(
                task_context(SLICE_WINDOW, run_id="manual__validation_rerun")
            )

        assert (
            scalar(
                "SELECT COUNT(*) FROM LIFECYCLE.AUDIT.VALIDATION_RUNS WHERE DAG_RUN_ID = 'manual__validation_rerun'"
            )
            == 1
        )

    def test_empty_window_fails_on_row_count(self, stack: LocalStack) -> None:
        with pytest.raises(ValidationFailed) as failure:
            self.validate({"window_end": "2011-06-06", "weeks": 1})

        message = str(failure.value)
        assert "1 of 17 expectations unsuccessful" in message
        assert "- expect_table_row_count_to_be_between: observed 0" in message

    def test_broken_values_named_with_counts(self, stack: LocalStack, tmp_path: Path) -> None:
        suite = json.loads(
            (LOCAL_CONFIG.parents[1] / "gx" / "pos_transactions.json").read_text(encoding="utf-8")
        )
        for expectation in suite["expectations"]:
            if expectation["type"] == "expect_column_values_to_be_in_set":
                expectation["kwargs"]["value_set"] = ["United Kingdom"]
        path = tmp_path / "strict.json"
        path.write_text(json.dumps(suite), encoding="utf-8")

        with pytest.raises(ValidationFailed) as failure:
            GreatExpectationsSqlOperator(task_id="validate", suite_path=str(path)).execute(
                task_context(SLICE_WINDOW)
            )

        foreign = scalar(
            "SELECT COUNT(*) FROM LIFECYCLE.STAGING.POS_LINES WHERE COUNTRY <> 'United Kingdom' "
            "AND INVOICE_DATE < '2010-12-06'"
        )
        assert foreign > 0
        assert f"- expect_column_values_to_be_in_set on country: {foreign:,} unexpected values" in str(
            failure.value
        )

    def test_warn_mode_must_be_chosen_and_passes(self, stack: LocalStack, tmp_path: Path) -> None:
        suite = json.loads(
            (LOCAL_CONFIG.parents[1] / "gx" / "pos_transactions.json").read_text(encoding="utf-8")
        )
        suite["meta"]["on_failure"] = "warn"
        path = tmp_path / "warn.json"
        path.write_text(json.dumps(suite), encoding="utf-8")

        summary = GreatExpectationsSqlOperator(task_id="validate", suite_path=str(path)).execute(
            task_context({"window_end": "2011-06-06", "weeks": 1})
        )

        assert summary["success"] is False
        assert summary["on_failure"] == "warn"


def test_daylight_saving_weeks_cut_at_local_midnight(stack: LocalStack, tmp_path: Path) -> None:
    times = [
        "2011-03-27 00:30:00",  # Sunday, before the clocks go forward
        "2011-03-27 02:30:00",  # Sunday, the hour after 01:00 GMT does not exist
        "2011-03-27 23:59:00",  # last minute of the week of 2011-03-21
        "2011-03-28 00:00:00",  # first minute of the week of 2011-03-28
        "2011-04-03 12:00:00",  # keeps that week fresh for the check
        "2011-10-30 01:30:00",  # Sunday, the repeated hour when the clocks go back
        "2011-10-31 00:30:00",  # Monday, the next week
    ]
    path = tmp_path / "dst.csv"
    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(EVENT_FIELDS)
        for index, time in enumerate(times):
            writer.writerow(
                [f"7{index:05d}", "22197", "SMALL POPCORN HOLDER", "1", time, "0.85", "", "United Kingdom"]
            )
    replay_file(path, producer_config("kafka_default"), stack.config.kafka.topic)
    assert run_sink_until_idle(stack) == 0

    spring = check({"window_end": "2011-03-28", "weeks": 1})
    autumn = check({"window_end": "2011-10-31", "weeks": 1})
    next_spring = check({"window_end": "2011-04-04", "weeks": 1})

    assert spring["window_rows"] == 3
    assert autumn["window_rows"] == 1
    assert next_spring["window_rows"] == 2
    assert spring["missing_offsets"] == 0
