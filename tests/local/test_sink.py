"""End-to-end tests of replay, broker and sink against the local broker and warehouse emulator.

The module's main stack replays the first 20,000 lines of the sales data
plus crafted bad messages, runs the sink once, and the tests check what
landed. Tests that run the sink again leave the counts unchanged, so they
come last and the order of the others does not matter.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import gzip
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME, Message

from ml_lifecycle.config import parse_config
from ml_lifecycle.ingest.events import (
    DEFAULT_MAX_EVENT_BYTES,
    EVENT_FIELDS,
    QuarantineReason,
    csv_row_to_event,
    serialize_event,
)
from ml_lifecycle.local.replay import (
    CsvFormatError,
    ReplaySummary,
    producer_config,
    read_events,
    replay_file,
)
from ml_lifecycle.local.replay import main as replay_main
from ml_lifecycle.local.sink import FAIL_POINT_AFTER_WAREHOUSE_COMMIT, FAIL_POINT_ENV, Batch, record_metadata

pytestmark = pytest.mark.integration

LONDON = ZoneInfo("Europe/London")
METADATA_FIELDS = {"topic", "partition", "offset", "key", "CreateTime"}

GOOD_ROW = {
    "InvoiceNo": "536365",
    "StockCode": "85123A",
    "Description": "WHITE HANGING HEART T-LIGHT HOLDER",
    "Quantity": "6",
    "InvoiceDate": "2010-12-01 08:26:00",
    "UnitPrice": "2.55",
    "CustomerID": "17850.0",
    "Country": "United Kingdom",
}


def crafted(**changes: str | None) -> bytes:
    """Return a replay-encoded event of GOOD_ROW with CSV fields replaced; None drops the field."""
    event = csv_row_to_event({**GOOD_ROW, **{k: v for k, v in changes.items() if v is not None}})
    return serialize_event({k: v for k, v in event.items() if changes.get(k, "") is not None})


GOOD_BYTES = crafted()

# (key, value, reason) of messages the sink must quarantine.
BAD_MESSAGES: list[tuple[bytes | None, bytes | None, QuarantineReason]] = [
    (b"BAD-1", b'{"Description":"' + b"x" * DEFAULT_MAX_EVENT_BYTES + b'"}', QuarantineReason.OVERSIZED),
    (b"BAD-2", GOOD_BYTES[:-2] + b'\xa3"}', QuarantineReason.INVALID_UTF8),
    (b"BAD-3", b"536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6", QuarantineReason.INVALID_JSON),
    (None, b'{"Quantity":1,"Quantity":2}', QuarantineReason.INVALID_JSON),
    (b"BAD-5", b'["536365","85123A"]', QuarantineReason.NOT_AN_OBJECT),
    (b"BAD-6", crafted(Quantity=None), QuarantineReason.MISSING_FIELD),
    (b"BAD-7", crafted(UnitPrice=""), QuarantineReason.NULL_VALUE),
    (
        b"BAD-8",
        GOOD_BYTES.replace(b'"InvoiceNo":"536365"', b'"InvoiceNo":536365'),
        QuarantineReason.WRONG_TYPE,
    ),
    (b"BAD-9", crafted(CustomerID="17850-A"), QuarantineReason.WRONG_TYPE),
    (b"BAD-10", crafted(InvoiceDate="2011-02-30 10:00:00"), QuarantineReason.INVALID_DATE),
    (b"BAD-11", crafted(InvoiceDate="01/12/2010 08:26"), QuarantineReason.INVALID_DATE),
    (b"BAD-12", crafted(Quantity="six"), QuarantineReason.INVALID_QUANTITY),
    (b"BAD-13", crafted(Quantity="1.5"), QuarantineReason.INVALID_QUANTITY),
    (b"BAD-14", crafted(UnitPrice="2,55"), QuarantineReason.INVALID_PRICE),
]
# Lines of the sales data the tests replay; the retail_slice fixture cuts this many.
SLICE_LINES = 20_000
PRODUCED = SLICE_LINES + len(BAD_MESSAGES)


def london_ms(invoice_date: str) -> int:
    local = dt.datetime.strptime(invoice_date, "%Y-%m-%d %H:%M:%S").replace(tzinfo=LONDON)
    return int(local.timestamp()) * 1000


def csv_values(row: dict[str, str]) -> tuple[Any, ...]:
    """Return the typed values of a CSV line, decoded here without the event module."""
    return (
        row["InvoiceNo"],
        row["StockCode"],
        row["Description"] or None,
        int(row["Quantity"]),
        row["InvoiceDate"],
        float(row["UnitPrice"]),
        float(row["CustomerID"]) if row["CustomerID"] else None,
        row["Country"],
    )


def content_values(content: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(content[name] for name in EVENT_FIELDS)


@dataclass
class Landed:
    """What the warehouse holds for one stack's topic."""

    events: list[tuple[dict[str, Any], dict[str, Any]]]
    quarantine: list[dict[str, Any]]
    loads: list[dict[str, Any]]


