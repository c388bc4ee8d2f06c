"""Compare recent weeks with the live model's training baseline and publish the figures."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowSkipException

from ml_lifecycle.hooks.warehouse import WarehouseHook, render_sql_file, sql_params
from ml_lifecycle.operators.base import LifecycleOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from ml_lifecycle.config import LifecycleConfig

SQL_DIR = "forecast_monitoring"
# CloudWatch accepts at most 1,000 metric values per PutMetricData call.
METRICS_PER_CALL = 500


class ForecastDriftMonitorOperator(LifecycleOperator):
    """Check the live model for data drift and performance drift on the run's weeks.

    Data drift: the population stability index of each feature over the
    run's weeks (and the next forecast inputs) against the deciles of the
    live model's training data, stored with the model. Performance drift: the
    live endpoint's WAPE on weeks after its training window whose demand is
    now known, against its holdout WAPE. Every figure goes to CloudWatch. When
    drift passes the configured thresholds, an alert goes to SNS and the
    returned summary states the reason for the task that triggers retraining.

    :param aws_conn_id: Airflow connection to AWS (templated).
    :param snowflake_conn_id: Airflow connection to Snowflake (templated).
    :param endpoint_name: endpoint to monitor; defaults to ``aws.endpoint_name`` (templated).
    """

    template_fields: tuple[str, ...] = (
        *LifecycleOperator.template_fields,
        "aws_conn_id",
        "snowflake_conn_id",
        "endpoint_name",
    )
    ui_color = "#e0f2f1"

    def __init__(
        self,
        *,
        aws_conn_id: str | None = None,
        snowflake_conn_id: str | None = None,
        endpoint_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.aws_conn_id = aws_conn_id
        self.snowflake_conn_id = snowflake_conn_id
        self.endpoint_name = endpoint_name

    def execute(self, context: Context) -> dict[str, Any]:
        import numpy as np
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
        from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

        from ml_lifecycle.aws.endpoint import describe_live_model, invoke_forecasts
        from ml_lifecycle.aws.registry import ModelRegistry
        from ml_lifecycle.forecasting.dataset import FEATURE_COLUMNS, ID_COLUMNS, as_date
        from ml_lifecycle.forecasting.drift import FeatureBaseline, assess_drift
        from ml_lifecycle.forecasting.evaluation import forecast_metrics

        config = self.config
        aws_conn_id = self.aws_conn_id or config.aws.conn_id
        endpoint_name = self.endpoint_name or config.aws.endpoint_name
        window = self.window(context)

        live = describe_live_model(SageMakerHook(aws_conn_id=aws_conn_id).get_conn(), endpoint_name)
        if live is None or live.endpoint_status not in ("InService", "Updating"):
            state = live.endpoint_status if live else "not created"
            raise AirflowSkipException(
                f"endpoint {endpoint_name} is {state}; there is no live model to monitor"
            )
        if not live.model_package_arn:
            raise AirflowSkipException(
                f"endpoint {endpoint_name} serves model {live.model_name}, which names no model package; "
                "it was not deployed by endpoint_deployment, so it has no baseline to compare with"
            )
        registry = ModelRegistry(aws_conn_id, config.aws.model_package_group)
        version = registry.describe(live.model_package_arn)
        baseline = registry.download_json(version.properties["baseline_uri"])
        trained_until = dt.date.fromisoformat(version.properties["window_end"])

        forecast_week = window.week_starts[-1] + dt.timedelta(days=7)
        warehouse = WarehouseHook(snowflake_conn_id=self.snowflake_conn_id or config.warehouse.conn_id)
        rows = warehouse.fetch_dicts(
            render_sql_file(f"{SQL_DIR}/recent_rows.sql", sql_params(config)),
            {"first_week": window.week_starts[0].isoformat(), "forecast_week": forecast_week.isoformat()},
        )
        if not rows:
            raise AirflowSkipException(f"no feature rows for {window}; nothing to monitor")
        recent = {
            name: np.array([np.nan if row[name] is None else float(row[name]) for row in rows])
            for name in FEATURE_COLUMNS
        }

        # Only weeks after the training window tell how the model does on data it never saw.
        unseen = [
            row for row in rows if row["QUANTITY"] is not None and as_date(row["WEEK_START"]) >= trained_until
        ]
        recent_wape = None
        if unseen:
            runtime = AwsBaseHook(aws_conn_id=aws_conn_id, client_type="sagemaker-runtime").get_conn()
            records = [{column: row[column] for column in (*ID_COLUMNS, *FEATURE_COLUMNS)} for row in unseen]
            predictions, _, _ = invoke_forecasts(runtime, endpoint_name, records)
            recent_wape = forecast_metrics(
                np.array([float(row["QUANTITY"]) for row in unseen]),
                np.array([prediction["forecast"] for prediction in predictions]),
            ).wape
        else:
            self.log.info("No week after the training window (ends %s) has known demand yet", trained_until)

        monitoring = config.monitoring
        report = assess_drift(
            {
                name: FeatureBaseline(**values)
                for name, values in baseline["features"].items()
                if name not in monitoring.exclude_features
            },
            recent,
            psi_threshold=monitoring.psi_threshold,
            min_drifted_features=monitoring.min_drifted_features,
            recent_wape=recent_wape,
            baseline_wape=baseline.get("holdout_wape"),
            wape_ratio_threshold=monitoring.wape_ratio_threshold,
        )
        self.publish_metrics(aws_conn_id, config, endpoint_name, version.model_version, report)

        summary = {
            **report.to_dict(),
            "endpoint_name": endpoint_name,
            "model_version": version.model_version,
            "model_package_arn": version.arn,
            "trained_until": str(trained_until),
            "weeks_with_known_demand": len({as_date(row["WEEK_START"]) for row in unseen}),
            "window": str(window),
            "window_end": str(window.local_end.date()),
            "reason": "drift: " + "; ".join(report.reasons) if report.drift else "",
        }
        self.log.info(
            "Drift of %s on %s: data_drift=%s (max PSI %.3f, %d drifted), performance_drift=%s (WAPE ratio %s)",
            version.model_version,
            window,
            report.data_drift,
            report.max_psi,
            len(report.drifted_features),
            report.performance_drift,
            f"{report.wape_ratio:.2f}" if report.wape_ratio is not None else "n/a",
        )
        if report.drift:
            self.alert(aws_conn_id, config, endpoint_name, summary)
        return summary

    def publish_metrics(
        self, aws_conn_id: str, config: LifecycleConfig, endpoint_name: str, model_version: str, report: Any
    ) -> None:
        """Send the drift figures to CloudWatch, one metric per feature plus the totals."""
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        dimensions = [
            {"Name": "EndpointName", "Value": endpoint_name},
            {"Name": "ModelVersion", "Value": model_version},
        ]
        timestamp = dt.datetime.now(dt.UTC)
        data: list[dict[str, Any]] = [
            {
                "MetricName": "FeaturePSI",
                "Dimensions": [*dimensions, {"Name": "Feature", "Value": name}],
                "Value": value,
                "Timestamp": timestamp,
            }
            for name, value in report.feature_psi.items()
        ]
        totals = {
            "MaxFeaturePSI": report.max_psi,
            "DriftedFeatures": float(len(report.drifted_features)),
            "DataDrift": float(report.data_drift),
            "PerformanceDrift": float(report.performance_drift),
        }
        if report.recent_wape is not None:
            totals["RecentWAPE"] = report.recent_wape
            totals["WAPERatio"] = report.wape_ratio
        if report.baseline_wape is not None:
            totals["HoldoutWAPE"] = report.baseline_wape
        data.extend(
            {"MetricName": name, "Dimensions": dimensions, "Value": float(value), "Timestamp": timestamp}
            for name, value in totals.items()
        )
        cloudwatch = AwsBaseHook(aws_conn_id=aws_conn_id, client_type="cloudwatch").get_conn()
        for start in range(0, len(data), METRICS_PER_CALL):
            cloudwatch.put_metric_data(
                Namespace=config.aws.cloudwatch_namespace, MetricData=data[start : start + METRICS_PER_CALL]
            )
        self.log.info(
            "Published %d metric values to CloudWatch namespace %s",
            len(data),
            config.aws.cloudwatch_namespace,
        )

    def alert(
        self, aws_conn_id: str, config: LifecycleConfig, endpoint_name: str, summary: dict[str, Any]
    ) -> None:
        from airflow.providers.amazon.aws.hooks.sns import SnsHook

        message = (
            f"Drift detected for endpoint {endpoint_name}, model {summary['model_version']}, on {summary['window']}: "
            f"{summary['reason']}. forecast_training is triggered to retrain."
        )
        SnsHook(aws_conn_id=aws_conn_id).publish_to_target(
            target_arn=config.aws.alert_topic_arn, message=message, subject=f"Drift on {endpoint_name}"[:99]
        )
        self.log.warning("%s", message)


def drift_detected(summary: dict[str, Any] | None) -> bool:
    """Tell whether a monitoring summary requests retraining."""
    return bool(summary and summary.get("drift"))
