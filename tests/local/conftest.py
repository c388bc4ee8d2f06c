"""Fixtures that run the warehouse emulator and the Kafka mock broker on loopback.

Each stack gets its own processes, free ports and data directory, and is
stopped when its fixture ends.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import itertools
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ml_lifecycle.config import PROJECT_ROOT, parse_config
from ml_lifecycle.hooks.warehouse import WarehouseHook, render_statements, schema_files, sql_params
from ml_lifecycle.local.process import ServiceProcess, python_module_command, start_service
from ml_lifecycle.local.replay import default_retail_csv

LOCAL_CONFIG = PROJECT_ROOT / "include" / "config" / "local.yaml"
SINK_TIMEOUT_S = 90.0
# The mock broker keeps a member that left or died in the group until its
# session times out, so every consumer of these tests uses a short session.
# 3000 ms lets the next member join about 2 s later; 1000 ms never joins,
# because heartbeats are then too rare.
MOCK_SESSION_TIMEOUT_MS = 3000
_stack_numbers = itertools.count(1)


@dataclass
class SinkRun:
    """Exit status, log and status-file totals of one sink process."""

    returncode: int
    log: str
    totals: dict[str, Any] = field(default_factory=dict)


@dataclass
class LocalStack:
    """A running warehouse emulator and Kafka broker, with the schema applied."""

    run_dir: Path
    config_path: Path
    topic: str
    group_id: str
    warehouse: ServiceProcess
    broker: ServiceProcess
    _sink_runs: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def bootstrap_servers(self) -> str:
        return str(self.broker.info["bootstrap_servers"])

    @property
    def env(self) -> dict[str, str]:
        """Return the variables that point Airflow connections and the configuration at this stack."""
        snowflake_extra = {
            "account": "local",
            "database": "LIFECYCLE",
            "warehouse": "COMPUTE_WH",
            "role": "SYSADMIN",
            "host": "127.0.0.1",
            "port": self.warehouse.info["port"],
            "protocol": "http",
        }
        return {
            "AIRFLOW_CONN_SNOWFLAKE_DEFAULT": json.dumps(
                {
                    "conn_type": "snowflake",
                    "login": "local",
                    "password": "local",
                    "schema": "RAW",
                    "extra": snowflake_extra,
                }
            ),
            "AIRFLOW_CONN_KAFKA_DEFAULT": json.dumps(
                {"conn_type": "kafka", "extra": {"bootstrap.servers": self.bootstrap_servers}}
            ),
            "ML_LIFECYCLE_CONFIG": str(self.config_path),
        }

    def fetch(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        return WarehouseHook(snowflake_conn_id="snowflake_default").fetch_dicts(sql, parameters)

    def scalar(self, sql: str, parameters: Mapping[str, Any] | None = None) -> Any:
        rows = self.fetch(sql, parameters)
        return next(iter(rows[0].values()))

    def execute(self, sql: str, parameters: Mapping[str, Any] | None = None) -> int:
        return WarehouseHook(snowflake_conn_id="snowflake_default").run_script([sql], parameters)[0]

    def run_sink(
        self, *args: str, env: Mapping[str, str] | None = None, timeout_s: float = SINK_TIMEOUT_S
    ) -> SinkRun:
        """Run the sink process until it exits and return its status, log and totals."""
        number = next(self._sink_runs)
        name = f"sink-{number}"
        status_file = self.run_dir / f"{name}-status.json"
        service = start_service(
            name,
            python_module_command(
                "ml_lifecycle.local.sink",
                "--status-file",
                str(status_file),
                "--session-timeout-ms",
                str(MOCK_SESSION_TIMEOUT_MS),
                *args,
            ),
            run_dir=self.run_dir,
            log_dir=self.run_dir,
            env={**os.environ, **self.env, **(env or {})},
        )
        try:
            returncode = service.process.wait(timeout=timeout_s)
        finally:
            service.stop()
        totals = json.loads(status_file.read_text(encoding="utf-8")) if status_file.exists() else {}
        return SinkRun(returncode, service.log_path.read_text(encoding="utf-8", errors="replace"), totals)

    def produce_raw(self, messages: Sequence[tuple[bytes | None, bytes | None]]) -> None:
        """Produce ``(key, value)`` pairs exactly as given, without the replay producer's encoding."""
        from confluent_kafka import Producer

        failures: list[str] = []
        producer = Producer({"bootstrap.servers": self.bootstrap_servers})
        for key, value in messages:
            producer.produce(
                self.topic,
                key=key,
                value=value,
                on_delivery=lambda err, _msg: err and failures.append(str(err)),
            )
        assert producer.flush(30) == 0
        assert failures == []

    def end_offsets(self) -> dict[int, int]:
        from confluent_kafka import TopicPartition
        from confluent_kafka.admin import AdminClient, OffsetSpec

        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
        partitions = self._partitions()
        futures = admin.list_offsets({TopicPartition(self.topic, p): OffsetSpec.latest() for p in partitions})
        return {tp.partition: future.result().offset for tp, future in futures.items()}

    def committed_offsets(self) -> dict[int, int]:
        from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
        request = ConsumerGroupTopicPartitions(
            self.group_id, [TopicPartition(self.topic, p) for p in self._partitions()]
        )
        result = admin.list_consumer_group_offsets([request])[self.group_id].result()
        return {tp.partition: tp.offset for tp in result.topic_partitions}

    def reset_group_offsets(self) -> None:
        """Commit offset 0 for every partition as a member of the sink's group.

        The mock broker accepts ``alter_consumer_group_offsets`` but does not
        apply it, and rejects commits from consumers outside the group.
        """
        from confluent_kafka import Consumer, TopicPartition

        assigned: list[Any] = []
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap_servers,
                "group.id": self.group_id,
                "enable.auto.commit": False,
                "session.timeout.ms": MOCK_SESSION_TIMEOUT_MS,
                "heartbeat.interval.ms": MOCK_SESSION_TIMEOUT_MS // 3,
            }
        )
        try:
            consumer.subscribe([self.topic], on_assign=lambda _c, partitions: assigned.extend(partitions))
            deadline = time.monotonic() + 30
            while not assigned and time.monotonic() < deadline:
                consumer.poll(0.2)
            assert assigned, f"not assigned any partition of {self.topic} within 30 s"
            offsets = [TopicPartition(self.topic, tp.partition, 0) for tp in assigned]
            consumer.commit(offsets=offsets, asynchronous=False)
        finally:
            consumer.close()

    def _partitions(self) -> list[int]:
        return list(range(int(self.broker.info["partitions"][self.topic])))

    def stop(self) -> None:
        self.broker.stop()
        self.warehouse.stop()