def read_landed(stack: Any) -> Landed:
    tables = parse_config(stack.config_path).warehouse.tables()
    events = [
        (json.loads(row["RECORD_METADATA"]), json.loads(row["RECORD_CONTENT"]))
        for row in stack.fetch(f"SELECT RECORD_METADATA, RECORD_CONTENT FROM {tables['pos_transactions']}")
    ]
    quarantine = stack.fetch(
        f"SELECT RECORD_METADATA, RAW_BYTES, REASON, DETAIL FROM {tables['pos_quarantine']}"
    )
    loads = stack.fetch(f"SELECT * FROM {tables['sink_loads']}")
    return Landed(events, quarantine, loads)


def positions(landed: Landed) -> Counter[tuple[int, int]]:
    return Counter((metadata["partition"], metadata["offset"]) for metadata, _content in landed.events)


@dataclass
class FirstRun:
    replay: ReplaySummary
    sink: Any
    landed: Landed


def replay_and_craft(stack: Any, retail_slice: Any) -> ReplaySummary:
    summary = replay_file(retail_slice.path, producer_config("kafka_default"), stack.topic)
    stack.produce_raw([(key, value) for key, value, _reason in BAD_MESSAGES])
    return summary


@pytest.fixture(scope="module")
def first_run(local_stack: Any, retail_slice: Any) -> FirstRun:
    assert len(retail_slice.rows) == SLICE_LINES
    replay = replay_and_craft(local_stack, retail_slice)
    sink = local_stack.run_sink(
        "--batch-max-events", "5000", "--batch-max-seconds", "1", "--exit-when-idle", "2"
    )
    return FirstRun(replay, sink, read_landed(local_stack))


class TestBrokerAndReplay:
    def test_broker_ready_file(self, local_stack):
        info = local_stack.broker.info

        assert info["bootstrap_servers"] == f"127.0.0.1:{info['port']}"
        assert info["partitions"] == {local_stack.topic: 4}

    def test_replay_delivers_every_line(self, first_run):
        summary = first_run.replay

        assert summary.events_produced == SLICE_LINES
        assert summary.delivery_failures == 0
        assert sum(p.events for p in summary.partitions.values()) == SLICE_LINES
        assert all(p.first_offset == 0 for p in summary.partitions.values())
        assert all(p.last_offset == p.events - 1 for p in summary.partitions.values())

    def test_replay_summary_is_json(self, first_run):
        data = json.loads(first_run.replay.to_json())

        assert data["events_produced"] == SLICE_LINES
        assert set(data["partitions"]) == {"0", "1", "2", "3"}
        assert data["events_per_second"] > 0

    def test_replay_command_prints_summary(self, local_stack, retail_slice, capsys):
        # Another topic, so the events do not reach the sink's topic.
        status = replay_main([str(retail_slice.path), "--topic", "replay_command_check", "--limit", "25"])
        summary = json.loads(capsys.readouterr().out)

        assert status == 0
        assert summary["topic"] == "replay_command_check"
        assert summary["events_produced"] == 25
        assert summary["delivery_failures"] == 0
        assert sum(partition["events"] for partition in summary["partitions"].values()) == 25

    def test_replay_command_rejects_header(self, local_stack, tmp_path, capsys):
        path = tmp_path / "two_columns.csv"
        path.write_text("InvoiceNo,Amount\n536365,15.3\n", encoding="utf-8")

        status = replay_main([str(path), "--topic", "replay_command_check"])

        assert status == 2
        assert "missing columns ['StockCode'" in capsys.readouterr().err

    def test_replay_rejects_other_header(self, tmp_path):
        path = tmp_path / "other.csv"
        path.write_text(
            "InvoiceNo,StockCode,Qty,InvoiceDate,UnitPrice,CustomerID,Country,Shop\n", encoding="utf-8"
        )

        with pytest.raises(CsvFormatError) as raised:
            list(read_events(path))

        assert "missing columns ['Description', 'Quantity']" in str(raised.value)
        assert "unexpected columns ['Qty', 'Shop']" in str(raised.value)

    def test_replay_reads_plain_csv_with_limit(self, tmp_path, retail_slice):
        path = tmp_path / "slice.csv"
        with gzip.open(retail_slice.path, "rt", encoding="utf-8", newline="") as source:
            path.write_text("".join(source.readlines()[:11]), encoding="utf-8")

        events = list(read_events(path, limit=5))

        assert len(events) == 5
        assert events[0]["StockCode"] == retail_slice.rows[0]["StockCode"]


