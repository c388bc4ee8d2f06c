"""Train, evaluate and register a demand-forecast model for a window of weeks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_lifecycle.exceptions import ConfigError, NotEnoughData
from ml_lifecycle.hooks.warehouse import WarehouseHook, render_sql_file, sql_params
from ml_lifecycle.links import ModelReportLink
from ml_lifecycle.operators.base import LifecycleOperator, is_backfill, run_type_of
from ml_lifecycle.windows import window_ending

if TYPE_CHECKING:
    from airflow.sdk import Context

    from ml_lifecycle.aws.registry import ModelRegistry, ModelVersion
    from ml_lifecycle.config import LifecycleConfig
    from ml_lifecycle.windows import Window

SQL_DIR = "forecast_training"
TRAINING_PARAM_NAMES = ("window_weeks", "preset", "deploy", "reason")


def default_reason(context: Context) -> str:
    """Return the reason of a run given none: backfill, new features, schedule or a manual run."""
    if is_backfill(context):
        return "backfill"
    run_type = run_type_of(context)
    if run_type == "asset_triggered":
        return "new features"
    if run_type == "scheduled":
        return "scheduled weekly retraining"
    return "manual run"


def training_key(window: Window, preset: str) -> str:
    """Return the key that identifies one training of one window; a re-run with the same key registers nothing."""
    return f"{window.local_end:%Y%m%d}-w{window.weeks}-{preset}"


def code_version() -> str:
    """Return the version of this package, and the git commit when the deployment sets it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        package_version = version("airflow-ml-lifecycle")
    except PackageNotFoundError:
        package_version = "unknown"
    commit = os.environ.get("ML_LIFECYCLE_GIT_COMMIT", "")
    return f"{package_version}+{commit[:12]}" if commit else package_version


