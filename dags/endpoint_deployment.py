"""
### endpoint_deployment

Deploys an Approved model package version to the SageMaker endpoint: creates the
endpoint, or updates it to a new endpoint config for the version, waits for
InService, then checks that the live endpoint config is the new one and that
InvokeEndpoint answers for the latest forecast inputs with this version.

**Consumes** `demand_model_approved`. **Produces** `demand_endpoint_live`.

**Parameters**: `model_package_arn` deploys that version instead, for example to
roll back to an earlier Approved version.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param

from ml_lifecycle.assets import lifecycle_assets
from ml_lifecycle.config import load_config
from ml_lifecycle.dag_settings import dag_kwargs
from ml_lifecycle.operators.deployment import SageMakerEndpointDeployOperator

config = load_config()
assets = lifecycle_assets(config)

with DAG(
    dag_id="endpoint_deployment",
    schedule=[assets.demand_model_approved],
    params={
        "model_package_arn": Param(
            None,
            type=["null", "string"],
            pattern="^arn:aws[a-z-]*:sagemaker:",
            description="Model package version to deploy instead of the one that triggered the run.",
        ),
    },
    **dag_kwargs(config, doc_md=__doc__, tags=("deployment",)),
):
    SageMakerEndpointDeployOperator(
        task_id="deploy_endpoint",
        check_interval_s=config.aws.deploy_check_interval_s,
        max_wait_s=config.aws.deploy_timeout_s,
        outlets=[assets.demand_endpoint_live],
        doc_md="CreateEndpoint or UpdateEndpoint, wait for InService, verify with InvokeEndpoint.",
    )
