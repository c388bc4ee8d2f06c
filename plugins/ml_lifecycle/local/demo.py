"""Run the whole lifecycle on the real retail data through a real Airflow scheduler, then summarize it.

Steps: start the local stack, replay all sales lines into Kafka, wait until the
sink has landed them, then trigger ``pos_load_check`` twice through the
Airflow REST API and let the Assets run the rest of each chain:

1. 13 weeks up to 2011-10-31: history for the first model, which is trained,
   gated against the 4-week moving average and, if approved, deployed.
2. The 5 weeks up to 2011-12-05, the last complete week of the data: a new
   candidate meets the live champion, and monitoring checks the live model
   on weeks it never saw.

The summary is printed as a table and written to ``.local/demo-summary.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from ml_lifecycle.local.stack import AIRFLOW_USER, DAG_IDS, DEFAULT_ROOT, AirflowClient, LocalStack

log = logging.getLogger("ml_lifecycle.demo")

CHAINS = (
    {"logical_date": "2011-10-31T06:00:00+00:00", "conf": {"window_end": "2011-10-31", "weeks": 13}},
    {"logical_date": "2011-12-05T06:00:00+00:00", "conf": {"window_end": "2011-12-05", "weeks": 5}},
)
TERMINAL_STATES = frozenset({"success", "failed"})
QUIET_SECONDS = 20.0
CHAIN_TIMEOUT_S = 900.0
SINK_TIMEOUT_S = 300.0


def dag_runs_since(client: AirflowClient, started: str) -> dict[str, list[dict[str, Any]]]:
    """Return the runs of each lifecycle DAG queued at or after ``started``, oldest first."""
    runs = {}
    for dag_id in DAG_IDS:
        answer = client.get(
            f"/api/v2/dags/{dag_id}/dagRuns", run_after_gte=started, order_by="run_after", limit=100
        )
        runs[dag_id] = answer["dag_runs"]
    return runs


def wait_until_quiet(
    client: AirflowClient, started: str, timeout_s: float = CHAIN_TIMEOUT_S
) -> dict[str, Any]:
    """Wait until every run since ``started`` has finished and no new one appeared for a while.

    Asset-triggered runs appear a scheduler loop after their upstream run
    succeeds, so the chain counts as done only after ``QUIET_SECONDS`` without
    a new or unfinished run.
    """
    deadline = time.monotonic() + timeout_s
    quiet_since: float | None = None
    last_seen: tuple[Any, ...] = ()
    while time.monotonic() < deadline:
        runs = dag_runs_since(client, started)
        seen = tuple((dag_id, run["dag_run_id"], run["state"]) for dag_id in DAG_IDS for run in runs[dag_id])
        finished = all(state in TERMINAL_STATES for _, _, state in seen)
        if finished and seen == last_seen:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= QUIET_SECONDS:
                return runs
        else:
            quiet_since = None
            unfinished = [f"{dag_id}:{state}" for dag_id, _, state in seen if state not in TERMINAL_STATES]
            if unfinished:
                log.info("Waiting for %s", ", ".join(unfinished))
        last_seen = seen
        time.sleep(3)
    raise TimeoutError(f"the DAG runs since {started} did not finish within {timeout_s:.0f} s")


def xcom_value(client: AirflowClient, dag_id: str, run_id: str, task_id: str) -> Any:
    """Return a task's return value, or None if it has none (skipped or failed)."""
    from urllib.parse import quote

    path = (
        f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}"
        "/xcomEntries/return_value"
    )
    try:
        value = client.get(path, deserialize="true")["value"]
    except RuntimeError as err:
        if "HTTP 404" in str(err):
            return None
        raise
    return json.loads(value) if isinstance(value, str) and value[:1] in "{[" else value


def latest_value(
    client: AirflowClient, runs: dict[str, list[dict[str, Any]]], dag_id: str, task_id: str
) -> Any:
    """Return the newest non-empty return value of ``task_id`` across the runs of ``dag_id``."""
    for run in reversed(runs.get(dag_id, [])):
        value = xcom_value(client, dag_id, run["dag_run_id"], task_id)
        if value:
            return value
    return None


