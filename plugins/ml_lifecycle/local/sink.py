"""Load Kafka events into Snowflake in micro-batches, as the Snowflake Kafka connector does with Snowpipe.

Run as ``python -m ml_lifecycle.local.sink --ready-file F [--batch-max-events N]
[--batch-max-seconds S] [--exit-when-idle S]``. The connections come from
Airflow (``AIRFLOW_CONN_SNOWFLAKE_DEFAULT`` and ``AIRFLOW_CONN_KAFKA_DEFAULT``
for a local run) and the topic, consumer group and tables from the
configuration named by ``ML_LIFECYCLE_CONFIG``.

Each batch goes through these steps, and the Kafka offsets are committed
only in the last one, so a failure anywhere before it makes the sink
consume the batch again:

1. Every message is checked with :func:`~ml_lifecycle.ingest.events.validate_event`.
   Valid events are streamed to one gzip CSV file per partition (record
   metadata and record content as JSON), the others to a quarantine file per
   partition (metadata, base64 bytes, reason, detail). A message whose
   handling raises is quarantined with reason ``sink_error``. Files are
   named ``<topic>-<partition>-<first offset>-<last offset>.csv.gz``.
2. The files are PUT to the sink stage.
3. One transaction runs COPY INTO the landing tables and deletes the
   landing rows whose (topic, partition, offset) is already in
   ``POS_TRANSACTIONS`` or ``POS_QUARANTINE``. It inserts the other rows
   with PARSE_JSON, records every COPY result in ``SINK_LOADS``, deletes
   the landing rows and commits.
4. The offsets (last offset + 1 of each partition) are committed synchronously.

Consuming the same offsets again adds no row: COPY reports a staged file of
the same name as LOAD_SKIPPED, and rows already in the target tables are
removed from the landing tables before the insert.

Fault injection: with ``ML_LIFECYCLE_SINK_FAIL_POINT=after_warehouse_commit``
the process exits with status 17 right after the warehouse COMMIT of its
first batch and before the Kafka commit, as a crash at the worst moment
would. Tests use it to check that a restart lands no duplicate.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import datetime as dt
import gzip
import io
import json
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import jinja2

from ml_lifecycle.exceptions import LifecycleError
from ml_lifecycle.ingest.events import (
    DEFAULT_MAX_EVENT_BYTES,
    PosEvent,
    QuarantineReason,
    Rejection,
    validate_event,
)
from ml_lifecycle.local.process import write_ready_file

if TYPE_CHECKING:
    from confluent_kafka import Consumer, KafkaError, Message
    from snowflake.connector import SnowflakeConnection
    from snowflake.connector.cursor import SnowflakeCursor

log = logging.getLogger("ml_lifecycle.sink")

FAIL_POINT_ENV: Final = "ML_LIFECYCLE_SINK_FAIL_POINT"
FAIL_POINT_AFTER_WAREHOUSE_COMMIT: Final = "after_warehouse_commit"
FAIL_POINT_EXIT_CODE: Final = 17

DEFAULT_BATCH_MAX_EVENTS: Final = 50_000
DEFAULT_BATCH_MAX_SECONDS: Final = 1.0
DEFAULT_MAX_ATTEMPTS: Final = 5
# First wait between two attempts at loading a batch; it doubles after each failure.
DEFAULT_RETRY_BACKOFF_S: Final = 1.0
# Messages requested from librdkafka in one consume() call.
_CONSUME_CHUNK: Final = 5_000
# How long one consume() call waits while no batch is open.
_IDLE_POLL_S: Final = 0.5
_KAFKA_TIMEOUT_S: Final = 10.0
# Detail of a sink_error row: exception type and message, cut to this length.
_DETAIL_CHARS: Final = 500
# Per-message errors logged one by one in a batch before the rest are only counted.
_LOGGED_MESSAGE_ERRORS: Final = 5

# Kafka topic names are limited to these characters, which are also safe
# in a stage path and a file name.
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")

FileKind = Literal["events", "quarantine"]

# COPY reads the staged files with these options. Every field is enclosed
# in double quotes and quotes inside are doubled, as csv.QUOTE_ALL writes.
_FILE_FORMAT = (
    "FILE_FORMAT = (TYPE = CSV FIELD_OPTIONALLY_ENCLOSED_BY = '\"' COMPRESSION = GZIP"
    " ESCAPE_UNENCLOSED_FIELD = NONE)"
)


class SinkLoadError(LifecycleError):
    """A batch could not be loaded into the warehouse: COPY reported an error or a row count did not match."""


@dataclass(frozen=True)
class SinkSettings:
    """Settings of the sink: source topic and group, connections, tables and batch limits.

    :param tables: qualified warehouse names, as from :meth:`WarehouseConfig.tables`.
    :param work_dir: directory for the gzip files of the open batch.
    """

    topic: str
    group_id: str
    kafka_conn_id: str
    snowflake_conn_id: str
    tables: Mapping[str, str]
    work_dir: Path
    batch_max_events: int = DEFAULT_BATCH_MAX_EVENTS
    batch_max_seconds: float = DEFAULT_BATCH_MAX_SECONDS
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    retry_backoff_s: float = DEFAULT_RETRY_BACKOFF_S
    session_timeout_ms: int | None = None

    def __post_init__(self) -> None:
        if not _TOPIC_NAME.fullmatch(self.topic):
            raise ValueError(
                f"invalid Kafka topic name {self.topic!r}: expected 1 to 249 letters, digits, '.', '_' or '-'"
            )
        if self.batch_max_events < 1 or self.batch_max_seconds <= 0:
            raise ValueError(
                f"invalid batch limits {self.batch_max_events} events / {self.batch_max_seconds} s: "
                "expected at least 1 event and more than 0 seconds"
            )
        if self.max_attempts < 1:
            raise ValueError(f"invalid max_attempts {self.max_attempts}: expected at least 1")


# --- Records of one message ------------------------------------------------------


def record_metadata(msg: Message) -> dict[str, Any]:
    """Return the RECORD_METADATA the Snowflake Kafka connector writes for ``msg``.

    Fields: ``topic``, ``partition``, ``offset``, ``CreateTime`` or
    ``LogAppendTime`` (epoch milliseconds, named after the timestamp type),
    ``key`` as a string when the message has one, and ``headers`` when it has
    any. Bytes that are not UTF-8 are replaced with U+FFFD.
    """
    from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME

    metadata: dict[str, Any] = {"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset()}
    timestamp_type, timestamp = msg.timestamp()
    if timestamp_type == TIMESTAMP_CREATE_TIME:
        metadata["CreateTime"] = timestamp
    elif timestamp_type == TIMESTAMP_LOG_APPEND_TIME:
        metadata["LogAppendTime"] = timestamp
    key = msg.key()
    if key is not None:
        metadata["key"] = key.decode("utf-8", errors="replace")
    headers = msg.headers()
    if headers:
        pairs = headers.items() if isinstance(headers, dict) else headers
        metadata["headers"] = {
            name: value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
            for name, value in pairs
        }
    return metadata


def _compact_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def record_metadata_json(msg: Message) -> str:
    """Return :func:`record_metadata` of ``msg`` as compact JSON text.

    Messages without headers, all of them in practice, are written from a
    template: a dictionary and json.dumps per message cost more than
    parsing the event itself.
    """
    from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME

    if msg.headers():
        return _compact_json(record_metadata(msg))
    text = (
        f'{{"topic":{_json_string(msg.topic() or "")},"partition":{msg.partition()},"offset":{msg.offset()}'
    )
    timestamp_type, timestamp = msg.timestamp()
    if timestamp_type == TIMESTAMP_CREATE_TIME:
        text += f',"CreateTime":{timestamp}'
    elif timestamp_type == TIMESTAMP_LOG_APPEND_TIME:
        text += f',"LogAppendTime":{timestamp}'
    key = msg.key()
    if key is not None:
        text += f',"key":{_json_string(key.decode("utf-8", errors="replace"))}'
    return text + "}"


def record_content(value: bytes | None) -> str:
    """Return the RECORD_CONTENT text of a valid event: the message's own JSON, as the connector lands it.

    A message text that spans lines is written compactly instead, so every
    staged CSV row stays on one line.
    """
    text = (value or b"").decode("utf-8")
    if "\n" in text or "\r" in text:
        return _compact_json(json.loads(text))
    return text


def _json_string(value: str) -> str:
    # The C encoder json.dumps uses for strings, without the call overhead.
    return json.encoder.encode_basestring(value)


# --- Files of one batch -------------------------------------------------------------


class StagedFile:
    """One gzip CSV file of a batch: the rows of one partition for one landing table.

    Rows are streamed to disk as they arrive. The gzip header carries no
    time, so consuming the same offsets again writes the same bytes.
    """

    def __init__(self, directory: Path, topic: str, kind: FileKind, partition: int) -> None:
        self.topic = topic
        self.kind = kind
        self.partition = partition
        self.rows = 0
        self.first_offset: int | None = None
        self.last_offset: int | None = None
        self.path: Path | None = None
        self.landing_key = ""
        directory.mkdir(parents=True, exist_ok=True)
        self._partial = directory / f".{topic}-{partition}.partial"
        self._raw = self._partial.open("wb")
        self._gzip = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, compresslevel=1, mtime=0)
        self._text = io.TextIOWrapper(self._gzip, encoding="utf-8", newline="")
        self._writer = csv.writer(self._text, quoting=csv.QUOTE_ALL, lineterminator="\n")

    @property
    def name(self) -> str:
        """Return the deterministic file name; valid once the file has rows."""
        return f"{self.topic}-{self.partition}-{self.first_offset:020d}-{self.last_offset:020d}.csv.gz"

    def write(self, offset: int, row: Sequence[str]) -> None:
        if self.first_offset is None:
            self.first_offset = offset
            # Known from the first row on, unlike the file name, so every CSV
            # row carries it and COPY fills the landing table's key column.
            self.landing_key = f"{self.topic}-{self.partition}-{offset}"
        self._writer.writerow((self.landing_key, *row))
        self.rows += 1
        self.last_offset = offset

    def close(self) -> Path:
        """Finish the gzip stream and move the file to its final name."""
        self._text.flush()
        self._text.detach()
        self._gzip.close()
        self._raw.close()
        self.path = self._partial.with_name(self.name)
        self._partial.replace(self.path)
        return self.path

    def discard(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._text.close()
        self._raw.close()
        self._partial.unlink(missing_ok=True)
        if self.path is not None:
            self.path.unlink(missing_ok=True)


# Returns a Rejection for a message to quarantine; anything else means valid.
ParseFunction = Callable[[bytes | None, int], PosEvent | Rejection | None]


class Batch:
    """Messages consumed since the last commit, streamed into staged files.

    :param parse: validates one message value; :func:`validate_event` unless a test replaces it.
    """

    def __init__(
        self,
        number: int,
        topic: str,
        work_dir: Path,
        max_event_bytes: int,
        parse: ParseFunction = validate_event,
    ) -> None:
        self.number = number
        self.topic = topic
        self.started = time.monotonic()
        self.messages = 0
        self.duplicates = 0
        self.reasons: Counter[str] = Counter()
        self.offsets: dict[int, tuple[int, int]] = {}
        self._work_dir = work_dir
        self._max_event_bytes = max_event_bytes
        self._parse = parse
        self._files: dict[tuple[FileKind, int], StagedFile] = {}

    @property
    def landed(self) -> int:
        return sum(f.rows for (kind, _p), f in self._files.items() if kind == "events")

    @property
    def quarantined(self) -> int:
        return sum(self.reasons.values())

    def _file(self, kind: FileKind, partition: int) -> StagedFile:
        staged = self._files.get((kind, partition))
        if staged is None:
            # A directory per batch: the next batch writes while this one loads.
            staged = StagedFile(self._work_dir / f"batch-{self.number}" / kind, self.topic, kind, partition)
            self._files[(kind, partition)] = staged
        return staged

    def _quarantine(
        self,
        partition: int,
        offset: int,
        metadata: Mapping[str, Any],
        value: bytes | None,
        rejection: Rejection,
    ) -> None:
        raw_base64 = base64.b64encode(value or b"").decode("ascii")
        row = (_compact_json(metadata), raw_base64, rejection.reason.value, rejection.detail)
        self._file("quarantine", partition).write(offset, row)
        self.reasons[rejection.reason.value] += 1

    def add(self, msg: Message) -> None:
        """Write one message to the events or the quarantine file of its partition."""
        partition, offset = msg.partition(), msg.offset()
        if partition is None or offset is None:
            raise ValueError(
                f"message of {msg.topic()} has no partition or offset; expected a consumed message"
            )
        seen = self.offsets.get(partition)
        if seen is not None and offset <= seen[1]:
            # Delivered again after a seek or rebalance, and the batch contains it already.
            self.duplicates += 1
            return

        value = msg.value()
        try:
            result = self._parse(value, self._max_event_bytes)
            if isinstance(result, Rejection):
                self._quarantine(partition, offset, record_metadata(msg), value, result)
            else:
                self._file("events", partition).write(
                    offset, (record_metadata_json(msg), record_content(value))
                )
        except Exception as err:
            # An unusable message is quarantined, never dropped.
            errors = self.reasons[QuarantineReason.SINK_ERROR.value]
            if errors < _LOGGED_MESSAGE_ERRORS:
                log.warning(
                    "Batch %d: quarantining %s[%d]@%d as sink_error: %r",
                    self.number,
                    self.topic,
                    partition,
                    offset,
                    err,
                )
            detail = f"{type(err).__name__}: {err}"[:_DETAIL_CHARS]
            minimal = {"topic": msg.topic(), "partition": partition, "offset": offset}
            self._quarantine(
                partition, offset, minimal, value, Rejection(QuarantineReason.SINK_ERROR, detail)
            )

        self.messages += 1
        first = seen[0] if seen is not None else offset
        self.offsets[partition] = (first, offset)

    def close_files(self) -> list[StagedFile]:
        """Finish every file and return them, events files first, by partition."""
        files = [self._files[key] for key in sorted(self._files)]
        for staged in files:
            staged.close()
        return files

    def discard(self) -> None:
        for staged in self._files.values():
            staged.discard()
        shutil.rmtree(self._work_dir / f"batch-{self.number}", ignore_errors=True)

    def describe_offsets(self) -> str:
        return ", ".join(f"{p}:{first}-{last}" for p, (first, last) in sorted(self.offsets.items()))


# --- Warehouse --------------------------------------------------------------------------

_SQL_ENVIRONMENT = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)  # noqa: S701


def _render(template: str, **params: Any) -> str:
    # Identifiers come from validated configuration and stage paths from a
    # validated topic name and offsets; values are bound by the connector.
    return _SQL_ENVIRONMENT.from_string(template).render(params=params)


_PUT = (
    "PUT 'file://{{ params.path }}' @{{ params.tables.sink_stage }}/{{ params.prefix }}/"
    " AUTO_COMPRESS = FALSE"
)

_COPY = (
    "COPY INTO {{ params.landing }} ({{ params.columns }})"
    " FROM @{{ params.tables.sink_stage }}/{{ params.prefix }}/{{ params.file_name }} "
    + _FILE_FORMAT
    + "{% if params.force %} FORCE = TRUE{% endif %}"
)

_COUNT_PRESENT = """
SELECT COUNT(*) FROM {{ params.target }}
WHERE RECORD_METADATA:topic::VARCHAR = %(topic)s
  AND RECORD_METADATA:partition::INTEGER = %(partition)s
  AND RECORD_METADATA:offset::INTEGER BETWEEN %(first_offset)s AND %(last_offset)s