class TestFirstRun:
    def test_sink_exits_cleanly(self, first_run):
        assert first_run.sink.returncode == 0, first_run.sink.log[-3000:]

    def test_every_message_landed_or_quarantined(self, first_run):
        assert len(first_run.landed.events) + len(first_run.landed.quarantine) == PRODUCED

    def test_valid_lines_landed(self, first_run):
        assert len(first_run.landed.events) == SLICE_LINES
        assert len(positions(first_run.landed)) == SLICE_LINES

    def test_landed_content_matches_csv(self, first_run, retail_slice):
        landed = Counter(content_values(content) for _metadata, content in first_run.landed.events)

        assert landed == Counter(csv_values(row) for row in retail_slice.rows)

    def test_pound_sign_landed(self, first_run, retail_slice):
        expected = sum("£" in row["Description"] for row in retail_slice.rows)
        landed = sum("£" in (content["Description"] or "") for _m, content in first_run.landed.events)

        assert landed == expected

    def test_cancellations_landed(self, first_run, retail_slice):
        expected = sum(row["InvoiceNo"].startswith("C") for row in retail_slice.rows)
        landed = sum(content["InvoiceNo"].startswith("C") for _metadata, content in first_run.landed.events)

        assert expected > 0
        assert landed == expected

    def test_record_metadata_like_connector(self, first_run, local_stack):
        for metadata, content in first_run.landed.events:
            assert set(metadata) == METADATA_FIELDS
            assert metadata["topic"] == local_stack.topic
            assert metadata["key"] == content["StockCode"]
            assert metadata["CreateTime"] == london_ms(content["InvoiceDate"])

    def test_quarantine_reasons_as_crafted(self, first_run):
        reasons = Counter(row["REASON"] for row in first_run.landed.quarantine)

        assert reasons == Counter(reason.value for _key, _value, reason in BAD_MESSAGES)

    def test_quarantine_raw_bytes_preserved(self, first_run):
        stored = Counter(
            (json.loads(row["RECORD_METADATA"]).get("key"), bytes(row["RAW_BYTES"]), row["REASON"])
            for row in first_run.landed.quarantine
        )
        crafted_messages = Counter(
            (key.decode() if key else None, value, reason.value) for key, value, reason in BAD_MESSAGES
        )

        assert stored == crafted_messages

    def test_quarantine_detail_names_value(self, first_run):
        details = {row["REASON"]: row["DETAIL"] for row in first_run.landed.quarantine}

        assert "2,55" in details["invalid_price"]
        assert "Quantity" in details["missing_field"]
        assert "UnitPrice" in details["null_value"]

    def test_sink_loads_record_every_row(self, first_run):
        loads = first_run.landed.loads

        assert {row["STATUS"] for row in loads} == {"LOADED"}
        assert sum(row["ROWS_LOADED"] for row in loads) == PRODUCED
        assert sum(row["ROWS_INSERTED"] for row in loads) == PRODUCED
        assert all(row["ROWS_PARSED"] == row["ROWS_LOADED"] for row in loads)

    def test_status_file_totals(self, first_run):
        totals = first_run.sink.totals

        assert totals["messages"] == PRODUCED
        assert totals["landed"] == SLICE_LINES
        assert totals["quarantined"] == len(BAD_MESSAGES)
        assert totals["already_present"] == 0

    def test_committed_offsets_equal_log_end(self, first_run, local_stack):
        assert local_stack.committed_offsets() == local_stack.end_offsets()


