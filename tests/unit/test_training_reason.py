"""The reason recorded for a training run that was given none."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from ml_lifecycle.operators.training import default_reason


def context(run_type: str, backfill_event: bool = False) -> Any:
    events = {"weekly_demand_features": [SimpleNamespace(extra={"backfill": True})]} if backfill_event else {}
    return {"dag_run": SimpleNamespace(run_type=run_type), "triggering_asset_events": events}


@pytest.mark.parametrize(
    ("run_type", "reason"),
    [
        ("backfill", "backfill"),
        ("asset_triggered", "new features"),
        ("scheduled", "scheduled weekly retraining"),
        ("manual", "manual run"),
    ],
)
def test_reason_follows_run_type(run_type: str, reason: str) -> None:
    assert default_reason(context(run_type)) == reason


def test_backfill_features_give_backfill() -> None:
    assert default_reason(context("asset_triggered", backfill_event=True)) == "backfill"
