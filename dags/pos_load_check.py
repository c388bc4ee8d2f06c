"""
### pos_load_check

Reconciles the POS topic in Kafka with what the sink landed in Snowflake, once a
week for the week that just ended (Monday 00:00 to Monday 00:00, Europe/London).

For every partition it compares the log-end offset and the committed offset of
the sink's consumer group with the offsets landed in `RAW.POS_TRANSACTIONS` or
quarantined in `RAW.POS_QUARANTINE`, and fails on missing offset ranges,
duplicates, consumer lag, load errors or stale data, naming the partition and
offsets. Offsets that landed but are not committed yet are reported as
"landed, commit pending", not as lag. Every run writes one row per partition to
`AUDIT.LOAD_CHECKS`.

**Produces** the asset `pos_transactions_landed` with the checked window, which
starts `sales_data_validation`.

**Parameters**: `window_end` (a Monday) and `weeks` check another window, for
example 13 weeks of history before the first training.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, CronTriggerTimetable, Param

from ml_lifecycle.assets import lifecycle_assets
from ml_lifecycle.config import load_config
from ml_lifecycle.dag_settings import dag_kwargs
from ml_lifecycle.operators.load_check import PosLoadCheckOperator

config = load_config()
assets = lifecycle_assets(config)

with DAG(
    dag_id="pos_load_check",
    schedule=CronTriggerTimetable(
        config.schedule.load_check_cron, timezone=config.schedule.timezone, interval=dt.timedelta(weeks=1)
    ),
    params={
        "window_end": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Check the weeks that end on this Monday instead of the run's own week.",
        ),
        "weeks": Param(1, type="integer", minimum=1, maximum=104, description="Number of weeks to check."),
    },
    **dag_kwargs(config, doc_md=__doc__, tags=("ingestion",)),
):
    PosLoadCheckOperator(
        task_id="reconcile_kafka_offsets",
        outlets=[assets.pos_transactions_landed],
        doc_md="Reconcile Kafka offsets with landed rows and write the audit rows.",
    )
