"""
### forecast_monitoring

Checks the live model each time new weeks of features arrive. Data drift: the
population stability index of each feature over the new weeks against the
deciles of the live model's training data. Performance drift: the endpoint's
WAPE on weeks after its training window whose demand is now known, against its
holdout WAPE. The figures go to CloudWatch; when drift passes the thresholds in
the configuration, an alert goes to SNS and `forecast_training` is triggered
with the reason.

**Consumes** `weekly_demand_features`. Skips when no model is live yet.
"""

from __future__ import annotations

from airflow.providers.standard.operators.python import ShortCircuitOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, Param

from ml_lifecycle.assets import lifecycle_assets
from ml_lifecycle.config import load_config
from ml_lifecycle.dag_settings import dag_kwargs
from ml_lifecycle.operators.monitoring import ForecastDriftMonitorOperator, drift_detected

config = load_config()
assets = lifecycle_assets(config)

with DAG(
    dag_id="forecast_monitoring",
    schedule=[assets.weekly_demand_features],
    params={
        "window_end": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Monitor the weeks ending on this Monday.",
        ),
        "weeks": Param(
            None, type=["null", "integer"], minimum=1, maximum=104, description="Number of weeks."
        ),
    },
    **dag_kwargs(config, doc_md=__doc__, tags=("monitoring",)),
):
    check = ForecastDriftMonitorOperator(
        task_id="check_drift",
        doc_md="PSI per feature and WAPE of the live endpoint, published to CloudWatch.",
    )
    drifted = ShortCircuitOperator(
        task_id="check_retraining_needed",
        python_callable=drift_detected,
        op_args=[check.output],
        doc_md="Continue only when data or performance drift passed the thresholds.",
    )
    retrain = TriggerDagRunOperator(
        task_id="trigger_retraining",
        trigger_dag_id="forecast_training",
        trigger_run_id="drift__{{ ti.xcom_pull(task_ids='check_drift')['window_end'] }}",
        conf={
            "reason": "{{ ti.xcom_pull(task_ids='check_drift')['reason'][:200] }}",
            "window_end": "{{ ti.xcom_pull(task_ids='check_drift')['window_end'] }}",
            "deploy": True,
        },
        skip_when_already_exists=True,
        doc_md="Start forecast_training with the drift reason; one run per monitored window.",
    )
    check >> drifted >> retrain
