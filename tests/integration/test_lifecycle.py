"""The six DAGs, run with ``dag.test()`` against the local services on a slice of the real data.

The chain runs twice, as in production: first for 13 weeks of history up to
2011-10-31 (the first model is trained and deployed), then for the 5 weeks up
to 2011-12-05 (a new candidate meets the live champion, and monitoring checks
the live model on weeks it never saw).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest

from ml_lifecycle.aws.registry import ModelRegistry
from ml_lifecycle.local.stack import LocalStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FIRST_WINDOW = {"window_end": "2011-10-31", "weeks": 13}
SECOND_WINDOW = {"window_end": "2011-12-05", "weeks": 5}


def load_dags() -> dict[str, Any]:
    from airflow.dag_processing.dagbag import DagBag

    from ml_lifecycle.config import PROJECT_ROOT

    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags


# dag.test() clears the task instances (and XComs) of earlier runs with the
# same logical date, and with no logical date those of every run of the DAG,
# so each run gets a logical date of its own. The window comes from run_conf.
_LOGICAL_DATES = (
    dt.datetime(2011, 6, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=minute) for minute in itertools.count()
)


def run_dag(dags: dict[str, Any], dag_id: str, conf: dict[str, Any]) -> Any:
    """Run one DAG in-process and return its DagRun."""
    return dags[dag_id].test(run_conf=conf, logical_date=next(_LOGICAL_DATES))


def task_states(dag_run: Any) -> dict[str, str]:
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        instances = session.query(TaskInstance).filter(
            TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id
        )
        return {ti.task_id: str(ti.state) for ti in instances}


def xcom(dag_run: Any, task_id: str) -> Any:
    """Return the return value of one task of a finished run."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        entry = (
            session.query(XComModel)
            .filter(
                XComModel.dag_id == dag_run.dag_id,
                XComModel.run_id == dag_run.run_id,
                XComModel.task_id == task_id,
                XComModel.key == "return_value",
            )
            .one_or_none()
        )
        return None if entry is None else XComModel.deserialize_value(entry)