"""

_READ_WATERMARKS = """
SELECT KAFKA_PARTITION, LAST_OFFSET FROM {{ params.tables.sink_offsets }}
WHERE TOPIC = %(topic)s
"""

# UPDATE, then INSERT when no row changed: fakesnow 0.12.1 cannot run MERGE
# inside a transaction that already wrote to the database.
_RAISE_WATERMARK = """
UPDATE {{ params.tables.sink_offsets }}
SET LAST_OFFSET = GREATEST(LAST_OFFSET, %(last_offset)s), UPDATED_AT = TO_TIMESTAMP_NTZ(%(now)s)
WHERE TOPIC = %(topic)s AND KAFKA_PARTITION = %(partition)s
"""

_INSERT_WATERMARK = """
INSERT INTO {{ params.tables.sink_offsets }} (TOPIC, KAFKA_PARTITION, LAST_OFFSET, UPDATED_AT)
VALUES (%(topic)s, %(partition)s, %(last_offset)s, TO_TIMESTAMP_NTZ(%(now)s))
"""

# Landing rows of records that an earlier batch landed already. It scans the
# target table, so it runs only for files whose offsets reach back to or below
# the partition's watermark, which happens only when offsets are consumed again.
_DELETE_PRESENT = """
DELETE FROM {{ params.landing }} AS landing
WHERE landing.LANDING_KEY IN (%(landing_keys)s)
  AND EXISTS (
    SELECT 1 FROM {{ params.target }} AS target
    WHERE target.RECORD_METADATA:topic::VARCHAR = %(topic)s
      AND target.RECORD_METADATA:partition::INTEGER = PARSE_JSON(landing.RECORD_METADATA):partition::INTEGER
      AND target.RECORD_METADATA:offset::INTEGER = PARSE_JSON(landing.RECORD_METADATA):offset::INTEGER
  )
