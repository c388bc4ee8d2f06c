"""DAG integrity: every DAG file imports fast, offline, and declares what operators need to see."""

from __future__ import annotations

import copy
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[3]
DAG_FILES = sorted((PROJECT_ROOT / "dags").glob("*.py"))
EXPECTED_DAG_IDS = {
    "pos_load_check",
    "sales_data_validation",
    "sales_features",
    "forecast_training",
    "endpoint_deployment",
    "forecast_monitoring",
}
IMPORT_BUDGET_S = 1.0

# Run in a fresh interpreter: Airflow is imported first (its own cost is not
# the DAG file's), then sockets, Variables and connections are made to fail,
# then the DAG file is imported and timed.
_IMPORT_PROBE = r"""
import importlib.util, json, socket, sys, time
import airflow.sdk
from airflow.sdk import Variable
from airflow.sdk.bases.hook import BaseHook

touched = []
def refuse(name):
    def _refuse(*args, **kwargs):
        touched.append(name)
        raise RuntimeError(f"{name} called while importing a DAG file")
    return _refuse

socket.socket.connect = refuse("socket.connect")
socket.create_connection = refuse("socket.create_connection")
Variable.get = staticmethod(refuse("Variable.get"))
BaseHook.get_connection = classmethod(refuse("BaseHook.get_connection"))

path = sys.argv[1]
started = time.perf_counter()
spec = importlib.util.spec_from_file_location("dag_under_test", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
seconds = time.perf_counter() - started
heavy = [name for name in ("pandas", "sklearn", "snowflake.connector", "great_expectations", "confluent_kafka")
         if name in sys.modules]
print(json.dumps({"seconds": seconds, "touched": touched, "heavy": heavy}))
"""


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=[path.stem for path in DAG_FILES])
def test_dag_file_imports_fast_and_offline(dag_file: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE, str(dag_file)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    assert probe["touched"] == []
    assert probe["heavy"] == []
    assert probe["seconds"] < IMPORT_BUDGET_S, f"{dag_file.name} took {probe['seconds']:.2f} s to import"


@pytest.fixture(scope="module")
def dags() -> dict[str, Any]:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
    assert bag.import_errors == {}
    return bag.dags


def test_the_six_dags_exist(dags: dict[str, Any]) -> None:
    assert set(dags) == EXPECTED_DAG_IDS


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_DAG_IDS))
def test_dag_declares_owner_retries_docs_and_dates(dags: dict[str, Any], dag_id: str) -> None:
    dag = dags[dag_id]

    assert "ml-lifecycle" in dag.tags
    assert len(dag.tags) >= 3
    assert dag.doc_md and dag.doc_md.strip().startswith(f"### {dag_id}")
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert dag.start_date.tzinfo is not None
    assert dag.start_date == dt.datetime(2010, 12, 6, tzinfo=dag.start_date.tzinfo)
    assert str(dag.timezone.name) == "Europe/London"
    for task in dag.tasks:
        assert task.owner == "ml-platform", task.task_id
        assert task.retries >= 1, task.task_id
        assert task.doc_md, task.task_id


def _asset_names(assets: Any) -> set[str]:
    return {asset.name for asset in assets}


def test_assets_chain_the_dags(dags: dict[str, Any]) -> None:
    produced = {
        dag_id: _asset_names(outlet for task in dag.tasks for outlet in task.outlets)
        for dag_id, dag in dags.items()
    }
    consumed = {
        dag_id: {asset.name for asset in dag.timetable.asset_condition.objects}
        if getattr(dag.timetable, "asset_condition", None) is not None
        else set()
        for dag_id, dag in dags.items()
    }

    assert produced["pos_load_check"] == {"pos_transactions_landed"}
    assert consumed["sales_data_validation"] == {"pos_transactions_landed"}
    assert produced["sales_data_validation"] == {"pos_lines_validated"}
    assert consumed["sales_features"] == {"pos_lines_validated"}
    assert produced["sales_features"] == {"weekly_demand_features"}
    assert consumed["forecast_training"] == {"weekly_demand_features"}
    assert consumed["forecast_monitoring"] == {"weekly_demand_features"}
    assert produced["forecast_training"] == {"demand_model_approved"}
    assert consumed["endpoint_deployment"] == {"demand_model_approved"}
    assert produced["endpoint_deployment"] == {"demand_endpoint_live"}


def test_load_check_runs_weekly_in_london(dags: dict[str, Any]) -> None:
    timetable = dags["pos_load_check"].timetable

    assert timetable.expression == "0 6 * * 1"
    assert str(timetable.timezone) == "Europe/London"


def test_training_runs_weekly_for_backfills(dags: dict[str, Any]) -> None:
    dag = dags["forecast_training"]
    timetable = dag.timetable.timetable

    assert timetable.expression == "0 8 * * 1"
    assert str(timetable.timezone) == "Europe/London"
    # Each run's data interval is the week before it, the week it trains up to.
    assert timetable.interval == dt.timedelta(weeks=1)
    assert dag.catchup is False


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"window_weeks": 2}, "2 is less than the minimum of 7"),
        ({"preset": "huge"}, "'huge' is not one of"),
        ({"deploy": "yes"}, "'yes' is not of type 'boolean'"),
        ({"window_end": "31/10/2011"}, "'31/10/2011' is not a 'date'"),
        ({"reason": "x" * 201}, "is too long"),
    ],
)
def test_training_params_reject_bad_values(dags: dict[str, Any], bad: dict[str, Any], message: str) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(dags["forecast_training"].params)

    with pytest.raises(ParamValidationError, match=message):
        params.update(bad)
        params.validate()


def test_training_params_accept_an_ad_hoc_retrain(dags: dict[str, Any]) -> None:
    params = copy.deepcopy(dags["forecast_training"].params)

    params.update(
        {"window_weeks": 26, "preset": "thorough", "deploy": False, "reason": "new promotion calendar"}
    )

    assert params.validate()["reason"] == "new promotion calendar"
