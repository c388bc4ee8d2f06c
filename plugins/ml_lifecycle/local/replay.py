"""Replay the sales CSV into Kafka, one event per line, keyed by StockCode.

``replay [FILE] [--topic T] [--kafka-conn-id ID] [--limit N] [--rate EVENTS_PER_S]``
reads a ``.csv`` or ``.csv.gz`` file with the columns of
:data:`ml_lifecycle.ingest.events.EVENT_FIELDS`, produces each line as an
event whose Kafka timestamp is its InvoiceDate, and prints a JSON summary.
The exit status is 0 when every event was delivered, 1 when some were not
and 2 when the file cannot be read.

The Kafka connection comes from Airflow (for a local run, the
``AIRFLOW_CONN_KAFKA_DEFAULT`` environment variable), so the same command
replays into a real cluster when the connection points at one.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gzip
import io
import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ml_lifecycle.config import PROJECT_ROOT, load_config
from ml_lifecycle.ingest.events import (
    EVENT_FIELDS,
    csv_row_to_event,
    event_key,
    event_time_ms,
    serialize_event,
)

log = logging.getLogger("ml_lifecycle.replay")

RETAIL_CSV_ENV = "ML_LIFECYCLE_RETAIL_CSV"
# The UCI Online Retail data, kept next to the checkout rather than in it.
_RETAIL_CSV_BESIDE_PROJECT = (
    PROJECT_ROOT.parent / "shared" / "data" / "online_retail" / "online_retail.csv.gz"
)

# Producer settings added to the connection's. zstd and large batches keep
# the whole data set within the 5 MiB per partition that the local mock
# broker retains. Idempotence keeps retries from writing an event twice.
REPLAY_PRODUCER_SETTINGS: Mapping[str, Any] = {
    "compression.type": "zstd",
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 100,
    "batch.num.messages": 100_000,
    "batch.size": 1_000_000,
    "queue.buffering.max.messages": 500_000,
}

FLUSH_TIMEOUT_S = 120.0
# Delivery errors logged one by one before the rest are only counted.
_LOGGED_DELIVERY_ERRORS = 5
# Produced events between two polls for delivery reports.
_POLL_EVERY = 1_000


class CsvFormatError(ValueError):
    """The replay file does not have the expected header or is not UTF-8 CSV."""


def default_retail_csv() -> Path:
    """Return the sales CSV to replay by default.

    In order: the file named by ``ML_LIFECYCLE_RETAIL_CSV``; the copy beside
    the project; for a checkout cloned from a local directory, the copy beside
    that directory. The first candidate is returned when none exists, so the
    caller's error names the expected place.
    """
    value = os.environ.get(RETAIL_CSV_ENV)
    if value:
        return Path(value)
    candidates = [_RETAIL_CSV_BESIDE_PROJECT]
    origin = _local_clone_origin(PROJECT_ROOT)
    if origin is not None:
        candidates.append(origin.parent / _RETAIL_CSV_BESIDE_PROJECT.relative_to(PROJECT_ROOT.parent))
    return next((candidate for candidate in candidates if candidate.is_file()), candidates[0])


def _local_clone_origin(project_root: Path) -> Path | None:
    """Return the directory this checkout was cloned from, if its origin is a local path."""
    import configparser

    git_config = project_root / ".git" / "config"
    if not git_config.is_file():
        return None
    parser = configparser.ConfigParser(strict=False)
    try:
        parser.read(git_config, encoding="utf-8")
        url = parser.get('remote "origin"', "url", fallback="")
    except configparser.Error:
        return None
    url = url.removeprefix("file://")
    if not url.startswith("/"):
        return None
    origin = Path(url)
    return origin if origin.is_dir() else None


@dataclass
class PartitionRange:
    """Events delivered to one partition and the offsets they got."""

    events: int = 0
    first_offset: int | None = None
    last_offset: int | None = None

    def add(self, offset: int) -> None:
        self.events += 1
        self.first_offset = offset if self.first_offset is None else min(self.first_offset, offset)
        self.last_offset = offset if self.last_offset is None else max(self.last_offset, offset)


@dataclass
class ReplaySummary:
    """Outcome of one replay: counts, per-partition offset ranges and throughput."""

    source: str
    topic: str
    lines_read: int = 0
    events_produced: int = 0
    delivery_failures: int = 0
    failures_by_error: dict[str, int] = field(default_factory=dict)
    lines_without_event_time: int = 0
    partitions: dict[int, PartitionRange] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def events_per_second(self) -> float:
        return self.events_produced / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> str:
        """Serialize the summary, partitions in ascending order."""
        data = asdict(self)
        data["partitions"] = {str(p): asdict(r) for p, r in sorted(self.partitions.items())}
        data["seconds"] = round(self.seconds, 3)
        data["events_per_second"] = round(self.events_per_second, 1)
        return json.dumps(data)


@contextlib.contextmanager
def open_csv_text(path: Path) -> Iterator[io.TextIOBase]:
    """Open a ``.csv`` or ``.csv.gz`` file as UTF-8 text for :mod:`csv`."""
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8", newline="") as stream:
            yield stream
    else:
        with path.open(encoding="utf-8", newline="") as stream:
            yield stream


def check_header(path: Path, header: list[str] | None) -> None:
    """Raise :class:`CsvFormatError` unless ``header`` has exactly the event columns, in any order."""
    if header is None:
        raise CsvFormatError(f"{path} is empty; expected a header line {','.join(EVENT_FIELDS)}")
    missing = [name for name in EVENT_FIELDS if name not in header]
    unexpected = [name for name in header if name not in EVENT_FIELDS]
    duplicated = sorted(name for name, count in Counter(header).items() if count > 1)
    if missing or unexpected or duplicated:
        problems = [
            f"{label} columns {names}"
            for label, names in (("missing", missing), ("unexpected", unexpected), ("duplicated", duplicated))
            if names
        ]
        raise CsvFormatError(
            f"{path} has an unexpected header: {', '.join(problems)}; expected exactly {','.join(EVENT_FIELDS)}"
        )


def read_events(path: Path, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Yield one event per data line of ``path``, at most ``limit`` of them.

    :raises CsvFormatError: if the header differs from the event columns or the file is not UTF-8.
    """
    with open_csv_text(path) as stream:
        reader = csv.DictReader(stream)
        try:
            check_header(path, reader.fieldnames)  # type: ignore[arg-type]
            for count, row in enumerate(reader):
                if limit is not None and count >= limit:
                    return
                yield csv_row_to_event(row)
        except UnicodeDecodeError as err:
            raise CsvFormatError(f"{path} is not UTF-8 after line {reader.line_num}: {err}") from err