"""

_COUNT_NEW = """
SELECT LANDING_KEY, COUNT(*) FROM {{ params.landing }}
WHERE LANDING_KEY IN (%(landing_keys)s)
GROUP BY LANDING_KEY
"""

_INSERT_EVENTS = """
INSERT INTO {{ params.tables.pos_transactions }} (RECORD_METADATA, RECORD_CONTENT)
SELECT PARSE_JSON(RECORD_METADATA), PARSE_JSON(RECORD_CONTENT)
FROM {{ params.tables.pos_landing }}
WHERE LANDING_KEY IN (%(landing_keys)s)
"""

# NOTE: fakesnow 0.12.1 loads a quoted empty CSV field as NULL, so RAW_BYTES
# of a message with an empty value is NULL locally and empty in Snowflake. It
# also infers column types (a field "t" came back as "true"), which could
# alter the rare base64 text that reads as a boolean.
_INSERT_QUARANTINE = """
INSERT INTO {{ params.tables.pos_quarantine }} (RECORD_METADATA, RAW_BYTES, REASON, DETAIL, QUARANTINED_AT)
SELECT
    PARSE_JSON(RECORD_METADATA), BASE64_DECODE_BINARY(RAW_BASE64), REASON, DETAIL, TO_TIMESTAMP_NTZ(%(now)s)
