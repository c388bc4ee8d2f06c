"""Deploy an approved model package version to the SageMaker endpoint."""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowSkipException

from ml_lifecycle.exceptions import DeploymentFailed, DeploymentRolledBack
from ml_lifecycle.hooks.warehouse import WarehouseHook, render_sql_file, sql_params
from ml_lifecycle.operators.base import LifecycleOperator, triggering_extras
from ml_lifecycle.windows import window_ending

if TYPE_CHECKING:
    from airflow.sdk import Context

    from ml_lifecycle.aws.registry import ModelVersion
    from ml_lifecycle.config import LifecycleConfig
    from ml_lifecycle.windows import Window

SQL_DIR = "endpoint_deployment"
SMOKE_TEST_ROWS = 5
_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9-]")


def sagemaker_name(*parts: str) -> str:
    """Join parts into a SageMaker resource name: letters, digits and hyphens, at most 63 characters."""
    name = _NAME_UNSAFE.sub("-", "-".join(parts)).strip("-")
    return re.sub("-{2,}", "-", name)[:63].rstrip("-")


class SageMakerEndpointDeployOperator(LifecycleOperator):
    """Create the endpoint, or update it to a new endpoint config, for an Approved model version.

    The version comes from the ``model_package_arn`` run parameter, else from
    the asset events that triggered the run (the newest one wins). Only
    Approved versions are deployed. The operator creates the SageMaker model
    and endpoint config for the version (or reuses them), calls CreateEndpoint
    or UpdateEndpoint, waits for InService, then checks that the live
    endpoint config is the new one and that InvokeEndpoint returns this
    version's forecasts for the latest forecast inputs.

    :param aws_conn_id: Airflow connection to AWS (templated).
    :param snowflake_conn_id: Airflow connection to Snowflake, for the smoke test inputs (templated).
    :param endpoint_name: endpoint to deploy to; defaults to ``aws.endpoint_name`` (templated).
    :param check_interval_s: seconds between status checks while waiting.
    :param max_wait_s: how long to wait for InService before failing.
    :raises DeploymentRolledBack: if SageMaker kept the previous endpoint config.
    :raises DeploymentFailed: if the endpoint fails or does not serve the version.
    """

    template_fields: tuple[str, ...] = (
        *LifecycleOperator.template_fields,
        "aws_conn_id",
        "snowflake_conn_id",
        "endpoint_name",
    )
    ui_color = "#fde2d8"

    def __init__(
        self,
        *,
        aws_conn_id: str | None = None,
        snowflake_conn_id: str | None = None,
        endpoint_name: str | None = None,
        check_interval_s: int = 30,
        max_wait_s: int = 3600,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.aws_conn_id = aws_conn_id
        self.snowflake_conn_id = snowflake_conn_id
        self.endpoint_name = endpoint_name
        self.check_interval_s = check_interval_s
        self.max_wait_s = max_wait_s

    def target_package_arn(self, context: Context) -> str:
        params = context.get("params") or {}
        if params.get("model_package_arn"):
            return str(params["model_package_arn"])
        arns = [
            extra["model_package_arn"]
            for extra in triggering_extras(context)
            if extra.get("model_package_arn")
        ]
        if not arns:
            raise AirflowSkipException(
                "no model version to deploy: the run has no model_package_arn parameter and no triggering "
                "asset event names one"
            )
        return arns[-1]

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

        from ml_lifecycle.aws.endpoint import describe_live_model
        from ml_lifecycle.aws.registry import ModelRegistry

        config = self.config
        aws_conn_id = self.aws_conn_id or config.aws.conn_id
        endpoint_name = self.endpoint_name or config.aws.endpoint_name
        registry = ModelRegistry(aws_conn_id, config.aws.model_package_group)
        version = registry.describe(self.target_package_arn(context))
        if version.approval_status != "Approved":
            raise DeploymentFailed(
                f"model package {version.arn} has status {version.approval_status}; only Approved versions "
                "are deployed. Approve it in the registry or deploy another version"
            )

        hook = SageMakerHook(aws_conn_id=aws_conn_id)
        client = hook.get_conn()
        model_name = self.ensure_model(client, config, endpoint_name, version)
        config_name = self.ensure_endpoint_config(client, config, model_name)

        live = describe_live_model(client, endpoint_name)
        if live is None:
            self.log.info(
                "Creating endpoint %s with config %s (%s)", endpoint_name, config_name, version.model_version
            )
            hook.create_endpoint(
                {"EndpointName": endpoint_name, "EndpointConfigName": config_name},
                wait_for_completion=True,
                check_interval=self.check_interval_s,
                max_ingestion_time=self.max_wait_s,
            )
            action = "created"
        elif live.endpoint_config_name == config_name and live.endpoint_status == "InService":
            self.log.info(
                "Endpoint %s already serves %s with config %s",
                endpoint_name,
                version.model_version,
                config_name,
            )
            action = "unchanged"
        else:
            self.log.info(
                "Updating endpoint %s from config %s (%s) to %s (%s)",
                endpoint_name,
                live.endpoint_config_name,
                live.model_version,
                config_name,
                version.model_version,
            )
            hook.update_endpoint(
                {"EndpointName": endpoint_name, "EndpointConfigName": config_name},
                wait_for_completion=True,
                check_interval=self.check_interval_s,
                max_ingestion_time=self.max_wait_s,
            )
            action = "updated"

        deployed = describe_live_model(client, endpoint_name)
        if deployed is None or deployed.endpoint_status != "InService":
            status = deployed.endpoint_status if deployed else "missing"
            raise DeploymentFailed(
                f"endpoint {endpoint_name} is {status} after deployment, expected InService"
            )
        if deployed.endpoint_config_name != config_name:
            raise DeploymentRolledBack(
                f"endpoint {endpoint_name} still serves config {deployed.endpoint_config_name} instead of "
                f"{config_name}: {deployed.failure_reason or 'no failure reason given'}"
            )

        prediction = self.smoke_test(context, config, aws_conn_id, endpoint_name, version)
        summary = {
            "endpoint_name": endpoint_name,
            "endpoint_status": deployed.endpoint_status,
            "endpoint_config_name": config_name,
            "model_name": model_name,
            "model_version": version.model_version,
            "model_package_arn": version.arn,
            "action": action,
            "prediction": prediction,
        }
        self.log.info("Deployment %s: %s", action, summary)
        self.emit_outlet_events(
            context, self.model_window(version), **{k: v for k, v in summary.items() if k != "prediction"}
        )
        return summary

    def model_window(self, version: ModelVersion) -> Window:
        """Return the training window of a version, which the endpoint's asset event carries."""
        config = self.config
        start = version.properties.get("window_start")
        end = version.properties.get("window_end")
        if not start or not end:
            raise DeploymentFailed(
                f"model package {version.arn} has no window_start and window_end metadata; it was not "
                "registered by forecast_training"
            )
        weeks = (dt.date.fromisoformat(end) - dt.date.fromisoformat(start)).days // 7
        return window_ending(end, max(weeks, 1), config.schedule.timezone, "model version")

    def ensure_model(
        self, client: Any, config: LifecycleConfig, endpoint_name: str, version: ModelVersion
    ) -> str:
        """Create the SageMaker model of a version unless it exists; return its name."""
        from botocore.exceptions import ClientError

        from ml_lifecycle.aws.endpoint import ENV_MODEL_PACKAGE_ARN, ENV_MODEL_VERSION, is_not_found

        model_name = sagemaker_name(endpoint_name, version.model_version)
        try:
            client.describe_model(ModelName=model_name)
        except ClientError as err:
            if not is_not_found(err):
                raise
        else:
            self.log.info("Model %s exists", model_name)
            return model_name
        client.create_model(
            ModelName=model_name,
            ExecutionRoleArn=config.aws.execution_role_arn,
            PrimaryContainer={
                "Image": version.image or config.aws.image_uri,
                "ModelDataUrl": version.model_data_url,
                "Environment": {
                    ENV_MODEL_VERSION: version.model_version,
                    ENV_MODEL_PACKAGE_ARN: version.arn,
                    # Read by SageMaker's scikit-learn containers; the project's
                    # own image loads code/inference.py from the archive anyway.
                    "SAGEMAKER_PROGRAM": "inference.py",
                    "SAGEMAKER_SUBMIT_DIRECTORY": version.model_data_url,
                },
            },
        )
        self.log.info("Created model %s from %s", model_name, version.model_data_url)
        return model_name

    def ensure_endpoint_config(self, client: Any, config: LifecycleConfig, model_name: str) -> str:
        """Create the endpoint config that serves ``model_name`` on all traffic unless it exists."""
        from botocore.exceptions import ClientError

        from ml_lifecycle.aws.endpoint import is_not_found

        config_name = sagemaker_name(model_name, "config")
        try:
            client.describe_endpoint_config(EndpointConfigName=config_name)
        except ClientError as err:
            if not is_not_found(err):
                raise
        else:
            return config_name
        client.create_endpoint_config(
            EndpointConfigName=config_name,
            ProductionVariants=[
                {
                    "VariantName": "primary",
                    "ModelName": model_name,
                    "InitialInstanceCount": config.aws.initial_instance_count,
                    "InstanceType": config.aws.instance_type,
                    "InitialVariantWeight": 1.0,
                }
            ],
        )
        self.log.info("Created endpoint config %s", config_name)
        return config_name

    def smoke_test(
        self,
        context: Context,
        config: LifecycleConfig,
        aws_conn_id: str,
        endpoint_name: str,
        version: ModelVersion,
    ) -> dict[str, Any]:
        """Invoke the endpoint with the newest forecast inputs and check that this version responds."""
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        from ml_lifecycle.aws.endpoint import invoke_forecasts
        from ml_lifecycle.forecasting.dataset import FEATURE_COLUMNS, ID_COLUMNS

        warehouse = WarehouseHook(snowflake_conn_id=self.snowflake_conn_id or config.warehouse.conn_id)
        rows = warehouse.fetch_dicts(
            render_sql_file(f"{SQL_DIR}/latest_forecast_inputs.sql", sql_params(config)),
            {"limit": SMOKE_TEST_ROWS},
        )
        if not rows:
            raise DeploymentFailed(
                "no forecast inputs in the features table to test the endpoint with; run sales_features first"
            )
        records = [{column: row.get(column) for column in (*ID_COLUMNS, *FEATURE_COLUMNS)} for row in rows]
        runtime = AwsBaseHook(aws_conn_id=aws_conn_id, client_type="sagemaker-runtime").get_conn()
        predictions, served_version, variant = invoke_forecasts(runtime, endpoint_name, records)
        if served_version != version.model_version:
            raise DeploymentFailed(
                f"endpoint {endpoint_name} returned forecasts of model version {served_version!r}, expected "
                f"{version.model_version!r}"
            )
        first = predictions[0]
        self.log.info(
            "Endpoint %s (variant %s) forecasts %.1f units of %s for the week of %s",
            endpoint_name,
            variant,
            first["forecast"],
            first.get("STOCK_CODE"),
            first.get("WEEK_START"),
        )
        return {
            "stock_code": first.get("STOCK_CODE"),
            "week_start": first.get("WEEK_START"),
            "forecast": first["forecast"],
            "variant": variant,
            "rows": len(predictions),
        }
