"""Check that every Kafka event of the POS topic landed in the warehouse exactly once."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from ml_lifecycle.exceptions import LoadCheckFailed, LoadCheckLagging
from ml_lifecycle.hooks.warehouse import WarehouseHook, render_sql_file, sql_params
from ml_lifecycle.ingest.reconciliation import (
    RETRYABLE_KINDS,
    AccountedOffsets,
    KafkaPartitionOffsets,
    LoadHistoryEntry,
    PartitionReport,
    Problem,
    check_freshness,
    check_load_history,
    format_problems,
    reconcile_topic,
)
from ml_lifecycle.operators.base import LifecycleOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

SQL_DIR = "pos_load_check"
KAFKA_TIMEOUT_S = 30.0


class PosLoadCheckOperator(LifecycleOperator):
    """Reconcile Kafka offsets of the POS topic with the rows landed in Snowflake.

    For every partition it compares the log-end offset and the sink group's
    committed offset (read with the Airflow Kafka provider's admin hook) with
    the offsets landed or quarantined in the warehouse, and reports missing
    offset ranges, duplicates, consumer lag and "landed, commit pending". For
    the run's window it checks freshness, and it checks the warehouse's load
    history for files that did not load completely. One audit row per
    partition is written whether the check passes or not.

    :param kafka_conn_id: Airflow connection to the Kafka cluster (templated).
    :param snowflake_conn_id: Airflow connection to Snowflake (templated).
    :param topic: the POS topic; defaults to the configured one (templated).
    :param group_id: the sink's consumer group; defaults to the configured one (templated).
    :raises LoadCheckLagging: when the only problems are lag or staleness, which
        retries can outwait.
    :raises LoadCheckFailed: on gaps, duplicates or load errors; not retried.
    """

    template_fields: tuple[str, ...] = (
        *LifecycleOperator.template_fields,
        "kafka_conn_id",
        "snowflake_conn_id",
        "topic",
        "group_id",
    )
    ui_color = "#e8f4ea"

    def __init__(
        self,
        *,
        kafka_conn_id: str | None = None,
        snowflake_conn_id: str | None = None,
        topic: str | None = None,
        group_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.kafka_conn_id = kafka_conn_id
        self.snowflake_conn_id = snowflake_conn_id
        self.topic = topic
        self.group_id = group_id

    def execute(self, context: Context) -> dict[str, Any]:
        config = self.config
        topic = self.topic or config.kafka.topic
        group_id = self.group_id or config.kafka.sink_group
        window = self.window(context)

        kafka_offsets = self.read_kafka_offsets(self.kafka_conn_id or config.kafka.conn_id, topic, group_id)
        warehouse = WarehouseHook(snowflake_conn_id=self.snowflake_conn_id or config.warehouse.conn_id)
        params = sql_params(config)
        bindings = {"topic": topic, **window.sql_parameters(), "raw_schema": config.warehouse.raw_schema}

        accounted = self.read_accounted_offsets(warehouse, params, bindings)
        reports = reconcile_topic(kafka_offsets, accounted)

        window_rows, newest_event = self.read_window_stats(warehouse, params, bindings)
        topic_problems: list[Problem] = check_freshness(
            newest_event, window.local_end, dt.timedelta(hours=config.load_check.max_staleness_hours)
        )
        load_history = [
            LoadHistoryEntry(
                file_name=row["FILE_NAME"],
                status=row["STATUS"],
                rows_parsed=row["ROWS_PARSED"],
                rows_loaded=row["ROWS_LOADED"],
                first_error=row["FIRST_ERROR"],
            )
            for row in warehouse.fetch_dicts(render_sql_file(f"{SQL_DIR}/load_errors.sql", params), bindings)
        ]
        topic_problems.extend(check_load_history(load_history))

        problems = [problem for report in reports for problem in report.problems] + topic_problems
        self.write_audit_rows(
            warehouse=warehouse,
            params=params,
            context=context,
            window=window,
            topic=topic,
            reports=reports,
            window_rows=window_rows,
            topic_problems=topic_problems,
        )
        summary = self.summarize(topic, reports, window_rows, newest_event)
        self.log.info("Load check of %s for %s: %s", topic, window, summary)
        for report in reports:
            if report.commit_pending:
                self.log.warning(
                    "Partition %d: %d offsets landed but not committed by group %s yet (committed %s, log end %d)",
                    report.partition,
                    report.commit_pending,
                    group_id,
                    report.kafka.committed,
                    report.kafka.log_end,
                )

        if problems:
            message = (
                f"load check of topic {topic} for {window} found {len(problems)} problems:\n"
                + format_problems(problems)
            )
            if all(problem.kind in RETRYABLE_KINDS for problem in problems):
                raise LoadCheckLagging(message)
            raise LoadCheckFailed(message)

        self.emit_outlet_events(
            context, window, rows=summary["window_rows"], landed_rows=summary["landed_rows"], topic=topic
        )
        return summary

    def read_kafka_offsets(
        self, kafka_conn_id: str, topic: str, group_id: str
    ) -> list[KafkaPartitionOffsets]:
        """Read log-start, log-end and the group's committed offset of every partition."""
        from airflow.providers.apache.kafka.hooks.client import KafkaAdminClientHook
        from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
        from confluent_kafka.admin import OffsetSpec

        admin = KafkaAdminClientHook(kafka_config_id=kafka_conn_id).get_conn
        metadata = admin.list_topics(topic=topic, timeout=KAFKA_TIMEOUT_S)
        topic_metadata = metadata.topics.get(topic)
        if topic_metadata is None or topic_metadata.error is not None or not topic_metadata.partitions:
            error = topic_metadata.error if topic_metadata is not None else "not in the cluster metadata"
            raise LoadCheckFailed(
                f"topic {topic!r} cannot be read: {error}; check kafka_conn_id {kafka_conn_id!r}"
            )
        partitions = [TopicPartition(topic, partition) for partition in sorted(topic_metadata.partitions)]

        def list_offsets(spec: Any) -> dict[int, int]:
            futures = admin.list_offsets(
                {partition: spec for partition in partitions}, request_timeout=KAFKA_TIMEOUT_S
            )
            return {partition.partition: future.result().offset for partition, future in futures.items()}

        log_start = list_offsets(OffsetSpec.earliest())
        log_end = list_offsets(OffsetSpec.latest())
        futures = admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group_id, partitions)], request_timeout=KAFKA_TIMEOUT_S
        )
        committed: dict[int, int | None] = {}
        for future in futures.values():
            for partition in future.result().topic_partitions:
                # A negative offset is librdkafka's "no committed offset" marker.
                committed[partition.partition] = partition.offset if partition.offset >= 0 else None

        offsets = [
            KafkaPartitionOffsets(
                partition=partition.partition,
                log_start=log_start[partition.partition],
                log_end=log_end[partition.partition],
                committed=committed.get(partition.partition),
            )
            for partition in partitions
        ]
        self.log.info("Kafka offsets of %s for group %s: %s", topic, group_id, offsets)
        return offsets

    def read_accounted_offsets(
        self, warehouse: WarehouseHook, params: dict[str, Any], bindings: dict[str, Any]
    ) -> list[AccountedOffsets]:
        """Read what the warehouse accounts for per partition: counts, offset range, gaps and duplicates."""
        gaps: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for row in warehouse.fetch_dicts(render_sql_file(f"{SQL_DIR}/offset_gaps.sql", params), bindings):
            gaps[row["KAFKA_PARTITION"]].append((int(row["GAP_START"]), int(row["GAP_END"])))
        duplicates: dict[int, list[int]] = defaultdict(list)
        for row in warehouse.fetch_dicts(
            render_sql_file(f"{SQL_DIR}/duplicate_offsets.sql", params), bindings
        ):
            duplicates[row["KAFKA_PARTITION"]].append(int(row["KAFKA_OFFSET"]))

        return [
            AccountedOffsets(
                partition=int(row["KAFKA_PARTITION"]),
                landed_rows=int(row["LANDED_ROWS"] or 0),
                quarantined_rows=int(row["QUARANTINED_ROWS"] or 0),
                distinct_offsets=int(row["DISTINCT_OFFSETS"] or 0),
                min_offset=None if row["MIN_OFFSET"] is None else int(row["MIN_OFFSET"]),
                max_offset=None if row["MAX_OFFSET"] is None else int(row["MAX_OFFSET"]),
                inner_gaps=tuple(gaps[row["KAFKA_PARTITION"]]),
                duplicate_examples=tuple(duplicates[row["KAFKA_PARTITION"]]),
            )
            for row in warehouse.fetch_dicts(
                render_sql_file(f"{SQL_DIR}/accounted_offsets.sql", params), bindings
            )
        ]

    def read_window_stats(
        self, warehouse: WarehouseHook, params: dict[str, Any], bindings: dict[str, Any]
    ) -> tuple[dict[int, int], dt.datetime | None]:
        """Return the window's row count per partition and the newest event time before the window end."""
        rows = warehouse.fetch_dicts(render_sql_file(f"{SQL_DIR}/window_stats.sql", params), bindings)
        per_partition = {int(row["KAFKA_PARTITION"]): int(row["WINDOW_ROWS"] or 0) for row in rows}
        newest = max((row["NEWEST_EVENT"] for row in rows if row["NEWEST_EVENT"] is not None), default=None)
        return per_partition, newest

    def write_audit_rows(
        self,
        *,
        warehouse: WarehouseHook,
        params: dict[str, Any],
        context: Context,
        window: Any,
        topic: str,
        reports: list[PartitionReport],
        window_rows: dict[int, int],
        topic_problems: list[Problem],
    ) -> None:
        """Replace this run's audit rows: one per partition, topic-wide problems repeated on each."""
        statement = render_sql_file(f"{SQL_DIR}/insert_audit.sql", params)
        run_id = context["run_id"]
        topic_messages = [problem.message for problem in topic_problems]
        steps: list[tuple[str, dict[str, Any] | None]] = [
            (render_sql_file(f"{SQL_DIR}/delete_audit.sql", params), {"dag_run_id": run_id})
        ]
        for report in reports:
            messages = [problem.message for problem in report.problems] + topic_messages
            steps.append(
                (
                    statement,
                    {
                        "dag_run_id": run_id,
                        "window_start": window.local_start.isoformat(sep=" "),
                        "window_end": window.local_end.isoformat(sep=" "),
                        "topic": topic,
                        "partition": report.partition,
                        "log_start": report.kafka.log_start,
                        "log_end": report.kafka.log_end,
                        "committed": report.kafka.committed,
                        "landed_rows": report.accounted.landed_rows,
                        "quarantined_rows": report.accounted.quarantined_rows,
                        "distinct_offsets": report.accounted.distinct_offsets,
                        "missing_offsets": report.missing_offsets,
                        "duplicate_rows": report.accounted.duplicate_rows,
                        "consumer_lag": report.consumer_lag,
                        "window_rows": window_rows.get(report.partition, 0),
                        "commit_pending": report.commit_pending,
                        "passed": not messages,
                        "problems": "\n".join(messages) or None,
                    },
                )
            )
        warehouse.run_in_transaction(steps)

    @staticmethod
    def summarize(
        topic: str,
        reports: list[PartitionReport],
        window_rows: dict[int, int],
        newest_event: dt.datetime | None,
    ) -> dict[str, Any]:
        """Return the run's totals, returned as the task's XCom value."""
        return {
            "topic": topic,
            "partitions": len(reports),
            "log_end_offsets": sum(report.kafka.log_end for report in reports),
            "landed_rows": sum(report.accounted.landed_rows for report in reports),
            "quarantined_rows": sum(report.accounted.quarantined_rows for report in reports),
            "missing_offsets": sum(report.missing_offsets for report in reports),
            "duplicate_rows": sum(report.accounted.duplicate_rows for report in reports),
            "consumer_lag": sum(report.consumer_lag for report in reports),
            "commit_pending": sum(report.commit_pending for report in reports),
            "window_rows": sum(window_rows.values()),
            "newest_event": newest_event.isoformat() if newest_event else None,
            # Events in the log (log_end_offsets, from offset 0) against rows
            # landed or quarantined: equal exactly when nothing is lost or doubled.
            "accounted_rows": sum(report.accounted.rows for report in reports),
            "balanced": all(
                report.kafka.log_end == report.accounted.rows == report.accounted.distinct_offsets
                for report in reports
            ),
        }