class DemandForecastTrainingOperator(LifecycleOperator):
    """Train a candidate with GridSearchCV, gate it against baselines and the champion, and register it.

    The window is ``window_weeks`` whole weeks ending at the run's window end,
    so a backfill run for an old week trains only on data before it. The last
    ``holdout_weeks`` weeks are held out; cross-validation inside the rest is
    rolling-origin. The candidate, the last-value forecast, the 4-week moving
    average and the current champion are all scored on the same holdout. The
    version is registered as Approved or Rejected with its metrics, and its
    archive, evaluation and drift baseline go to S3.

    :param snowflake_conn_id: Airflow connection to Snowflake (templated).
    :param aws_conn_id: Airflow connection to AWS (templated).
    :return: a summary with the version, metrics and gate decision (XCom).
    """

    template_fields: tuple[str, ...] = (
        *LifecycleOperator.template_fields,
        "snowflake_conn_id",
        "aws_conn_id",
    )
    ui_color = "#f2e3f7"

    def __init__(
        self, *, snowflake_conn_id: str | None = None, aws_conn_id: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.snowflake_conn_id = snowflake_conn_id
        self.aws_conn_id = aws_conn_id

    def training_settings(self, context: Context, config: LifecycleConfig) -> dict[str, Any]:
        """Merge run parameters over the configuration and check them."""
        params = context.get("params") or {}
        settings = {
            "window_weeks": params.get("window_weeks") or config.training.window_weeks,
            "preset": params.get("preset") or config.training.preset,
            "deploy": params.get("deploy", True),
            "reason": params.get("reason") or "",
        }
        conf = getattr(context.get("dag_run"), "conf", None) or {}
        if conf.get("reason") and not settings["reason"]:
            settings["reason"] = str(conf["reason"])

        try:
            settings["window_weeks"] = int(settings["window_weeks"])
        except (TypeError, ValueError) as err:
            raise ConfigError(
                f"invalid window_weeks {settings['window_weeks']!r}: expected a whole number"
            ) from err

        minimum = config.training.holdout_weeks + config.training.cv_folds + 2
        if not minimum <= settings["window_weeks"] <= 104:
            raise ConfigError(
                f"invalid window_weeks {settings['window_weeks']}: expected {minimum} to 104 weeks "
                f"(holdout {config.training.holdout_weeks} + {config.training.cv_folds} CV folds + 2)"
            )
        if settings["preset"] not in ("fast", "default", "thorough"):
            raise ConfigError(f"invalid preset {settings['preset']!r}: expected fast, default or thorough")

        if is_backfill(context) and settings["deploy"]:
            self.log.info("Backfill run: the version is registered but never deployed")
            settings["deploy"] = False
        if not settings["reason"]:
            settings["reason"] = default_reason(context)
        return settings

    def execute(self, context: Context) -> dict[str, Any]:
        from ml_lifecycle.aws.registry import ModelRegistry

        config = self.config
        settings = self.training_settings(context, config)
        run_window = self.window(context)
        window = window_ending(run_window.end, settings["window_weeks"], config.schedule.timezone, "training")
        key = training_key(window, settings["preset"])
        self.log.info(
            "Training %s on %s with preset %s: %s", key, window, settings["preset"], settings["reason"]
        )

        registry = ModelRegistry(self.aws_conn_id or config.aws.conn_id, config.aws.model_package_group)
        existing = registry.find_by_training_key(key)
        if existing is not None:
            self.log.info(
                "Version %d (%s) was already trained for %s with status %s; nothing new is registered",
                existing.version_number,
                existing.arn,
                key,
                existing.approval_status,
            )
            return self.summary_of_existing(existing, settings)

        dataset = self.load_dataset(config, window)
        return self.train_and_register(
            context=context,
            config=config,
            registry=registry,
            window=window,
            key=key,
            settings=settings,
            dataset=dataset,
        )

    def load_dataset(self, config: LifecycleConfig, window: Window) -> Any:
        from ml_lifecycle.forecasting.dataset import dataset_from_rows

        warehouse = WarehouseHook(snowflake_conn_id=self.snowflake_conn_id or config.warehouse.conn_id)
        rows = warehouse.fetch_dicts(
            render_sql_file(f"{SQL_DIR}/training_rows.sql", sql_params(config)),
            {
                "first_week": window.week_starts[0].isoformat(),
                "last_week": window.week_starts[-1].isoformat(),
            },
        )
        dataset = dataset_from_rows(rows)
        missing = sorted(set(window.week_starts) - set(dataset.distinct_weeks))
        if missing:
            raise NotEnoughData(
                f"the training window {window} lacks features for {len(missing)} weeks "
                f"({', '.join(str(week) for week in missing[:6])}{'...' if len(missing) > 6 else ''}); run "
                "sales_features for them first, for example by triggering pos_load_check with "
                "window_end and weeks parameters"
            )
        self.log.info("Loaded %d training rows over %d weeks", len(dataset), len(dataset.distinct_weeks))
        return dataset

    def train_and_register(
        self,
        *,
        context: Context,
        config: LifecycleConfig,
        registry: ModelRegistry,
        window: Window,
        key: str,
        settings: dict[str, Any],
        dataset: Any,
    ) -> dict[str, Any]:
        from ml_lifecycle.forecasting.candidate import TrainingSettings, train_candidate
        from ml_lifecycle.forecasting.evaluation import approval_gate, forecast_metrics

        training = config.training
        # The training key names the version: one window and preset, one version.
        model_version = key
        candidate = train_candidate(
            dataset,
            TrainingSettings(
                preset=settings["preset"],
                holdout_weeks=training.holdout_weeks,
                cv_folds=training.cv_folds,
                cv_split=training.cv_split,
                random_state=training.random_state,
                n_jobs=training.n_jobs,
            ),
            model_version=model_version,
        )
        candidate.metadata.update(
            training_key=key, window_start=str(window.week_starts[0]), window_end=str(window.local_end.date())
        )
        self.log.info(
            "Grid search took %.1f s; best %s", candidate.search.seconds, candidate.search.best_params
        )

        champion_version = registry.champion(exclude_training_key=key)
        forecasts = dict(candidate.forecasts)
        if champion_version is not None:
            forecasts["champion"] = self.champion_forecasts(registry, champion_version, candidate.holdout)
        metrics = {
            name: forecast_metrics(candidate.holdout.target, values) for name, values in forecasts.items()
        }
        decision = approval_gate(
            metrics["candidate"],
            metrics["moving_average_4"],
            metrics.get("champion"),
            baseline_margin=training.baseline_margin,
            champion_margin=training.champion_margin,
        )
        self.log.info("Gate: %s; %s", decision.status, "; ".join(decision.reasons))

        uris = self.publish_artifacts(
            context=context,
            config=config,
            registry=registry,
            key=key,
            window=window,
            settings=settings,
            candidate=candidate,
            forecasts=forecasts,
            metrics=metrics,
            decision=decision,
            champion_arn=champion_version.arn if champion_version else None,
        )
        properties = {
            "model_version": model_version,
            "training_key": key,
            "window_start": str(window.week_starts[0]),
            "window_end": str(window.local_end.date()),
            "holdout_wape": f"{metrics['candidate'].wape:.6f}",
            "moving_average_wape": f"{metrics['moving_average_4'].wape:.6f}",
            "champion_wape": f"{metrics['champion'].wape:.6f}" if "champion" in metrics else "none",
            "best_model": str(candidate.search.best_params.get("model")),
            "preset": settings["preset"],
            "reason": settings["reason"][:200],
            "deploy_requested": str(bool(settings["deploy"])).lower(),
            "baseline_uri": uris["baseline"],
            "report_uri": uris["report"],
            "features": str(len(dataset.feature_columns)),
            "code_version": code_version(),
            "dag_run_id": context["run_id"][:200],
        }
        version = registry.register(
            model_data_url=uris["model"],
            image=config.aws.image_uri,
            approval_status=decision.status,
            evaluation_uri=uris["evaluation"],
            description=f"Weekly demand forecast trained on {window}: {'; '.join(decision.reasons)}",
            properties=properties,
        )
        return {
            "model_package_arn": version.arn,
            "version_number": version.version_number,
            "model_version": model_version,
            "training_key": key,
            "approval_status": decision.status,
            "gate_reasons": decision.reasons,
            "holdout_wape": metrics["candidate"].wape,
            "baseline_wape": metrics["moving_average_4"].wape,
            "last_value_wape": metrics["last_value"].wape,
            "champion_wape": metrics["champion"].wape if "champion" in metrics else None,
            "metrics": {name: value.to_dict() for name, value in metrics.items()},
            "best_params": {
                name: (value if isinstance(value, str | int | float) else str(value))
                for name, value in candidate.search.best_params.items()
            },
            "model_data_url": uris["model"],
            "evaluation_uri": uris["evaluation"],
            "report_uri": uris["report"],
            "report_url": uris["report_url"],
            "window_start": str(window.week_starts[0]),
            "window_end": str(window.local_end.date()),
            "deploy": bool(settings["deploy"]) and decision.approved,
            "reason": settings["reason"],
            "newly_registered": True,
        }

    def publish_artifacts(
        self,
        *,
        context: Context,
        config: LifecycleConfig,
        registry: ModelRegistry,
        key: str,
        window: Window,
        settings: dict[str, Any],
        candidate: Any,
        forecasts: dict[str, Any],
        metrics: dict[str, Any],
        decision: Any,
        champion_arn: str | None,
    ) -> dict[str, str]:
        """Upload the model archive, evaluation, drift baseline and report; return their locations."""
        import tempfile

        from ml_lifecycle.aws.s3 import browser_url, upload_directory
        from ml_lifecycle.forecasting.artifact import build_model_archive
        from ml_lifecycle.forecasting.drift import feature_baseline
        from ml_lifecycle.forecasting.report import HoldoutForecasts, permutation_importances, write_report

        bucket, group = config.aws.artifact_bucket, config.aws.model_package_group
        prefix = f"models/{group}/{key}"
        uris = {
            "model": f"s3://{bucket}/{prefix}/model.tar.gz",
            "evaluation": f"s3://{bucket}/{prefix}/evaluation.json",
            "baseline": f"s3://{bucket}/{prefix}/baseline.json",
            "report": f"s3://{bucket}/{prefix}/report/report.md",
        }
        holdout = candidate.holdout
        evaluation = {
            "model_version": key,
            "training_key": key,
            "window": window.to_extra(),
            "holdout_weeks": [str(week) for week in holdout.distinct_weeks],
            "metrics": {name: value.to_dict() for name, value in metrics.items()},
            "gate": {"status": decision.status, "reasons": decision.reasons},
            "champion": champion_arn,
            "best_params": candidate.search.best_params,
            "cv_results": candidate.search.cv_table(),
            "search_seconds": candidate.search.seconds,
            "rows": {"train": len(candidate.train), "holdout": len(holdout)},
            "features": list(holdout.feature_columns),
            "reason": settings["reason"],
            "report": uris["report"],
        }
        baseline = {
            "model_version": key,
            "holdout_wape": metrics["candidate"].wape,
            "features": {
                name: feature_baseline(candidate.train.column(name)).to_dict()
                for name in holdout.feature_columns
            },
        }
        registry.upload_bytes(
            build_model_archive(candidate.estimator, candidate.metadata), uris["model"], "application/gzip"
        )
        registry.upload_json(evaluation, uris["evaluation"])
        registry.upload_json(baseline, uris["baseline"])

        importances = permutation_importances(
            candidate.predict_units,
            holdout.features,
            holdout.target,
            holdout.feature_columns,
            config.training.random_state,
        )
        client = registry.s3.get_conn()
        with tempfile.TemporaryDirectory(prefix="model-report-") as directory:
            write_report(
                Path(directory),
                evaluation=evaluation,
                holdout=HoldoutForecasts(holdout.weeks, holdout.stock_codes, holdout.target, forecasts),
                importances=importances,
            )
            upload_directory(client, Path(directory), bucket, f"{prefix}/report")
        uris["report_url"] = browser_url(client, bucket, f"{prefix}/report/report.md")
        ModelReportLink.persist(context, uris["report_url"])
        self.log.info("Model report at %s (%s)", uris["report"], uris["report_url"])
        return uris

    def champion_forecasts(self, registry: ModelRegistry, champion: ModelVersion, holdout: Any) -> Any:
        """Forecast the candidate's holdout with the current champion, through its own archive and handlers."""
        from ml_lifecycle.forecasting.artifact import read_model_archive
        from ml_lifecycle.forecasting.candidate import score_on_holdout

        estimator, metadata = read_model_archive(registry.download_bytes(champion.model_data_url))
        if list(metadata["feature_columns"]) != list(holdout.feature_columns):
            self.log.warning(
                "Champion %s uses other feature columns than the candidate; it is scored on the columns it knows",
                champion.arn,
            )
        forecasts = score_on_holdout(estimator, metadata, holdout)
        self.log.info("Champion %s scored on the holdout", champion.model_version)
        return forecasts

    @staticmethod
    def summary_of_existing(version: ModelVersion, settings: dict[str, Any]) -> dict[str, Any]:
        properties = version.properties

        def number(name: str) -> float | None:
            try:
                return float(properties[name])
            except (KeyError, ValueError):
                return None

        return {
            "model_package_arn": version.arn,
            "version_number": version.version_number,
            "model_version": version.model_version,
            "training_key": version.training_key,
            "approval_status": version.approval_status,
            "gate_reasons": [],
            "holdout_wape": number("holdout_wape"),
            "baseline_wape": number("moving_average_wape"),
            "champion_wape": number("champion_wape"),
            "model_data_url": version.model_data_url,
            "window_start": properties.get("window_start"),
            "window_end": properties.get("window_end"),
            "deploy": bool(settings["deploy"]) and version.approval_status == "Approved",
            "reason": properties.get("reason", ""),
            "newly_registered": False,
        }


def deployment_decision(summary: dict[str, Any]) -> bool:
    """Tell whether a training summary requests deployment: approved, deploy requested, not a backfill."""
    return bool(summary.get("deploy")) and summary.get("approval_status") == "Approved"


class PublishApprovedModelOperator(LifecycleOperator):
    """Announce an approved, deployable model version on the task's outlet assets.

    It reads the summary the training task returned and puts the model
    package ARN, the version and the training window into the asset event,
    which triggers endpoint_deployment. Put a short-circuit task before it so
    that rejected and backfill versions announce nothing.

    :param training_task_id: task whose XCom contains the training summary (templated).
    """

    template_fields: tuple[str, ...] = (*LifecycleOperator.template_fields, "training_task_id")

    def __init__(self, *, training_task_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.training_task_id = training_task_id

    def execute(self, context: Context) -> dict[str, Any]:
        summary = context["ti"].xcom_pull(task_ids=self.training_task_id)
        if not summary or not deployment_decision(summary):
            raise ConfigError(
                f"task {self.training_task_id} returned no deployable version ({summary!r}); "
                "a short-circuit task must skip this one for rejected or backfill versions"
            )
        config = self.config
        window = window_ending(summary["window_end"], 1, config.schedule.timezone, "training summary")
        payload = {
            key: summary[key]
            for key in ("model_package_arn", "model_version", "training_key", "window_start", "reason")
        }
        self.emit_outlet_events(context, window, **payload)
        return payload