def start_local_stack(run_dir: Path, topic: str = "pos_transactions") -> LocalStack:
    """Start the warehouse emulator and the broker, and write a configuration that names the test topic."""
    number = next(_stack_numbers)
    group_id = f"snowflake-sink-test-{number}"
    config_path = run_dir / "lifecycle.yaml"
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path.write_text(
        f"extends: {LOCAL_CONFIG}\nkafka:\n  topic: {topic}\n  sink_group: {group_id}\n", encoding="utf-8"
    )

    warehouse = start_service(
        "warehouse",
        python_module_command(
            "ml_lifecycle.local.warehouse_server", "--data-dir", str(run_dir / "warehouse")
        ),
        run_dir=run_dir,
        log_dir=run_dir,
    )
    try:
        broker = start_service(
            "broker",
            python_module_command("ml_lifecycle.local.kafka_broker", "--topic", topic),
            run_dir=run_dir,
            log_dir=run_dir,
        )
    except BaseException:
        warehouse.stop()
        raise
    return LocalStack(run_dir, config_path, topic, group_id, warehouse, broker)


def apply_schema(stack: LocalStack) -> None:
    config = parse_config(stack.config_path)
    statements = render_statements(schema_files(), sql_params(config))
    hook = WarehouseHook(snowflake_conn_id=config.warehouse.conn_id)
    with hook.get_conn() as conn:
        cursor = conn.cursor()
        for statement in statements:
            cursor.execute(statement)
        cursor.close()


@contextlib.contextmanager
def running_stack(run_dir: Path) -> Iterator[LocalStack]:
    """Start a stack, point this process's connections and configuration at it, and stop it afterwards."""
    stack = start_local_stack(run_dir)
    try:
        with pytest.MonkeyPatch.context() as monkeypatch:
            for name, value in stack.env.items():
                monkeypatch.setenv(name, value)
            apply_schema(stack)
            yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Return a stack shared by the tests of one module."""
    with running_stack(tmp_path_factory.mktemp("stack")) as stack:
        yield stack


@pytest.fixture
def fresh_local_stack(tmp_path: Path) -> Iterator[LocalStack]:
    """Return a stack of its own for one test."""
    with running_stack(tmp_path / "stack") as stack:
        yield stack


SLICE_LINES = 20_000


@dataclass(frozen=True)
class RetailSlice:
    """The first lines of the sales CSV, as a file and as rows read with :mod:`csv`."""

    path: Path
    rows: list[dict[str, str]]


@pytest.fixture(scope="session")
def retail_slice(tmp_path_factory: pytest.TempPathFactory) -> RetailSlice:
    """Cut the first SLICE_LINES data lines of the sales CSV into a gzip file."""
    source = default_retail_csv()
    if not source.is_file():
        pytest.fail(f"sales data {source} not found; set ML_LIFECYCLE_RETAIL_CSV to online_retail.csv.gz")
    target = tmp_path_factory.mktemp("data") / "online_retail_slice.csv.gz"
    with gzip.open(source, "rt", encoding="utf-8", newline="") as reader:
        lines = list(itertools.islice(reader, SLICE_LINES + 1))
    with gzip.open(target, "wt", encoding="utf-8", newline="") as writer:
        writer.writelines(lines)
    with gzip.open(target, "rt", encoding="utf-8", newline="") as stream:
        rows = list(csv.DictReader(stream))
    return RetailSlice(target, rows)
