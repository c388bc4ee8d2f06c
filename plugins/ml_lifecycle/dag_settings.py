"""Settings every DAG of the lifecycle shares, built from the configuration at parse time."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pendulum

from ml_lifecycle.config import LifecycleConfig

TAGS = ("ml-lifecycle", "demand-forecast")


def start_date(config: LifecycleConfig) -> pendulum.DateTime:
    """Return the fixed, timezone-aware start date of the schedule."""
    day = config.schedule.start_date
    return pendulum.datetime(day.year, day.month, day.day, tz=config.schedule.timezone)


def end_date(config: LifecycleConfig) -> pendulum.DateTime | None:
    day = config.schedule.end_date
    if day is None:
        return None
    return pendulum.datetime(day.year, day.month, day.day, tz=config.schedule.timezone)


def notify_task_failure(context: Any) -> None:
    """Publish a task failure to the alert topic; never raises, so the original error stays visible."""
    import logging

    from ml_lifecycle.config import load_config

    log = logging.getLogger(__name__)
    ti = context.get("task_instance") or context.get("ti")
    exception = context.get("exception")
    config = load_config()
    message = (
        f"Task {getattr(ti, 'dag_id', '?')}.{getattr(ti, 'task_id', '?')} failed in run "
        f"{context.get('run_id')}, try {getattr(ti, 'try_number', '?')}: {exception}"
    )
    try:
        from airflow.providers.amazon.aws.hooks.sns import SnsHook

        SnsHook(aws_conn_id=config.aws.conn_id).publish_to_target(
            target_arn=config.aws.alert_topic_arn, message=message[:250_000], subject="Airflow task failed"
        )
    except Exception:
        # An unreachable alert topic must not hide the task's own failure.
        log.exception("Could not publish the failure alert to %s", config.aws.alert_topic_arn)


def dag_kwargs(config: LifecycleConfig, *, doc_md: str, tags: tuple[str, ...] = ()) -> dict[str, Any]:
    """Return the DAG arguments shared by the six DAGs: dates, owner, retries, docs, tags."""
    return {
        "start_date": start_date(config),
        "end_date": end_date(config),
        "catchup": False,
        "max_active_runs": 1,
        "doc_md": doc_md,
        "tags": [*TAGS, *tags],
        "default_args": {
            "owner": config.schedule.owner,
            "retries": config.schedule.retries,
            "retry_delay": dt.timedelta(minutes=config.schedule.retry_delay_minutes),
            "on_failure_callback": notify_task_failure,
        },
    }