def producer_config(kafka_conn_id: str) -> dict[str, Any]:
    """Build the replay producer's settings from an Airflow Kafka connection."""
    from airflow.providers.apache.kafka.hooks.produce import KafkaProducerHook

    # KafkaProducerHook builds its client from the connection extra alone, so
    # the replay settings are added to the config it would use and the
    # producer is created here.
    config = KafkaProducerHook(kafka_config_id=kafka_conn_id)._build_config()
    return {**config, **REPLAY_PRODUCER_SETTINGS}


def replay_file(
    path: Path,
    producer_config: Mapping[str, Any],
    topic: str,
    *,
    limit: int | None = None,
    rate: float | None = None,
    flush_timeout_s: float = FLUSH_TIMEOUT_S,
) -> ReplaySummary:
    """Produce one event per line of ``path`` to ``topic`` and wait for every delivery report.

    :param producer_config: confluent-kafka settings, for example from :func:`producer_config`.
    :param limit: produce at most this many lines.
    :param rate: produce at most this many events per second; None for as fast as possible.
    :raises CsvFormatError: if the file's header differs from the event columns.
    """
    from confluent_kafka import KafkaError, Producer

    summary = ReplaySummary(source=str(path), topic=topic)

    def on_delivery(err: KafkaError | None, msg: Any) -> None:
        if err is None:
            summary.partitions.setdefault(msg.partition(), PartitionRange()).add(msg.offset())
            return
        summary.delivery_failures += 1
        summary.failures_by_error[err.name()] = summary.failures_by_error.get(err.name(), 0) + 1
        if summary.delivery_failures <= _LOGGED_DELIVERY_ERRORS:
            log.error("Delivery to %s failed for key %r: %s", topic, msg.key(), err)

    producer = Producer(dict(producer_config))
    log.info("Replaying %s into topic %s (limit %s, rate %s events/s)", path, topic, limit, rate)
    started = time.monotonic()
    for event in read_events(path, limit):
        summary.lines_read += 1
        try:
            timestamp = event_time_ms(event["InvoiceDate"]) if event["InvoiceDate"] else 0
        except ValueError:
            # The sink quarantines the event; the broker stamps it with the produce time.
            timestamp = 0
        if timestamp == 0:
            summary.lines_without_event_time += 1

        value = serialize_event(event)
        key = event_key(event)
        while True:
            try:
                producer.produce(topic, value=value, key=key, timestamp=timestamp, on_delivery=on_delivery)
                break
            except BufferError:
                # The local queue is full: serve delivery reports to make room.
                producer.poll(0.1)
        summary.events_produced += 1

        if summary.events_produced % _POLL_EVERY == 0:
            producer.poll(0)
        if rate:
            ahead_s = summary.events_produced / rate - (time.monotonic() - started)
            if ahead_s > 0:
                time.sleep(ahead_s)

    undelivered = producer.flush(flush_timeout_s)
    summary.seconds = time.monotonic() - started
    if undelivered:
        log.error("%d events were not delivered to %s within %.0f s", undelivered, topic, flush_timeout_s)
        summary.delivery_failures += undelivered
        summary.failures_by_error["not_delivered_in_time"] = undelivered

    log.info(
        "Replayed %d events into %s in %.1f s (%.0f events/s), %d delivery failures",
        summary.events_produced,
        topic,
        summary.seconds,
        summary.events_per_second,
        summary.delivery_failures,
    )
    return summary


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Run the replay command and return its exit status."""
    parser = argparse.ArgumentParser(prog="replay", description="Replay the sales CSV into Kafka.")
    parser.add_argument(
        "file",
        nargs="?",
        type=Path,
        help=f"a .csv or .csv.gz file with the sales columns (default: ${RETAIL_CSV_ENV} or the UCI data)",
    )
    parser.add_argument("--topic", help="topic to produce to (default: kafka.topic of the configuration)")
    parser.add_argument(
        "--kafka-conn-id",
        help="Airflow connection of the cluster (default: kafka.conn_id of the configuration)",
    )
    parser.add_argument("--limit", type=_positive_int, help="produce at most this many lines")
    parser.add_argument("--rate", type=_positive_float, help="produce at most this many events per second")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    config = load_config()
    path = args.file or default_retail_csv()
    if not path.is_file():
        print(f"replay: {path} not found; pass a CSV file or set {RETAIL_CSV_ENV}", file=sys.stderr)
        return 2
    try:
        summary = replay_file(
            path,
            producer_config(args.kafka_conn_id or config.kafka.conn_id),
            args.topic or config.kafka.topic,
            limit=args.limit,
            rate=args.rate,
        )
    except CsvFormatError as err:
        print(f"replay: {err}", file=sys.stderr)
        return 2
    print(summary.to_json())
    return 1 if summary.delivery_failures else 0


if __name__ == "__main__":
    sys.exit(main())
