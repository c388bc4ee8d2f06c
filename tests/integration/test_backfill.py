"""`airflow backfill create` of forecast_training through a running scheduler.

The stack runs the real Airflow components. Features for July to November
2011 are built first, then eight past weekly runs are backfilled. Each must
give one model version, keyed by the week its run closes and trained only on
the weeks before it; none may be deployed. Backfilling a week again registers
nothing new.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ml_lifecycle.aws.registry import ModelRegistry
from ml_lifecycle.local.replay import producer_config, replay_file
from ml_lifecycle.local.stack import AIRFLOW_USER, AirflowClient, LocalStack, airflow_executable
from ml_lifecycle.local.task_context import manual_task_context

from .conftest import SINK_TIMEOUT_S, TEST_CONFIG

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Runs are queued for Monday 08:00 London time, so the last day is included
# by ending the range on the Tuesday.
BACKFILL_FROM = "2011-10-03"
BACKFILL_TO = "2011-11-22"
RERUN_TO = "2011-10-04"
BACKFILL_WEEKS = [dt.date(2011, 10, 3) + dt.timedelta(days=7 * week) for week in range(8)]
FEATURE_WINDOW = {"window_end": "2011-11-21", "weeks": 20}
BACKFILL_TIMEOUT_S = 900.0


def build_features(params: dict[str, Any]) -> dict[str, Any]:
    """Run the features operator outside Airflow, so no asset event starts other DAGs."""
    from ml_lifecycle.operators.features import SnowflakeWeeklyFeaturesOperator

    context = manual_task_context(params, run_id="manual__features_for_backfill")
    return SnowflakeWeeklyFeaturesOperator(task_id="build_weekly_features").execute(context)


def run_airflow(stack: LocalStack, *arguments: str) -> str:
    env = {**os.environ, **stack.connection_env(), **stack.airflow_env()}
    result = subprocess.run(
        [airflow_executable(), *arguments], env=env, capture_output=True, text=True, check=False, timeout=300
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result.stdout


def wait_for_latest_backfill(client: AirflowClient) -> list[dict[str, Any]]:
    """Wait until the newest backfill is complete; return the DAG's backfill runs."""
    deadline = time.monotonic() + BACKFILL_TIMEOUT_S
    backfill: dict[str, Any] = {}
    while time.monotonic() < deadline:
        backfills = client.get("/api/v2/backfills", dag_id="forecast_training", limit=100)["backfills"]
        backfill = max(backfills, key=lambda item: item["id"])
        if backfill["completed_at"] is not None:
            runs = client.get("/api/v2/dags/forecast_training/dagRuns", limit=100)["dag_runs"]
            return [run for run in runs if run["run_type"] == "backfill"]
        time.sleep(3)
    raise AssertionError(f"backfill {backfill} did not complete in {BACKFILL_TIMEOUT_S:.0f} s")


@pytest.fixture(scope="module")
def backfilled(
    tmp_path_factory: pytest.TempPathFactory, retail_slice: tuple[Path, int], airflow_db: Path
) -> Iterator[dict[str, Any]]:
    stack = LocalStack(root=tmp_path_factory.mktemp("backfill"), config_path=TEST_CONFIG, with_airflow=False)
    saved = dict(os.environ)
    try:
        stack.start()
        os.environ.update(stack.connection_env())
        path, lines = retail_slice
        replay_file(path, producer_config("kafka_default"), stack.config.kafka.topic)
        stack.wait_for_sink(lines, SINK_TIMEOUT_S)
        features = build_features(FEATURE_WINDOW)

        stack.start_airflow()
        client = AirflowClient(stack.api_url, AIRFLOW_USER, stack.airflow_password or "")
        run_airflow(
            stack, "backfill", "create", "--dag-id", "forecast_training",
            "--from-date", BACKFILL_FROM, "--to-date", BACKFILL_TO,
        )  # fmt: skip
        runs = wait_for_latest_backfill(client)
        registry = ModelRegistry("aws_default", stack.config.aws.model_package_group)
        versions_after_backfill = registry.versions()

        # The same week again: the run succeeds and registers nothing new.
        run_airflow(
            stack, "backfill", "create", "--dag-id", "forecast_training",
            "--from-date", BACKFILL_FROM, "--to-date", RERUN_TO, "--reprocess-behavior", "completed",
        )  # fmt: skip
        rerun = wait_for_latest_backfill(client)
        deployments = client.get("/api/v2/dags/endpoint_deployment/dagRuns")["dag_runs"]
        yield {
            "features": features,
            "runs": runs,
            "rerun": rerun,
            "versions": versions_after_backfill,
            "versions_after_rerun": registry.versions(),
            "deployments": deployments,
            "registry": registry,
        }
    finally:
        os.environ.clear()
        os.environ.update(saved)
        stack.stop()


def test_backfill_runs_one_per_week(backfilled: dict[str, Any]) -> None:
    runs = backfilled["runs"]

    assert len(runs) == 8
    assert {run["state"] for run in runs} == {"success"}
    assert sorted(run["run_after"][:10] for run in runs) == [str(week) for week in BACKFILL_WEEKS]


def test_versions_keyed_by_week(backfilled: dict[str, Any]) -> None:
    versions = {version.training_key: version for version in backfilled["versions"]}

    assert set(versions) == {f"{week:%Y%m%d}-w13-fast" for week in BACKFILL_WEEKS}


def test_versions_trained_before_week(backfilled: dict[str, Any]) -> None:
    registry = backfilled["registry"]
    for version in backfilled["versions"]:
        window_end = dt.date.fromisoformat(version.properties["window_end"])
        evaluation = registry.download_json(version.model_data_url.replace("model.tar.gz", "evaluation.json"))
        holdout_weeks = [dt.date.fromisoformat(week) for week in evaluation["holdout_weeks"]]

        assert version.training_key == f"{window_end:%Y%m%d}-w13-fast"
        assert dt.date.fromisoformat(version.properties["window_start"]) == window_end - dt.timedelta(
            weeks=13
        )
        assert max(holdout_weeks) == window_end - dt.timedelta(weeks=1)
        assert evaluation["rows"]["train"] + evaluation["rows"]["holdout"] == 13 * 40


def test_backfill_never_deploys(backfilled: dict[str, Any]) -> None:
    assert backfilled["deployments"] == []
    for version in backfilled["versions"]:
        assert version.properties["deploy_requested"] == "false"
        assert version.properties["reason"] == "backfill"


def test_week_rerun_registers_nothing(backfilled: dict[str, Any]) -> None:
    before = {run["dag_run_id"]: run for run in backfilled["runs"]}
    rerun = {run["dag_run_id"]: run for run in backfilled["rerun"]}
    first_week = next(run_id for run_id, run in before.items() if run["run_after"].startswith(BACKFILL_FROM))

    # The run was cleared and ran again; the registry did not grow.
    assert rerun[first_week]["state"] == "success"
    assert rerun[first_week]["end_date"] > before[first_week]["end_date"]
    assert set(rerun) == set(before)
    assert len(backfilled["versions_after_rerun"]) == len(backfilled["versions"])


def test_backfill_features_built(backfilled: dict[str, Any]) -> None:
    features = backfilled["features"]

    assert features["weeks"][0] == "2011-07-04"
    assert features["forecast_week"] == "2011-11-21"
    assert features["rows"] == 20 * 40
    assert json.dumps(features)
