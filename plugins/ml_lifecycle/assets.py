"""Airflow Assets that chain the six DAGs.

Each asset event carries the data window it covers in ``extra`` (see
:meth:`ml_lifecycle.windows.Window.to_extra`), because asset-triggered runs in
Airflow 3 have no logical date and no data interval of their own.

=========================  ========================  =========================
asset                      produced by               consumed by
=========================  ========================  =========================
pos_transactions_landed    pos_load_check            sales_data_validation
pos_lines_validated        sales_data_validation     sales_features
weekly_demand_features     sales_features            forecast_training,
                                                     forecast_monitoring
demand_model_approved      forecast_training         endpoint_deployment
demand_endpoint_live       endpoint_deployment       (dashboards, alerts)
=========================  ========================  =========================
"""

from __future__ import annotations

from dataclasses import dataclass

from airflow.sdk import Asset

from ml_lifecycle.config import LifecycleConfig


@dataclass(frozen=True)
class LifecycleAssets:
    pos_transactions_landed: Asset
    pos_lines_validated: Asset
    weekly_demand_features: Asset
    demand_model_approved: Asset
    demand_endpoint_live: Asset


def lifecycle_assets(config: LifecycleConfig) -> LifecycleAssets:
    """Build the assets from configuration, so their URIs name the real account, bucket and endpoint."""
    wh = config.warehouse
    account = wh.account
    aws = config.aws
    return LifecycleAssets(
        pos_transactions_landed=Asset(
            name="pos_transactions_landed",
            uri=f"snowflake://{account}/{wh.database}/{wh.raw_schema}/POS_TRANSACTIONS",
        ),
        pos_lines_validated=Asset(
            name="pos_lines_validated",
            uri=f"snowflake://{account}/{wh.database}/{wh.staging_schema}/POS_LINES",
        ),
        weekly_demand_features=Asset(
            name="weekly_demand_features",
            uri=f"snowflake://{account}/{wh.database}/{wh.features_schema}/WEEKLY_DEMAND",
        ),
        demand_model_approved=Asset(
            name="demand_model_approved",
            # Not an s3:// URI: the amazon provider's URI handler would import
            # boto3 into every DAG parse.
            uri=f"sagemaker://{aws.region}/model-package-group/{aws.model_package_group}",
        ),
        demand_endpoint_live=Asset(
            name="demand_endpoint_live",
            uri=f"sagemaker://{aws.region}/endpoint/{aws.endpoint_name}",
        ),
    )
