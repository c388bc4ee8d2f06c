"""An Airflow task context for running an operator's ``execute`` outside a DAG run.

The benchmarks and the tests run the real operators against the local
services this way. Asset events the operator emits go nowhere, so no other
DAG starts.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any


def manual_task_context(
    params: dict[str, Any] | None = None, *, run_id: str = "manual__local", **overrides: Any
) -> dict[str, Any]:
    """Return the context of a manual run with ``params``; ``overrides`` replace or add keys."""
    context: dict[str, Any] = {
        "params": params or {},
        "run_id": run_id,
        "dag_run": SimpleNamespace(run_type="manual", run_after=None, conf={}),
        "triggering_asset_events": {},
        "outlet_events": defaultdict(lambda: SimpleNamespace(extra={})),
        "logical_date": None,
    }
    context.update(overrides)
    return context
