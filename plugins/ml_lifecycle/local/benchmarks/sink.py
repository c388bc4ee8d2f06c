"""Sink benchmark: the retail file replayed through the broker while the sink runs.

It reports the events per second from the start of the replay to the last
landed row, the bare consume rate of the same broker, their ratio, and the
sink's peak memory for the whole file and for a quarter of it.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from ml_lifecycle.local.process import python_module_command, start_service
from ml_lifecycle.local.stack import LOCAL_CONFIG, SINK_SESSION_TIMEOUT_MS, LocalStack

log = logging.getLogger("ml_lifecycle.benchmarks.sink")


def bare_consume_rate(bootstrap_servers: str, topic: str, expected: int, timeout_s: float = 120.0) -> float:
    """Read every message of ``topic`` with a plain consumer in a new group; return messages per second."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"bench-bare-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": SINK_SESSION_TIMEOUT_MS,
        }
    )
    consumer.subscribe([topic])
    received = 0
    started: float | None = None
    deadline = time.monotonic() + timeout_s
    try:
        while received < expected and time.monotonic() < deadline:
            messages = consumer.consume(num_messages=10_000, timeout=1.0)
            if messages and started is None:
                # Timing starts with the first message, after the group join.
                started = time.perf_counter()
            received += sum(1 for message in messages if message.error() is None)
    finally:
        consumer.close()
    if started is None or received < expected:
        raise TimeoutError(
            f"the bare consumer read {received:,} of {expected:,} messages in {timeout_s:.0f} s"
        )
    return received / (time.perf_counter() - started)


def write_head(source: Path, target: Path, lines: int) -> int:
    """Copy the header and the first ``lines`` data lines of a gzip CSV into ``target``; return the count."""
    with gzip.open(source, "rt", encoding="utf-8", newline="") as reader:
        rows = list(itertools.islice(csv.DictReader(reader), lines))
    with target.open("w", encoding="utf-8", newline="") as writer:
        csv_writer = csv.DictWriter(writer, fieldnames=list(rows[0]))
        csv_writer.writeheader()
        csv_writer.writerows(rows)
    return len(rows)


def run_sink_pass(source: Path, batch_max_events: int, root: Path) -> dict[str, Any]:
    """Start a fresh stack, run the sink while replaying ``source``, and time the pipeline."""
    from ml_lifecycle.local.replay import producer_config, replay_file

    stack = LocalStack(
        root=root, config_path=LOCAL_CONFIG, with_airflow=False, with_sink=False, with_aws=False
    )
    stack.start()
    saved = dict(os.environ)
    os.environ.update(stack.connection_env())
    status_file = stack.layout.run / "sink-status.json"
    try:
        sink = start_service(
            "sink",
            python_module_command(
                "ml_lifecycle.local.sink",
                "--session-timeout-ms",
                str(SINK_SESSION_TIMEOUT_MS),
                "--batch-max-events",
                str(batch_max_events),
                "--status-file",
                str(status_file),
                "--work-dir",
                str(root / "sink"),
            ),
            run_dir=stack.layout.run,
            log_dir=stack.layout.logs,
            env={**os.environ, **stack.connection_env()},
        )
        try:
            started = time.perf_counter()
            replay = replay_file(source, producer_config("kafka_default"), stack.config.kafka.topic)
            replayed = time.perf_counter()
            totals = stack.wait_for_sink(replay.events_produced, timeout_s=600)
            landed = time.perf_counter()
        finally:
            sink.stop()
        totals = json.loads(status_file.read_text(encoding="utf-8"))
        bare = bare_consume_rate(
            stack.services["kafka"].info["bootstrap_servers"],
            stack.config.kafka.topic,
            replay.events_produced,
        )
    finally:
        os.environ.clear()
        os.environ.update(saved)
        stack.stop()
    events = replay.events_produced
    return {
        "events": events,
        "batch_max_events": batch_max_events,
        "replay_seconds": round(replayed - started, 2),
        "replay_to_landed_seconds": round(landed - started, 2),
        "replay_to_landed_events_per_s": round(events / (landed - started)),
        "bare_consume_events_per_s": round(bare),
        "ratio_to_bare_consume": round(events / (landed - started) / bare, 3),
        "sink_peak_rss_mb": totals.get("peak_rss_mb"),
        "landed": totals.get("landed"),
        "quarantined": totals.get("quarantined"),
        "batches": totals.get("batches"),
    }


def bench_sink(source: Path, batch_max_events: int) -> dict[str, Any]:
    """Measure the whole file, then a quarter of it with the same batch size, each on a fresh stack."""
    with tempfile.TemporaryDirectory(prefix="bench-sink-") as directory:
        root = Path(directory)
        whole = run_sink_pass(source, batch_max_events, root / "whole")
        quarter_file = root / "quarter.csv"
        write_head(source, quarter_file, whole["events"] // 4)
        quarter = run_sink_pass(quarter_file, batch_max_events, root / "quarter")
    return {
        "whole_file": whole,
        "quarter_file": quarter,
        "peak_rss_ratio_whole_to_quarter": round(whole["sink_peak_rss_mb"] / quarter["sink_peak_rss_mb"], 2),
    }
