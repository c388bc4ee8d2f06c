"""
### sales_data_validation

Validates the landed POS lines of the checked window with the Great
Expectations suite in `include/gx/pos_transactions.json`. The suite runs as SQL
in the warehouse on `STAGING.POS_LINES`: columns, not-null keys, value ranges,
allowed countries and stock-code patterns, uniqueness of (partition, offset),
and a minimum row count from the configuration, so an empty week fails.

A failed expectation fails the task with the expectation names and unexpected
counts, and no downstream DAG runs. The result of every run is stored in
`AUDIT.VALIDATION_RUNS`.

**Consumes** `pos_transactions_landed`. **Produces** `pos_lines_validated`, which
starts `sales_features`.

**Parameters**: `window_end` (a Monday) and `weeks` validate another window.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param

from ml_lifecycle.assets import lifecycle_assets
from ml_lifecycle.config import load_config
from ml_lifecycle.dag_settings import dag_kwargs
from ml_lifecycle.operators.validation import GreatExpectationsSqlOperator

config = load_config()
assets = lifecycle_assets(config)

with DAG(
    dag_id="sales_data_validation",
    schedule=[assets.pos_transactions_landed],
    params={
        "window_end": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Validate the weeks ending on this Monday.",
        ),
        "weeks": Param(
            None, type=["null", "integer"], minimum=1, maximum=104, description="Number of weeks."
        ),
    },
    **dag_kwargs(config, doc_md=__doc__, tags=("data-quality",)),
):
    GreatExpectationsSqlOperator(
        task_id="validate_pos_lines",
        outlets=[assets.pos_lines_validated],
        doc_md="Run the expectation suite on the window's landed POS lines.",
    )
