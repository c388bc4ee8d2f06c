"""Shared behaviour of the operators that work on a window of weeks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from ml_lifecycle.config import LifecycleConfig, load_config
from ml_lifecycle.windows import Window, resolve_window

if TYPE_CHECKING:
    from airflow.sdk import Context

BACKFILL_RUN_TYPES = frozenset({"backfill"})


def run_type_of(context: Context) -> str:
    """Return the run's type as its plain value, such as ``scheduled`` or ``asset_triggered``."""
    dag_run = context.get("dag_run")
    run_type = getattr(dag_run, "run_type", None)
    return str(getattr(run_type, "value", run_type) or "unknown")


def triggering_extras(context: Context) -> list[Mapping[str, Any]]:
    """Return the ``extra`` of every asset event that triggered this run."""
    events_by_asset = context.get("triggering_asset_events") or {}
    extras: list[Mapping[str, Any]] = []
    for events in events_by_asset.values():
        extras.extend(dict(event.extra or {}) for event in events)
    return extras


def is_backfill(context: Context) -> bool:
    """Tell whether this run is a backfill, or was triggered by events of a backfill run."""
    if run_type_of(context) in BACKFILL_RUN_TYPES:
        return True
    return any(extra.get("backfill") for extra in triggering_extras(context))


def context_window(context: Context, timezone: str) -> Window:
    """Resolve the run's window from its parameters, triggering events and dates."""
    dag_run = context.get("dag_run")
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    return resolve_window(
        timezone=timezone,
        params=context.get("params") or {},
        event_extras=triggering_extras(context),
        logical_date=context.get("logical_date"),
        data_interval=(start, end) if start is not None and end is not None else None,
        run_after=getattr(dag_run, "run_after", None),
    )


class LifecycleOperator(BaseOperator):
    """Base class: access to the configuration, the run's window and the outlet events.

    :param config_path: YAML configuration to use instead of the active one (templated).
    """

    template_fields: tuple[str, ...] = ("config_path",)

    def __init__(self, *, config_path: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config_path = config_path

    @property
    def config(self) -> LifecycleConfig:
        if self.config_path:
            from pathlib import Path

            from ml_lifecycle.config import parse_config

            return parse_config(Path(self.config_path))
        return load_config()

    def window(self, context: Context) -> Window:
        window = context_window(context, self.config.schedule.timezone)
        self.log.info("Window %s, resolved from %s", window, window.source)
        return window

    def emit_outlet_events(self, context: Context, window: Window, **extra: Any) -> None:
        """Attach the window and ``extra`` to the events of every outlet asset of this task."""
        payload = {**window.to_extra(), "backfill": is_backfill(context), **extra}
        outlet_events = context["outlet_events"]
        for outlet in self.outlets or []:
            outlet_events[outlet].extra = payload
        self.log.info("Asset event extra: %s", payload)
