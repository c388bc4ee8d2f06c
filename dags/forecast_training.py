"""
### forecast_training

Trains a weekly demand forecast with scikit-learn GridSearchCV over
HistGradientBoosting and RandomForest candidates (grid chosen by `preset`), with
rolling-origin cross-validation on the training window and a final holdout of
the last weeks. The candidate is scored on the holdout with MAE, WAPE and MAPE
against the last-value forecast, the 4-week moving average and the current
champion, then registered in the SageMaker model package group as Approved or
Rejected, with its archive (`model.tar.gz`, SageMaker scikit-learn layout),
evaluation and drift baseline in S3.

Re-running the same window and preset registers nothing new. The DAG also
runs weekly on its own schedule, which lets `airflow backfill create` train
one version per past week, each on the weeks before it. Backfill runs never
deploy.

**Consumes** `weekly_demand_features`; `forecast_monitoring` also triggers it
when drift passes the thresholds. **Produces** `demand_model_approved` only for
an Approved version that may be deployed, which starts `endpoint_deployment`.

**Parameters** (the trigger form checks them before any work starts):
`window_weeks`, `preset`, `deploy`, `reason`, and `window_end` to train on
another window.
"""

from __future__ import annotations

import datetime as dt

from airflow.providers.standard.operators.python import ShortCircuitOperator
from airflow.sdk import DAG, AssetOrTimeSchedule, CronTriggerTimetable, Param

from ml_lifecycle.assets import lifecycle_assets
from ml_lifecycle.config import load_config
from ml_lifecycle.dag_settings import dag_kwargs
from ml_lifecycle.operators.training import (
    DemandForecastTrainingOperator,
    PublishApprovedModelOperator,
    deployment_decision,
)

config = load_config()
assets = lifecycle_assets(config)
minimum_weeks = config.training.holdout_weeks + config.training.cv_folds + 2

with DAG(
    dag_id="forecast_training",
    # New features start a run. The weekly time schedule also lets `airflow
    # backfill create` walk past weeks, and a week trained twice is registered once.
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(
            config.schedule.training_cron, timezone=config.schedule.timezone, interval=dt.timedelta(weeks=1)
        ),
        assets=[assets.weekly_demand_features],
    ),
    params={
        "window_weeks": Param(
            config.training.window_weeks,
            type="integer",
            minimum=minimum_weeks,
            maximum=104,
            description="Weeks of features to train and evaluate on, ending at the window end.",
        ),
        "preset": Param(
            config.training.preset,
            type="string",
            enum=["fast", "default", "thorough"],
            description="Size of the hyper-parameter grid.",
        ),
        "deploy": Param(True, type="boolean", description="Deploy the version if the gate approves it."),
        "reason": Param(
            "", type="string", maxLength=200, description="Why this training runs; stored with the version."
        ),
        "window_end": Param(
            None, type=["null", "string"], format="date", description="Train on the weeks before this Monday."
        ),
        "weeks": Param(
            None, type=["null", "integer"], minimum=1, maximum=104, description="Unused by training."
        ),
    },
    **dag_kwargs(config, doc_md=__doc__, tags=("training",)),
):
    train = DemandForecastTrainingOperator(
        task_id="train_and_register_model",
        doc_md="GridSearchCV, holdout evaluation, approval gate, registry.",
    )
    deployable = ShortCircuitOperator(
        task_id="check_deployable",
        python_callable=deployment_decision,
        op_args=[train.output],
        doc_md="Continue only for an Approved version that was not trained by a backfill.",
    )
    publish = PublishApprovedModelOperator(
        task_id="publish_approved_model",
        training_task_id="train_and_register_model",
        outlets=[assets.demand_model_approved],
        doc_md="Emit the model asset event that starts endpoint_deployment.",
    )
    train >> deployable >> publish
