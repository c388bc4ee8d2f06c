"""Train, evaluate and register a demand-forecast model for a window of weeks."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ml_lifecycle.exceptions import ConfigError, NotEnoughData
from ml_lifecycle.hooks.warehouse import WarehouseHook, render_sql_file, sql_params
from ml_lifecycle.operators.base import LifecycleOperator, is_backfill
from ml_lifecycle.windows import window_ending

if TYPE_CHECKING:
    from airflow.sdk import Context

    from ml_lifecycle.aws.registry import ModelRegistry, ModelVersion
    from ml_lifecycle.config import LifecycleConfig
    from ml_lifecycle.windows import Window

SQL_DIR = "forecast_training"
TRAINING_PARAM_NAMES = ("window_weeks", "preset", "deploy", "reason")


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
            settings["reason"] = "backfill" if is_backfill(context) else "scheduled weekly retraining"
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
        from ml_lifecycle.forecasting.artifact import build_model_archive, forecast_units, model_metadata
        from ml_lifecycle.forecasting.dataset import (
            ID_COLUMNS,
            TARGET_COLUMN,
            TARGET_SCALE_FEATURE,
            TARGET_SCALE_OFFSET,
        )
        from ml_lifecycle.forecasting.drift import feature_baseline
        from ml_lifecycle.forecasting.evaluation import (
            approval_gate,
            forecast_metrics,
            last_value_forecast,
            metrics_table,
            moving_average_forecast,
        )
        from ml_lifecycle.forecasting.search import run_grid_search

        training = config.training
        train, holdout = dataset.split_holdout(training.holdout_weeks)
        result = run_grid_search(
            train,
            preset=settings["preset"],
            cv_folds=training.cv_folds,
            random_state=training.random_state,
            n_jobs=training.n_jobs,
            scale_feature=TARGET_SCALE_FEATURE,
            scale_offset=TARGET_SCALE_OFFSET,
        )
        self.log.info("Grid search took %.1f s; best %s", result.seconds, result.best_params)

        # The training key names the version: one window and preset, one version.
        model_version = key
        metadata = model_metadata(
            model_version=model_version,
            feature_columns=dataset.feature_columns,
            id_columns=ID_COLUMNS,
            target=TARGET_COLUMN,
            scale_feature=TARGET_SCALE_FEATURE,
            scale_offset=TARGET_SCALE_OFFSET,
            extra={
                "training_key": key,
                "window_start": str(window.week_starts[0]),
                "window_end": str(window.local_end.date()),
            },
        )
        candidate = forecast_metrics(
            holdout.target, forecast_units(result.best_estimator, metadata, holdout.features)
        )
        moving_average = forecast_metrics(
            holdout.target, moving_average_forecast(holdout.column("ROLLING_MEAN_4"))
        )
        last_value = forecast_metrics(holdout.target, last_value_forecast(holdout.column("LAG_1")))

        champion_version = registry.champion(exclude_training_key=key)
        champion = None
        if champion_version is not None:
            champion = self.score_champion(registry, champion_version, holdout)
        decision = approval_gate(
            candidate,
            moving_average,
            champion,
            baseline_margin=training.baseline_margin,
            champion_margin=training.champion_margin,
        )
        self.log.info("Gate: %s; %s", decision.status, "; ".join(decision.reasons))

        prefix = f"s3://{config.aws.artifact_bucket}/models/{config.aws.model_package_group}/{key}"
        model_data_url = f"{prefix}/model.tar.gz"
        evaluation_uri = f"{prefix}/evaluation.json"
        baseline_uri = f"{prefix}/baseline.json"
        metrics = metrics_table(
            {
                "candidate": candidate,
                "moving_average_4": moving_average,
                "last_value": last_value,
                "champion": champion,
            }
        )
        evaluation = {
            "model_version": model_version,
            "training_key": key,
            "window": window.to_extra(),
            "holdout_weeks": [str(week) for week in holdout.distinct_weeks],
            "metrics": metrics,
            "gate": {"status": decision.status, "reasons": decision.reasons},
            "champion": champion_version.arn if champion_version else None,
            "best_params": result.best_params,
            "cv_results": result.cv_table(),
            "search_seconds": result.seconds,
            "rows": {"train": len(train), "holdout": len(holdout)},
            "reason": settings["reason"],
        }
        baseline = {
            "model_version": model_version,
            "holdout_wape": candidate.wape,
            "features": {
                name: feature_baseline(train.column(name)).to_dict() for name in dataset.feature_columns
            },
        }
        registry.upload_bytes(
            build_model_archive(result.best_estimator, metadata), model_data_url, "application/gzip"
        )
        registry.upload_json(evaluation, evaluation_uri)
        registry.upload_json(baseline, baseline_uri)

        properties = {
            "model_version": model_version,
            "training_key": key,
            "window_start": str(window.week_starts[0]),
            "window_end": str(window.local_end.date()),
            "holdout_wape": f"{candidate.wape:.6f}",
            "moving_average_wape": f"{moving_average.wape:.6f}",
            "champion_wape": f"{champion.wape:.6f}" if champion else "none",
            "best_model": str(result.best_params.get("model")),
            "preset": settings["preset"],
            "reason": settings["reason"][:200],
            "deploy_requested": str(bool(settings["deploy"])).lower(),
            "baseline_uri": baseline_uri,
            "features": str(len(dataset.feature_columns)),
            "code_version": code_version(),
            "dag_run_id": context["run_id"][:200],
        }
        version = registry.register(
            model_data_url=model_data_url,
            image=config.aws.image_uri,
            approval_status=decision.status,
            evaluation_uri=evaluation_uri,
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
            "holdout_wape": candidate.wape,
            "baseline_wape": moving_average.wape,
            "last_value_wape": last_value.wape,
            "champion_wape": champion.wape if champion else None,
            "metrics": metrics,
            "best_params": {
                k: (v if isinstance(v, str | int | float) else str(v)) for k, v in result.best_params.items()
            },
            "model_data_url": model_data_url,
            "evaluation_uri": evaluation_uri,
            "window_start": str(window.week_starts[0]),
            "window_end": str(window.local_end.date()),
            "deploy": bool(settings["deploy"]) and decision.approved,
            "reason": settings["reason"],
            "newly_registered": True,
        }

    def score_champion(self, registry: ModelRegistry, champion: ModelVersion, holdout: Any) -> Any:
        """Score the current champion on the candidate's holdout, through its own archive and handlers."""
        from ml_lifecycle.forecasting.artifact import forecast_units, read_model_archive
        from ml_lifecycle.forecasting.evaluation import forecast_metrics

        estimator, metadata = read_model_archive(registry.download_bytes(champion.model_data_url))
        columns = metadata["feature_columns"]
        if list(columns) != list(holdout.feature_columns):
            self.log.warning(
                "Champion %s uses other feature columns than the candidate; it is scored on the columns it knows",
                champion.arn,
            )
        indexes = [holdout.feature_columns.index(column) for column in columns]
        metrics = forecast_metrics(
            holdout.target, forecast_units(estimator, metadata, holdout.features[:, indexes])
        )
        self.log.info("Champion %s scores WAPE %.4f on the holdout", champion.model_version, metrics.wape)
        return metrics

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