FROM {{ params.tables.quarantine_landing }}
WHERE LANDING_KEY IN (%(landing_keys)s)
"""

_CLEAR_LANDING = "DELETE FROM {{ params.landing }} WHERE LANDING_KEY IN (%(landing_keys)s)"

_RECORD_LOAD = """
INSERT INTO {{ params.tables.sink_loads }} (
    FILE_NAME, TARGET_TABLE, KAFKA_PARTITION, FIRST_OFFSET, LAST_OFFSET, STATUS,
    ROWS_PARSED, ROWS_LOADED, ROWS_INSERTED, FIRST_ERROR, LOADED_AT
) VALUES (
    %(file_name)s, %(target_table)s, %(partition)s, %(first_offset)s, %(last_offset)s, %(status)s,
    %(rows_parsed)s, %(rows_loaded)s, %(rows_inserted)s, %(first_error)s, TO_TIMESTAMP_NTZ(%(now)s)
)
"""


@dataclass(frozen=True)
class _KindTables:
    landing: str
    target: str
    columns: str
    insert: str


def _kind_tables(tables: Mapping[str, str]) -> dict[FileKind, _KindTables]:
    return {
        "events": _KindTables(
            tables["pos_landing"],
            tables["pos_transactions"],
            "LANDING_KEY, RECORD_METADATA, RECORD_CONTENT",
            _INSERT_EVENTS,
        ),
        "quarantine": _KindTables(
            tables["quarantine_landing"],
            tables["pos_quarantine"],
            "LANDING_KEY, RECORD_METADATA, RAW_BASE64, REASON, DETAIL",
            _INSERT_QUARANTINE,
        ),
    }


@dataclass
class FileLoad:
    """COPY result of one staged file and the number of its rows that were new."""

    staged: StagedFile
    status: str
    rows_parsed: int
    rows_loaded: int
    first_error: str | None
    rows_inserted: int = 0


@dataclass
class BatchResult:
    """Rows a batch added to the target tables and rows it found there already.

    Every message of a batch is counted once: ``landed + quarantined +
    already_present`` equals the batch's message count.
    """

    landed: int = 0
    quarantined: int = 0
    already_present: int = 0
    files: list[FileLoad] = field(default_factory=list)


def _fetch_named(cursor: SnowflakeCursor) -> list[dict[str, Any]]:
    columns = [column[0].lower() for column in cursor.description or []]
    return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


class WarehouseLoader:
    """Load the files of a batch into the warehouse in one transaction."""

    def __init__(self, settings: SinkSettings) -> None:
        self._settings = settings
        self._tables = dict(settings.tables)
        self._kinds = _kind_tables(settings.tables)
        self._conn: SnowflakeConnection | None = None

    def connect(self) -> SnowflakeConnection:
        if self._conn is None:
            from ml_lifecycle.hooks.warehouse import WarehouseHook

            self._conn = WarehouseHook(snowflake_conn_id=self._settings.snowflake_conn_id).get_conn()
            log.info("Connected to the warehouse through connection %s", self._settings.snowflake_conn_id)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _prefix(self, kind: FileKind) -> str:
        return f"{self._settings.topic}/{kind}"

    def load(self, batch_number: int, files: Sequence[StagedFile]) -> BatchResult:
        """PUT ``files`` to the stage, then COPY, deduplicate and insert them in one transaction.

        :raises SinkLoadError: if COPY reports anything but LOADED or LOAD_SKIPPED, or a row count differs.
        """
        conn = self.connect()
        cursor = conn.cursor()
        try:
            for staged in files:
                path = str(staged.path)
                if "'" in path:
                    raise SinkLoadError(
                        f"staged file path {path!r} contains a quote; set --work-dir to another path"
                    )
                cursor.execute(
                    _render(_PUT, path=path, tables=self._tables, prefix=self._prefix(staged.kind))
                )

            cursor.execute("BEGIN")
            try:
                result = self._load_in_transaction(cursor, batch_number, files)
                cursor.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    cursor.execute("ROLLBACK")
                raise
        finally:
            cursor.close()
        return result

    def _load_in_transaction(
        self, cursor: SnowflakeCursor, batch_number: int, files: Sequence[StagedFile]
    ) -> BatchResult:
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        # The watermark is the highest offset per partition landed or
        # quarantined, written in this same transaction, like the offset token
        # the Snowflake Kafka connector keeps. Files above it cannot hold
        # records that are landed already, so they skip the duplicate check.
        cursor.execute(_render(_READ_WATERMARKS, tables=self._tables), {"topic": self._settings.topic})
        watermarks = {int(partition): int(offset) for partition, offset in cursor.fetchall()}
        loads = [self._copy(cursor, batch_number, staged, watermarks) for staged in files]

        # COPY skips a file only after checking that its rows are all in the target table.
        result = BatchResult(files=loads)
        result.already_present = sum(load.staged.rows for load in loads if load.status == "LOAD_SKIPPED")
        for kind, tables in self._kinds.items():
            loaded = [load for load in loads if load.staged.kind == kind and load.status == "LOADED"]
            if not loaded:
                continue
            landing_keys = tuple(load.staged.landing_key for load in loaded)
            binds = {"landing_keys": landing_keys, "topic": self._settings.topic, "now": now}

            consumed_again = tuple(
                load.staged.landing_key
                for load in loaded
                if (load.staged.first_offset or 0) <= watermarks.get(load.staged.partition, -1)
            )
            if consumed_again:
                cursor.execute(
                    _render(_DELETE_PRESENT, landing=tables.landing, target=tables.target),
                    {**binds, "landing_keys": consumed_again},
                )
                result.already_present += cursor.rowcount or 0
            cursor.execute(_render(_COUNT_NEW, landing=tables.landing), binds)
            new_rows = {str(name): int(count) for name, count in cursor.fetchall()}
            for load in loaded:
                load.rows_inserted = new_rows.get(load.staged.landing_key, 0)

            cursor.execute(_render(tables.insert, tables=self._tables), binds)
            inserted = cursor.rowcount or 0
            if inserted != sum(new_rows.values()):
                raise SinkLoadError(
                    f"batch {batch_number}: inserted {inserted} rows into {tables.target}, "
                    f"expected {sum(new_rows.values())} new landing rows; the batch is retried"
                )
            if kind == "events":
                result.landed += inserted
            else:
                result.quarantined += inserted
            cursor.execute(_render(_CLEAR_LANDING, landing=tables.landing), binds)

        last_offsets: dict[int, int] = {}
        for staged in files:
            if staged.last_offset is not None:
                last_offsets[staged.partition] = max(
                    last_offsets.get(staged.partition, -1), staged.last_offset
                )
        for partition, last_offset in sorted(last_offsets.items()):
            watermark = {
                "topic": self._settings.topic,
                "partition": partition,
                "last_offset": last_offset,
                "now": now,
            }
            if partition in watermarks:
                cursor.execute(_render(_RAISE_WATERMARK, tables=self._tables), watermark)
            else:
                cursor.execute(_render(_INSERT_WATERMARK, tables=self._tables), watermark)

        cursor.executemany(
            _render(_RECORD_LOAD, tables=self._tables),
            [
                {
                    "file_name": load.staged.name,
                    "target_table": self._kinds[load.staged.kind].target,
                    "partition": load.staged.partition,
                    "first_offset": load.staged.first_offset,
                    "last_offset": load.staged.last_offset,
                    "status": load.status,
                    "rows_parsed": load.rows_parsed,
                    "rows_loaded": load.rows_loaded,
                    "rows_inserted": load.rows_inserted,
                    "first_error": load.first_error,
                    "now": now,
                }
                for load in loads
            ],
        )
        return result

    def _run_copy(self, cursor: SnowflakeCursor, staged: StagedFile, *, force: bool) -> dict[str, Any]:
        tables = self._kinds[staged.kind]
        cursor.execute(
            _render(
                _COPY,
                landing=tables.landing,
                columns=tables.columns,
                tables=self._tables,
                prefix=self._prefix(staged.kind),
                file_name=staged.name,
                force=force,
            )
        )
        rows = _fetch_named(cursor)
        if len(rows) != 1 or "rows_loaded" not in rows[0]:
            raise SinkLoadError(
                f"COPY of {staged.name} returned {rows!r}, expected one result row for the file; "
                "check that the PUT reached the stage"
            )
        return rows[0]

    def _copy(
        self, cursor: SnowflakeCursor, batch_number: int, staged: StagedFile, watermarks: Mapping[int, int]
    ) -> FileLoad:
        row = self._run_copy(cursor, staged, force=False)
        status = str(row["status"])

        if status == "LOAD_SKIPPED" and not (
            watermarks.get(staged.partition, -1) >= (staged.last_offset or 0)
            and self._rows_present(cursor, staged)
        ):
            # The load history records the file as loaded, but its rows are
            # not all in the target table, as a rolled-back transaction can
            # leave it. So the file is loaded again, and the deduplication
            # step keeps the rows that are there from being doubled.
            log.warning(
                "Batch %d: %s was loaded before but not all of its %d rows are in %s; loading it again",
                batch_number,
                staged.name,
                staged.rows,
                self._kinds[staged.kind].target,
            )
            row = self._run_copy(cursor, staged, force=True)
            status = str(row["status"])

        load = FileLoad(
            staged=staged,
            status=status,
            rows_parsed=int(row.get("rows_parsed") or 0),
            rows_loaded=int(row.get("rows_loaded") or 0),
            first_error=row.get("first_error"),
        )
        if status == "LOAD_SKIPPED":
            return load
        if status != "LOADED" or load.rows_loaded != load.rows_parsed or load.rows_loaded != staged.rows:
            raise SinkLoadError(
                f"COPY of {staged.name} reported status {status}, {load.rows_parsed} rows parsed and "
                f"{load.rows_loaded} loaded (first error: {load.first_error}); expected LOADED with "
                f"{staged.rows} rows. The batch is retried"
            )

        return load

    def _rows_present(self, cursor: SnowflakeCursor, staged: StagedFile) -> bool:
        cursor.execute(
            _render(_COUNT_PRESENT, target=self._kinds[staged.kind].target),
            {
                "topic": self._settings.topic,
                "partition": staged.partition,
                "first_offset": staged.first_offset,
                "last_offset": staged.last_offset,
            },
        )
        row = cursor.fetchone()
        present = int(row[0]) if row else 0
        return present >= staged.rows


# --- Consumer loop -----------------------------------------------------------------------


@dataclass
class SinkTotals:
    """Running totals since the sink started."""

    batches: int = 0
    messages: int = 0
    landed: int = 0
    quarantined: int = 0
    already_present: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "messages": self.messages,
            "landed": self.landed,
            "quarantined": self.quarantined,
            "already_present": self.already_present,
            "quarantine_reasons": dict(sorted(self.reasons.items())),
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }


def peak_rss_mb() -> float:
    """Return the highest resident memory of this process so far, in MiB (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def consumer_config(settings: SinkSettings) -> dict[str, Any]:
    """Build the consumer's settings from the Airflow Kafka connection plus the sink's own."""
    from airflow.providers.apache.kafka.hooks.consume import KafkaConsumerHook

    # KafkaConsumerHook builds its client from the connection extra alone, so
    # the group and commit settings are added to the config it would use and
    # the consumer is created here.
    config = KafkaConsumerHook([settings.topic], kafka_config_id=settings.kafka_conn_id)._build_config()
    config.update(
        {
            "group.id": settings.group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "error_cb": _log_kafka_error,
        }
    )
    if settings.session_timeout_ms is not None:
        config["session.timeout.ms"] = settings.session_timeout_ms
        # Kafka's guidance: heartbeats at most a third of the session timeout.
        config["heartbeat.interval.ms"] = max(1, settings.session_timeout_ms // 3)
    return config


def _log_kafka_error(err: KafkaError) -> None:
    log.warning("Kafka client error: %s", err)


class Sink:
    """Consume the topic in batches and land each batch before committing its offsets."""

    def __init__(
        self,
        settings: SinkSettings,
        *,
        status_file: Path | None = None,
        fail_point: str | None = None,
    ) -> None:
        self.settings = settings
        self.totals = SinkTotals()
        self._status_file = status_file
        self._fail_point = fail_point
        self._stop = threading.Event()
        self._loader = WarehouseLoader(settings)
        self._consumer: Consumer | None = None
        self._last_message_at = time.monotonic()

    def request_stop(self) -> None:
        """Finish the open batch, then stop; safe to call from a signal handler."""
        self._stop.set()

    def start(self) -> None:
        """Connect to the warehouse and subscribe to the topic."""
        from confluent_kafka import Consumer

        self._loader.connect()
        self._consumer = Consumer(consumer_config(self.settings))
        self._consumer.subscribe(
            [self.settings.topic],
            on_assign=lambda _c, partitions: log.info(
                "Assigned partitions %s", [p.partition for p in partitions]
            ),
            on_revoke=lambda _c, partitions: log.info(
                "Revoked partitions %s", [p.partition for p in partitions]
            ),
        )
        log.info(
            "Sink started: group %s, topic %s, batches of at most %d events or %.1f s",
            self.settings.group_id,
            self.settings.topic,
            self.settings.batch_max_events,
            self.settings.batch_max_seconds,
        )

    def close(self) -> None:
        if self._consumer is not None:
            # close() leaves the group, so a restarted sink is assigned at once.
            self._consumer.close()
            self._consumer = None
        self._loader.close()
        log.info("Sink stopped; totals %s", self.totals.as_dict())

    def run(self, exit_when_idle_s: float | None = None) -> None:
        """Land batches until a stop is requested or, with ``exit_when_idle_s``, the topic is drained.

        While one batch loads into the warehouse on a worker thread, the next
        one is consumed and parsed, so the two kinds of work overlap. Loads run
        one at a time and in order, and a batch's offsets are committed only
        after its load has committed.
        """
        batch_number = 0
        in_flight: tuple[Batch, Future[BatchResult]] | None = None
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="warehouse-load") as loader:
            try:
                while not self._stop.is_set():
                    batch = self._collect(batch_number + 1)
                    if in_flight is not None:
                        self._finish(*in_flight)
                        in_flight = None
                    if batch is None:
                        if exit_when_idle_s is not None and self._drained(exit_when_idle_s):
                            log.info("No message for %.1f s and no lag; exiting", exit_when_idle_s)
                            return
                        continue
                    batch_number = batch.number
                    files = batch.close_files()
                    in_flight = (batch, loader.submit(self._load_with_retries, batch, files))
            finally:
                if in_flight is not None:
                    self._finish(*in_flight)

    def _finish(self, batch: Batch, load: Future[BatchResult]) -> None:
        """Wait for a batch's load, then commit its offsets and record it."""
        try:
            result = load.result()
        finally:
            batch.discard()
        self._after_load(batch, result)

    def _collect(self, number: int) -> Batch | None:
        consumer = self._require_consumer()
        batch: Batch | None = None
        deadline = 0.0
        while not self._stop.is_set():
            if batch is None:
                timeout = _IDLE_POLL_S
                requested = min(_CONSUME_CHUNK, self.settings.batch_max_events)
            else:
                timeout = max(0.0, deadline - time.monotonic())
                requested = min(_CONSUME_CHUNK, self.settings.batch_max_events - batch.messages)
            messages = consumer.consume(num_messages=requested, timeout=timeout)

            for msg in messages:
                error = msg.error()
                if error is not None:
                    log.warning("Kafka consumer error on %s[%s]: %s", msg.topic(), msg.partition(), error)
                    continue
                if batch is None:
                    batch = Batch(
                        number, self.settings.topic, self.settings.work_dir, self.settings.max_event_bytes
                    )
                    deadline = batch.started + self.settings.batch_max_seconds
                batch.add(msg)
            if messages:
                self._last_message_at = time.monotonic()

            if batch is None:
                if not messages:
                    return None
                continue
            if batch.messages >= self.settings.batch_max_events or time.monotonic() >= deadline:
                return batch
        return batch

    def _after_load(self, batch: Batch, result: BatchResult) -> None:
        if self._fail_point == FAIL_POINT_AFTER_WAREHOUSE_COMMIT:
            log.error(
                "Fault injection %s=%s: exiting with status %d before committing offsets %s",
                FAIL_POINT_ENV,
                self._fail_point,
                FAIL_POINT_EXIT_CODE,
                batch.describe_offsets(),
            )
            logging.shutdown()
            os._exit(FAIL_POINT_EXIT_CODE)

        self._commit_offsets(batch)
        self._record(batch, result)

    def _load_with_retries(self, batch: Batch, files: Sequence[StagedFile]) -> BatchResult:
        from snowflake.connector.errors import Error as SnowflakeError

        delay = self.settings.retry_backoff_s
        for attempt in range(1, self.settings.max_attempts + 1):
            try:
                return self._loader.load(batch.number, files)
            except (SnowflakeError, SinkLoadError, OSError) as err:
                if attempt == self.settings.max_attempts:
                    log.exception(
                        "Batch %d (offsets %s) failed %d times; giving up without committing offsets",
                        batch.number,
                        batch.describe_offsets(),
                        attempt,
                    )
                    raise
                log.warning(
                    "Batch %d (offsets %s) attempt %d of %d failed, retrying in %.1f s: %s",
                    batch.number,
                    batch.describe_offsets(),
                    attempt,
                    self.settings.max_attempts,
                    delay,
                    err,
                )
                self._loader.close()
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _commit_offsets(self, batch: Batch) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        offsets = [
            TopicPartition(self.settings.topic, partition, last + 1)
            for partition, (_first, last) in sorted(batch.offsets.items())
        ]
        try:
            committed = self._require_consumer().commit(offsets=offsets, asynchronous=False) or []
        except KafkaException as err:
            # The rows are in the warehouse. The partition's next owner consumes
            # these offsets again, and the deduplication step skips them.
            log.warning(
                "Batch %d: committing offsets %s failed: %s", batch.number, batch.describe_offsets(), err
            )
            return
        failed = [tp for tp in committed if tp.error is not None]
        if failed:
            log.warning("Batch %d: offset commit failed for %s", batch.number, failed)

    def _record(self, batch: Batch, result: BatchResult) -> None:
        totals = self.totals
        totals.batches += 1
        totals.messages += batch.messages
        totals.landed += result.landed
        totals.quarantined += result.quarantined
        totals.already_present += result.already_present
        totals.reasons.update(batch.reasons)
        skipped_files = sum(1 for load in result.files if load.status == "LOAD_SKIPPED")
        log.info(
            "Batch %d: offsets %s, %d messages, landed %d, quarantined %d %s, already present %d, "
            "%d files (%d skipped as loaded before), %.2f s",
            batch.number,
            batch.describe_offsets(),
            batch.messages,
            result.landed,
            result.quarantined,
            dict(batch.reasons),
            result.already_present,
            len(result.files),
            skipped_files,
            time.monotonic() - batch.started,
        )
        log.info("Totals: %s", totals.as_dict())
        if self._status_file is not None:
            write_ready_file(self._status_file, totals.as_dict())

    def _drained(self, idle_s: float) -> bool:
        if time.monotonic() - self._last_message_at < idle_s:
            return False
        consumer = self._require_consumer()
        assignment = consumer.assignment()
        if not assignment:
            return False
        return all(self._lag(consumer, tp) == 0 for tp in assignment)

    def _lag(self, consumer: Consumer, tp: Any) -> int:
        from confluent_kafka import TopicPartition

        low, high = consumer.get_watermark_offsets(tp, timeout=_KAFKA_TIMEOUT_S, cached=False)
        position = consumer.position([TopicPartition(tp.topic, tp.partition)])[0].offset
        if position < 0:
            committed = consumer.committed([TopicPartition(tp.topic, tp.partition)], timeout=_KAFKA_TIMEOUT_S)
            position = committed[0].offset if committed[0].offset >= 0 else low
        return int(high - position)

    def _require_consumer(self) -> Consumer:
        if self._consumer is None:
            raise RuntimeError("the sink is not started; call start() first")
        return self._consumer


# --- Command line ----------------------------------------------------------------------------


def settings_from_config(args: argparse.Namespace, work_dir: Path) -> SinkSettings:
    """Combine the configuration named by ``ML_LIFECYCLE_CONFIG`` with the command-line options."""
    from ml_lifecycle.config import load_config

    config = load_config()
    return SinkSettings(
        topic=config.kafka.topic,
        group_id=config.kafka.sink_group,
        kafka_conn_id=config.kafka.conn_id,
        snowflake_conn_id=config.warehouse.conn_id,
        tables=config.warehouse.tables(),
        work_dir=work_dir,
        batch_max_events=args.batch_max_events,
        batch_max_seconds=args.batch_max_seconds,
        max_event_bytes=args.max_event_bytes,
        session_timeout_ms=args.session_timeout_ms,
    )


@contextlib.contextmanager
def _work_directory(path: Path | None) -> Iterator[Path]:
    if path is not None:
        # Files of a batch that did not finish are consumed again, so leftovers go.
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="ml-lifecycle-sink-") as directory:
        yield Path(directory)