class TestRerun:
    def test_rerun_after_offset_reset_lands_nothing(self, first_run, local_stack):
        local_stack.reset_group_offsets()
        assert set(local_stack.committed_offsets().values()) == {0}

        run = local_stack.run_sink("--batch-max-events", "7000", "--exit-when-idle", "2")
        landed = read_landed(local_stack)

        assert run.returncode == 0, run.log[-3000:]
        assert run.totals["messages"] == PRODUCED
        assert run.totals["landed"] == 0
        assert run.totals["quarantined"] == 0
        assert run.totals["already_present"] == PRODUCED
        assert len(landed.events) == SLICE_LINES
        assert len(landed.quarantine) == len(BAD_MESSAGES)
        assert local_stack.committed_offsets() == local_stack.end_offsets()

    def test_missing_rows_loaded_again(self, first_run, local_stack):
        # One batch covering every message gives the same file names on each
        # run, so the second run's COPY reports LOAD_SKIPPED for files whose
        # rows were deleted in between, and the sink must load them again.
        whole_topic = (
            "--batch-max-events",
            str(PRODUCED),
            "--batch-max-seconds",
            "60",
            "--exit-when-idle",
            "2",
        )
        tables = parse_config(local_stack.config_path).warehouse.tables()
        local_stack.reset_group_offsets()
        assert local_stack.run_sink(*whole_topic).returncode == 0
        deleted = local_stack.execute(
            f"DELETE FROM {tables['pos_transactions']} "
            "WHERE RECORD_METADATA:partition::INTEGER = 0 AND RECORD_METADATA:offset::INTEGER < 100"
        )
        assert deleted == 100

        local_stack.reset_group_offsets()
        run = local_stack.run_sink(*whole_topic)
        landed = read_landed(local_stack)

        assert run.returncode == 0, run.log[-3000:]
        assert "loading it again" in run.log
        assert run.totals["landed"] == 100
        assert run.totals["already_present"] == PRODUCED - 100
        assert len(landed.events) == SLICE_LINES
        assert len(positions(landed)) == SLICE_LINES
        assert local_stack.committed_offsets() == local_stack.end_offsets()


def test_crash_after_warehouse_commit_then_restart(fresh_local_stack, retail_slice):
    stack = fresh_local_stack
    replay_and_craft(stack, retail_slice)
    options = ("--batch-max-events", "4000", "--exit-when-idle", "2")

    crashed = stack.run_sink(*options, env={FAIL_POINT_ENV: FAIL_POINT_AFTER_WAREHOUSE_COMMIT})
    after_crash = read_landed(stack)

    assert crashed.returncode == 17, crashed.log[-3000:]
    assert 0 < len(after_crash.events) + len(after_crash.quarantine) <= 4000
    assert all(offset < 0 for offset in stack.committed_offsets().values())

    restarted = stack.run_sink(*options)
    landed = read_landed(stack)

    assert restarted.returncode == 0, restarted.log[-3000:]
    assert restarted.totals["already_present"] == len(after_crash.events) + len(after_crash.quarantine)
    assert restarted.totals["landed"] + restarted.totals["quarantined"] + restarted.totals[
        "already_present"
    ] == (PRODUCED)
    assert len(landed.events) == SLICE_LINES
    assert len(positions(landed)) == SLICE_LINES
    assert Counter(row["REASON"] for row in landed.quarantine) == Counter(
        r.value for _k, _v, r in BAD_MESSAGES
    )
    assert stack.committed_offsets() == stack.end_offsets()