def collect_summary(stack: LocalStack, client: AirflowClient, started: str, replay: Any) -> dict[str, Any]:
    """Gather the figures of the demo from Airflow, the warehouse and the AWS emulator."""
    import boto3

    from ml_lifecycle.aws.endpoint import describe_live_model, invoke_forecasts
    from ml_lifecycle.forecasting.dataset import FEATURE_COLUMNS, ID_COLUMNS
    from ml_lifecycle.hooks.warehouse import WarehouseHook

    runs = dag_runs_since(client, started)
    warehouse = WarehouseHook(snowflake_conn_id=stack.config.warehouse.conn_id)
    tables = stack.config.warehouse.tables()
    (counts,) = warehouse.fetch_dicts(
        f"SELECT (SELECT COUNT(*) FROM {tables['pos_transactions']}) AS LANDED, "
        f"(SELECT COUNT(*) FROM {tables['pos_quarantine']}) AS QUARANTINED, "
        f"(SELECT COUNT(*) FROM {tables['weekly_demand']}) AS FEATURE_ROWS, "
        f"(SELECT COUNT(DISTINCT STOCK_CODE) FROM {tables['weekly_demand']}) AS SKUS, "
        f"(SELECT COUNT(DISTINCT WEEK_START) FROM {tables['weekly_demand']}) AS WEEKS"
    )

    validation = latest_value(client, runs, "sales_data_validation", "validate_pos_lines") or {}
    trainings = [
        value
        for run in runs.get("forecast_training", [])
        if (value := xcom_value(client, "forecast_training", run["dag_run_id"], "train_and_register_model"))
    ]
    registered = [training for training in trainings if training.get("newly_registered")]
    model: dict[str, Any] = {}
    if registered:
        model = registered[-1]
    elif trainings:
        model = trainings[-1]
    drift = latest_value(client, runs, "forecast_monitoring", "check_drift") or {}

    aws = json.loads(stack.connection_env()["AIRFLOW_CONN_AWS_DEFAULT"])
    session = boto3.session.Session(
        aws_access_key_id=aws["login"],
        aws_secret_access_key=aws["password"],
        region_name=stack.config.aws.region,
    )
    endpoint_url = aws["extra"]["endpoint_url"]
    live = describe_live_model(
        session.client("sagemaker", endpoint_url=endpoint_url), stack.config.aws.endpoint_name
    )
    prediction: dict[str, Any] | None = None
    if live is not None and live.endpoint_status == "InService":
        rows = warehouse.fetch_dicts(
            f"SELECT * FROM {tables['weekly_demand']} WHERE QUANTITY IS NULL "
            f"AND WEEK_START = (SELECT MAX(WEEK_START) FROM {tables['weekly_demand']}) ORDER BY SKU_RANK LIMIT 1"
        )
        if rows:
            records = [{column: rows[0][column] for column in (*ID_COLUMNS, *FEATURE_COLUMNS)}]
            predictions, served_by, variant = invoke_forecasts(
                session.client("sagemaker-runtime", endpoint_url=endpoint_url), live.endpoint_name, records
            )
            prediction = {
                "stock_code": predictions[0].get("STOCK_CODE"),
                "week_start": predictions[0].get("WEEK_START"),
                "forecast": round(float(predictions[0]["forecast"]), 2),
                "model_version": served_by,
                "variant": variant,
            }

    return {
        "events_produced": replay.events_produced,
        "rows_landed": counts["LANDED"],
        "rows_quarantined": counts["QUARANTINED"],
        "dag_runs": {
            dag_id: (runs[dag_id][-1]["state"] if runs.get(dag_id) else "no run") for dag_id in DAG_IDS
        },
        "dag_run_counts": {dag_id: len(runs.get(dag_id, [])) for dag_id in DAG_IDS},
        "validation": {
            "success": validation.get("success"),
            "evaluated_expectations": validation.get("evaluated_expectations"),
            "unsuccessful_expectations": validation.get("unsuccessful_expectations"),
        },
        "features": {"rows": counts["FEATURE_ROWS"], "skus": counts["SKUS"], "weeks": counts["WEEKS"]},
        "model": {
            "version": model.get("model_version"),
            "approval_status": model.get("approval_status"),
            "holdout_wape": model.get("holdout_wape"),
            "baseline_wape": model.get("baseline_wape"),
            "champion_wape": model.get("champion_wape"),
            "best_params": model.get("best_params"),
            "gate_reasons": model.get("gate_reasons"),
            "versions_registered": len(registered),
        },
        "endpoint": {
            "name": live.endpoint_name if live else stack.config.aws.endpoint_name,
            "status": live.endpoint_status if live else "not created",
            "model_version": live.model_version if live else None,
        },
        "prediction": prediction,
        "drift": {
            "data_drift": drift.get("data_drift"),
            "performance_drift": drift.get("performance_drift"),
            "max_psi": drift.get("max_psi"),
            "drifted_features": drift.get("drifted_features"),
            "recent_wape": drift.get("recent_wape"),
            "wape_ratio": drift.get("wape_ratio"),
            "model_version": drift.get("model_version"),
            "reason": drift.get("reason"),
        },
    }