def warehouse_rows(sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    from ml_lifecycle.hooks.warehouse import WarehouseHook

    return WarehouseHook(snowflake_conn_id="snowflake_default").fetch_dicts(sql, parameters)


@pytest.fixture(scope="module")
def lifecycle(services: LocalStack, replayed: dict[str, int]) -> Iterator[dict[str, Any]]:
    """Run both chains and keep every DagRun and summary for the tests below."""
    dags = load_dags()
    runs: dict[str, Any] = {"replayed": replayed}

    for label, window in (("first", FIRST_WINDOW), ("second", SECOND_WINDOW)):
        for dag_id in ("pos_load_check", "sales_data_validation", "sales_features", "forecast_monitoring"):
            runs[f"{label}.{dag_id}"] = run_dag(dags, dag_id, window)
        training = run_dag(
            dags,
            "forecast_training",
            {
                "window_end": window["window_end"],
                "preset": "fast",
                "reason": f"integration test, {label} window",
            },
        )
        runs[f"{label}.forecast_training"] = training
        summary = xcom(training, "train_and_register_model")
        runs[f"{label}.training_summary"] = summary
        if label == "first" and summary["approval_status"] != "Approved":
            # On this small slice the gate may reject the first model; a
            # reviewer's approval in the registry lets deployment run anyway.
            registry = ModelRegistry("aws_default", services.config.aws.model_package_group)
            registry.set_approval(
                summary["model_package_arn"], "Approved", "approved by a reviewer in the test"
            )
            runs["first.manually_approved"] = True
        if label == "first" or summary["approval_status"] == "Approved":
            runs[f"{label}.endpoint_deployment"] = run_dag(
                dags, "endpoint_deployment", {"model_package_arn": summary["model_package_arn"]}
            )
    yield runs


def test_every_event_landed_or_quarantined(lifecycle: dict[str, Any]) -> None:
    replayed = lifecycle["replayed"]
    (counts,) = warehouse_rows(
        "SELECT (SELECT COUNT(*) FROM LIFECYCLE.RAW.POS_TRANSACTIONS) AS LANDED, "
        "(SELECT COUNT(*) FROM LIFECYCLE.RAW.POS_QUARANTINE) AS QUARANTINED"
    )

    assert counts["LANDED"] + counts["QUARANTINED"] == replayed["produced"]
    assert counts["LANDED"] == replayed["landed"]
    assert counts["QUARANTINED"] == 0


def test_load_check_passes_and_audits_each_partition(lifecycle: dict[str, Any]) -> None:
    run = lifecycle["first.pos_load_check"]
    summary = xcom(run, "reconcile_kafka_offsets")
    audit = warehouse_rows(
        "SELECT KAFKA_PARTITION, PASSED, LANDED_ROWS FROM LIFECYCLE.AUDIT.LOAD_CHECKS WHERE DAG_RUN_ID = %(run)s",
        {"run": run.run_id},
    )

    assert str(run.state) == "success", task_states(run)
    assert summary["missing_offsets"] == 0
    assert summary["duplicate_rows"] == 0
    assert summary["consumer_lag"] == 0
    assert summary["landed_rows"] == lifecycle["replayed"]["produced"]
    assert summary["window_rows"] > 0
    assert sorted(row["KAFKA_PARTITION"] for row in audit) == [0, 1, 2, 3]
    assert all(row["PASSED"] for row in audit)


def test_validation_suite_passes_on_landed_rows(lifecycle: dict[str, Any]) -> None:
    for label in ("first", "second"):
        run = lifecycle[f"{label}.sales_data_validation"]
        summary = xcom(run, "validate_pos_lines")

        assert str(run.state) == "success", task_states(run)
        assert summary["success"] is True
        assert summary["evaluated_expectations"] == 17
        assert summary["unsuccessful_expectations"] == 0


def test_validation_publishes_data_docs(lifecycle: dict[str, Any]) -> None:
    import urllib.request

    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    from ml_lifecycle.links import DataDocsLink

    run = lifecycle["second.sales_data_validation"]
    url = xcom(run, "validate_pos_lines")["data_docs"]
    with create_session() as session:
        link = (
            session.query(XComModel)
            .filter(XComModel.run_id == run.run_id, XComModel.key == DataDocsLink().xcom_key)
            .one()
        )
    with urllib.request.urlopen(url, timeout=10) as response:
        page = response.read().decode("utf-8")

    assert XComModel.deserialize_value(link) == url
    assert response.headers["Content-Type"].startswith("text/html")
    assert "pos_transactions" in page
    assert "kafka_partition" in page


def test_features_cover_each_week_of_both_windows(lifecycle: dict[str, Any]) -> None:
    weeks = warehouse_rows(
        "SELECT WEEK_START, COUNT(*) AS ROWS_WRITTEN, COUNT(QUANTITY) AS WITH_TARGET "
        "FROM LIFECYCLE.FEATURES.WEEKLY_DEMAND GROUP BY WEEK_START ORDER BY WEEK_START"
    )
    by_week = {row["WEEK_START"]: row for row in weeks}

    assert len(by_week) == 13 + 5 + 1
    assert min(by_week) == dt.date(2011, 8, 1)
    assert max(by_week) == dt.date(2011, 12, 5)
    assert all(row["ROWS_WRITTEN"] == 40 for row in weeks)
    assert by_week[dt.date(2011, 12, 5)]["WITH_TARGET"] == 0
    assert by_week[dt.date(2011, 11, 28)]["WITH_TARGET"] == 40


def test_training_registers_a_version_per_window(lifecycle: dict[str, Any], services: LocalStack) -> None:
    from ml_lifecycle.aws.registry import ModelRegistry

    registry = ModelRegistry("aws_default", services.config.aws.model_package_group)
    versions = {version.training_key: version for version in registry.versions()}
    first = lifecycle["first.training_summary"]
    second = lifecycle["second.training_summary"]

    assert set(versions) == {"20111031-w13-fast", "20111205-w13-fast"}
    assert versions["20111031-w13-fast"].approval_status == "Approved"
    assert versions["20111205-w13-fast"].approval_status == second["approval_status"]
    for summary in (first, second):
        beats_baseline = summary["holdout_wape"] < summary["baseline_wape"]
        beats_champion = (
            summary["champion_wape"] is None or summary["holdout_wape"] < summary["champion_wape"]
        )
        assert (summary["approval_status"] == "Approved") == (beats_baseline and beats_champion)
    assert first["holdout_wape"] > 0
    assert first["baseline_wape"] > 0
    assert second["champion_wape"] is not None
    assert versions["20111205-w13-fast"].properties["reason"] == "integration test, second window"
    evaluation = registry.download_json(
        versions["20111031-w13-fast"].model_data_url.replace("model.tar.gz", "evaluation.json")
    )
    assert evaluation["gate"]["status"] == first["approval_status"]
    assert len(evaluation["cv_results"]) == 3
    assert evaluation["features"][:2] == ["LAG_1", "LAG_2"]
    assert evaluation["window"]["window_end"].startswith("2011-10-31")


def test_training_report_with_charts_in_s3(lifecycle: dict[str, Any], services: LocalStack) -> None:
    import urllib.request

    summary = lifecycle["second.training_summary"]
    with urllib.request.urlopen(summary["report_url"], timeout=10) as response:
        report = response.read().decode("utf-8")
    base = summary["report_url"].rsplit("/", 1)[0]
    charts = {}
    for name in ("forecast_vs_actual.png", "wape_by_week.png", "feature_importance.png"):
        with urllib.request.urlopen(f"{base}/{name}", timeout=10) as response:
            charts[name] = response.read()

    assert summary["report_uri"].endswith("/20111205-w13-fast/report/report.md")
    assert "# Demand forecast 20111205-w13-fast" in report
    assert "| champion |" in report
    assert "## Cross-validation results" in report
    assert all(chart.startswith(b"\x89PNG") for chart in charts.values())
    registry = ModelRegistry("aws_default", services.config.aws.model_package_group)
    assert registry.describe(summary["model_package_arn"]).properties["report_uri"] == summary["report_uri"]


def test_rerunning_training_registers_nothing_new(lifecycle: dict[str, Any], services: LocalStack) -> None:
    from ml_lifecycle.aws.registry import ModelRegistry

    dags = load_dags()
    registry = ModelRegistry("aws_default", services.config.aws.model_package_group)
    before = len(registry.versions())

    rerun = run_dag(dags, "forecast_training", {"window_end": "2011-10-31", "preset": "fast"})

    assert str(rerun.state) == "success", task_states(rerun)
    assert xcom(rerun, "train_and_register_model")["newly_registered"] is False
    assert len(registry.versions()) == before


def test_endpoint_serves_real_predictions(lifecycle: dict[str, Any], services: LocalStack) -> None:
    import boto3

    deployment = lifecycle["first.endpoint_deployment"]
    summary = xcom(deployment, "deploy_endpoint")
    aws = json.loads(services.connection_env()["AIRFLOW_CONN_AWS_DEFAULT"])
    runtime = boto3.client(
        "sagemaker-runtime",
        endpoint_url=aws["extra"]["endpoint_url"],
        region_name="eu-west-2",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    (row,) = warehouse_rows(
        "SELECT * FROM LIFECYCLE.FEATURES.WEEKLY_DEMAND WHERE WEEK_START = '2011-12-05' ORDER BY SKU_RANK LIMIT 1"
    )
    from ml_lifecycle.aws.endpoint import invoke_forecasts
    from ml_lifecycle.forecasting.dataset import FEATURE_COLUMNS, ID_COLUMNS

    predictions, version, _ = invoke_forecasts(
        runtime, summary["endpoint_name"], [{key: row[key] for key in (*ID_COLUMNS, *FEATURE_COLUMNS)}]
    )

    assert str(deployment.state) == "success", task_states(deployment)
    assert summary["action"] == "created"
    assert summary["endpoint_status"] == "InService"
    live = lifecycle.get("second.endpoint_deployment") or deployment
    assert version == xcom(live, "deploy_endpoint")["model_version"]
    assert predictions[0]["STOCK_CODE"] == row["STOCK_CODE"]
    assert predictions[0]["forecast"] >= 0
    assert summary["prediction"]["forecast"] >= 0


def test_monitoring_checks_the_live_model(lifecycle: dict[str, Any]) -> None:
    skipped = lifecycle["first.forecast_monitoring"]
    checked = lifecycle["second.forecast_monitoring"]
    summary = xcom(checked, "check_drift")

    assert task_states(skipped)["check_drift"] == "skipped"
    assert str(checked.state) == "success", task_states(checked)
    assert summary["weeks_with_known_demand"] == 5
    assert summary["recent_wape"] > 0
    assert set(summary["feature_psi"]) >= {"LAG_1", "ROLLING_MEAN_4"}
    assert isinstance(summary["data_drift"], bool)
    assert isinstance(summary["performance_drift"], bool)