class TestBatchFiles:
    def message(self, offset: int, value: bytes | None, **kwargs: Any) -> Message:
        kwargs.setdefault("key", b"85123A")
        kwargs.setdefault("timestamp", (TIMESTAMP_CREATE_TIME, 1291191960000))
        return Message(topic="pos_transactions", partition=2, offset=offset, value=value, **kwargs)

    def read_rows(self, path: Path) -> list[list[str]]:
        with gzip.open(path, "rt", encoding="utf-8", newline="") as stream:
            return list(csv.reader(stream))

    def test_record_metadata_fields(self):
        metadata = record_metadata(self.message(7, GOOD_BYTES))

        assert metadata == {
            "topic": "pos_transactions",
            "partition": 2,
            "offset": 7,
            "CreateTime": 1291191960000,
            "key": "85123A",
        }

    def test_record_metadata_log_append_time_and_headers(self):
        msg = self.message(
            7, GOOD_BYTES, key=None, timestamp=(TIMESTAMP_LOG_APPEND_TIME, 5), headers=[("source", b"till-4")]
        )

        assert record_metadata(msg) == {
            "topic": "pos_transactions",
            "partition": 2,
            "offset": 7,
            "LogAppendTime": 5,
            "headers": {"source": "till-4"},
        }

    def test_files_named_by_partition_and_offsets(self, tmp_path):
        batch = Batch(1, "pos_transactions", tmp_path, DEFAULT_MAX_EVENT_BYTES)
        for offset in (10, 11, 12):
            batch.add(self.message(offset, GOOD_BYTES))
        batch.add(self.message(13, b"not json"))

        files = batch.close_files()

        assert [f.name for f in files] == [
            "pos_transactions-2-00000000000000000010-00000000000000000012.csv.gz",
            "pos_transactions-2-00000000000000000013-00000000000000000013.csv.gz",
        ]
        assert [f.kind for f in files] == ["events", "quarantine"]
        assert batch.offsets == {2: (10, 13)}

    def test_same_offsets_give_same_bytes(self, tmp_path):
        contents = []
        for run in ("a", "b"):
            batch = Batch(1, "pos_transactions", tmp_path / run, DEFAULT_MAX_EVENT_BYTES)
            batch.add(self.message(10, GOOD_BYTES))
            (staged,) = batch.close_files()
            assert staged.path is not None
            contents.append(staged.path.read_bytes())

        assert contents[0] == contents[1]

    def test_redelivered_offset_counted_once(self, tmp_path):
        batch = Batch(1, "pos_transactions", tmp_path, DEFAULT_MAX_EVENT_BYTES)
        for offset in (10, 11, 10, 11, 12):
            batch.add(self.message(offset, GOOD_BYTES))

        assert batch.messages == 3
        assert batch.duplicates == 2
        assert batch.landed == 3

    def test_failing_message_quarantined_as_sink_error(self, tmp_path):
        def parse_failing_on_returns(payload: bytes | None, max_bytes: int) -> Any:
            if payload is not None and b'"Quantity":-' in payload:
                raise ZeroDivisionError("division by zero in a return")
            from ml_lifecycle.ingest.events import parse_event

            return parse_event(payload, max_bytes)

        returned = crafted(Quantity="-6")
        batch = Batch(
            1, "pos_transactions", tmp_path, DEFAULT_MAX_EVENT_BYTES, parse=parse_failing_on_returns
        )
        batch.add(self.message(20, GOOD_BYTES))
        batch.add(self.message(21, returned))

        events, quarantine = batch.close_files()

        assert batch.messages == 2
        assert batch.reasons == {"sink_error": 1}
        assert events.path is not None
        assert quarantine.path is not None
        assert len(self.read_rows(events.path)) == 1
        (row,) = self.read_rows(quarantine.path)
        landing_key, metadata, raw_base64, reason, detail = row
        assert landing_key == "pos_transactions-2-21"
        assert json.loads(metadata)["offset"] == 21
        assert base64.b64decode(raw_base64) == returned
        assert reason == "sink_error"
        assert detail == "ZeroDivisionError: division by zero in a return"