def problems_of(summary: dict[str, Any]) -> list[str]:
    """Return what makes the demo a failure; an empty list means it ran end to end."""
    problems = []
    if summary["rows_landed"] + summary["rows_quarantined"] != summary["events_produced"]:
        problems.append(
            f"landed {summary['rows_landed']:,} + quarantined {summary['rows_quarantined']:,} != produced "
            f"{summary['events_produced']:,}"
        )
    problems.extend(
        f"{dag_id} ended {state}" for dag_id, state in summary["dag_runs"].items() if state != "success"
    )
    if summary["endpoint"]["status"] != "InService":
        problems.append(f"endpoint {summary['endpoint']['name']} is {summary['endpoint']['status']}")
    if not summary["prediction"]:
        problems.append("InvokeEndpoint returned no prediction")
    return problems


def format_table(summary: dict[str, Any]) -> str:
    """Render the summary as a two-column table."""

    def flatten(prefix: str, value: Any) -> list[tuple[str, str]]:
        if isinstance(value, dict) and prefix not in ("model.best_params",):
            rows = []
            for key, item in value.items():
                rows.extend(flatten(f"{prefix}.{key}" if prefix else key, item))
            return rows
        if isinstance(value, float):
            return [(prefix, f"{value:.1f}" if prefix == "seconds" else f"{value:.4f}")]
        if isinstance(value, int) and not isinstance(value, bool):
            return [(prefix, f"{value:,}")]
        if isinstance(value, list | dict):
            return [(prefix, json.dumps(value, default=str))]
        return [(prefix, str(value))]

    rows = flatten("", summary)
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key.ljust(width)}  {value}" for key, value in rows)


def run_demo(root: Path, data_file: Path | None = None) -> int:
    """Run the demo end to end and return the process exit status."""
    from ml_lifecycle.local.replay import default_retail_csv, producer_config, replay_file

    started_at = time.monotonic()
    stack = LocalStack(root=root, fresh=True)
    try:
        stack.start()
        os.environ.update(stack.connection_env())
        client = AirflowClient(stack.api_url, AIRFLOW_USER, stack.airflow_password or "")
        # Runs queued from now on belong to this demo; the margin covers clock rounding.
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 5))
        log.info("Stack is up in %.0f s; Airflow UI at %s", time.monotonic() - started_at, stack.api_url)

        source = data_file or default_retail_csv()
        replay = replay_file(source, producer_config(stack.config.kafka.conn_id), stack.config.kafka.topic)
        log.info("Replayed %d events from %s", replay.events_produced, source)
        totals = stack.wait_for_sink(replay.events_produced, SINK_TIMEOUT_S)
        log.info("Sink landed %s and quarantined %s events", totals.get("landed"), totals.get("quarantined"))

        for chain in CHAINS:
            run = client.post(
                "/api/v2/dags/pos_load_check/dagRuns",
                {"logical_date": chain["logical_date"], "conf": chain["conf"]},
            )
            log.info("Triggered pos_load_check run %s for %s", run["dag_run_id"], chain["conf"])
            wait_until_quiet(client, started)

        summary = collect_summary(stack, client, started, replay)
        summary["seconds"] = round(time.monotonic() - started_at, 1)
        output = root / "demo-summary.json"
        output.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
        print(format_table(summary))
        print(f"\nSummary written to {output}")
        problems = problems_of(summary)
        if problems:
            print(
                "\nThe demo did not complete:\n" + "\n".join(f"- {problem}" for problem in problems),
                file=sys.stderr,
            )
            print(
                f"Logs are in {stack.layout.logs} and {stack.layout.airflow_home / 'logs'}", file=sys.stderr
            )
            return 1
        return 0
    finally:
        stack.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="directory for the stack's state")
    parser.add_argument("--data", type=Path, help="sales CSV to replay (default: the UCI Online Retail file)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_demo(args.root, args.data)


if __name__ == "__main__":
    raise SystemExit(main())
