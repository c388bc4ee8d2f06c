"""
### sales_features

Builds weekly demand features per stock code in Snowflake with the SQL in
`include/sql/sales_features/`, for the top N products (N from the
configuration). Features of week t use only sales before t: lags, rolling means
and standard deviations, price and its change, distinct customers, returns
rate, UK bank holidays and season. Each week is deleted and inserted again in
one transaction, so re-running a week replaces it. The week after the window
gets its row too, without a target: the input of the next forecast.

**Consumes** `pos_lines_validated`. **Produces** `weekly_demand_features`, which
starts `forecast_training` and `forecast_monitoring`.

**Parameters**: `window_end` (a Monday) and `weeks` rebuild another window.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param

from ml_lifecycle.assets import lifecycle_assets
from ml_lifecycle.config import load_config
from ml_lifecycle.dag_settings import dag_kwargs
from ml_lifecycle.operators.features import SnowflakeWeeklyFeaturesOperator

config = load_config()
assets = lifecycle_assets(config)

with DAG(
    dag_id="sales_features",
    schedule=[assets.pos_lines_validated],
    params={
        "window_end": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Rebuild the weeks ending on this Monday.",
        ),
        "weeks": Param(
            None, type=["null", "integer"], minimum=1, maximum=104, description="Number of weeks."
        ),
    },
    **dag_kwargs(config, doc_md=__doc__, tags=("features",)),
):
    SnowflakeWeeklyFeaturesOperator(
        task_id="build_weekly_features",
        outlets=[assets.weekly_demand_features],
        doc_md="Replace the window's rows of FEATURES.WEEKLY_DEMAND.",
    )