def main(argv: list[str] | None = None) -> int:
    """Run the sink until SIGTERM or, with ``--exit-when-idle``, until the topic is drained."""
    parser = argparse.ArgumentParser(description="Land Kafka events in the warehouse in micro-batches.")
    parser.add_argument(
        "--ready-file", type=Path, required=True, help="JSON file written once the sink consumes"
    )
    parser.add_argument(
        "--batch-max-events",
        type=int,
        default=DEFAULT_BATCH_MAX_EVENTS,
        help="close a batch at this many messages",
    )
    parser.add_argument(
        "--batch-max-seconds",
        type=float,
        default=DEFAULT_BATCH_MAX_SECONDS,
        help="close a batch this many seconds after its first message",
    )
    parser.add_argument(
        "--exit-when-idle",
        type=float,
        metavar="SECONDS",
        help="exit once no message arrived for this many seconds and no partition has lag",
    )
    parser.add_argument(
        "--max-event-bytes",
        type=int,
        default=DEFAULT_MAX_EVENT_BYTES,
        help="quarantine message values longer than this many bytes as oversized",
    )
    parser.add_argument(
        "--session-timeout-ms",
        type=int,
        help="consumer group session timeout in milliseconds (default: the connection's or librdkafka's)",
    )
    parser.add_argument(
        "--status-file", type=Path, help="JSON file rewritten with the running totals after each batch"
    )
    parser.add_argument(
        "--work-dir", type=Path, help="directory for the files of the open batch (default: a temporary one)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    fail_point = os.environ.get(FAIL_POINT_ENV) or None
    if fail_point not in (None, FAIL_POINT_AFTER_WAREHOUSE_COMMIT):
        parser.error(
            f"invalid {FAIL_POINT_ENV}={fail_point!r}: "
            f"expected {FAIL_POINT_AFTER_WAREHOUSE_COMMIT!r} or no value"
        )

    with _work_directory(args.work_dir) as work_dir:
        sink = Sink(settings_from_config(args, work_dir), status_file=args.status_file, fail_point=fail_point)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda _signum, _frame: sink.request_stop())
        if fail_point:
            log.warning("Fault injection enabled: %s=%s", FAIL_POINT_ENV, fail_point)

        sink.start()
        try:
            write_ready_file(
                args.ready_file, {"group_id": sink.settings.group_id, "topic": sink.settings.topic}
            )
            sink.run(args.exit_when_idle)
        finally:
            sink.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
