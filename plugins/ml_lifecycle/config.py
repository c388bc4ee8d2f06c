"""Typed settings of the lifecycle, loaded from a YAML file.

DAG files call :func:`load_config` at parse time, so this module reads only a
local file: no connection, Variable or network access.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ml_lifecycle.exceptions import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG_PATH = PROJECT_ROOT / "include" / "config" / "lifecycle.yaml"
CONFIG_ENV_VAR = "ML_LIFECYCLE_CONFIG"

# Snowflake identifiers that need no quoting. Config values are spliced into
# SQL as identifiers, so anything else is rejected here.
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,254}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_identifier(value: str) -> str:
    if not _IDENTIFIER.match(value):
        raise ValueError(
            f"{value!r} is not a plain Snowflake identifier: expected a letter or underscore "
            "followed by letters, digits, '_' or '$'"
        )
    return value.upper()


class ScheduleConfig(_Section):
    timezone: str = "Europe/London"
    start_date: dt.date
    end_date: dt.date | None = None
    load_check_cron: str = "0 6 * * 1"
    training_cron: str = "0 8 * * 1"
    owner: str = "ml-platform"
    retries: int = Field(default=2, ge=0, le=10)
    retry_delay_minutes: int = Field(default=5, ge=0, le=240)

    @field_validator("load_check_cron", "training_cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        from croniter import croniter

        if not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a cron expression; expected five fields such as '0 8 * * 1'")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"unknown IANA time zone {value!r}, for example 'Europe/London'") from err
        return value

    @model_validator(mode="after")
    def _end_after_start(self) -> ScheduleConfig:
        if self.end_date is not None and self.end_date <= self.start_date:
            raise ValueError(f"end_date {self.end_date} must be after start_date {self.start_date}")
        return self


class WarehouseConfig(_Section):
    conn_id: str = "snowflake_default"
    account: str = "local"
    database: str = "LIFECYCLE"
    raw_schema: str = "RAW"
    staging_schema: str = "STAGING"
    features_schema: str = "FEATURES"
    audit_schema: str = "AUDIT"
    stage: str = "SINK_STAGE"

    _identifiers = field_validator(
        "database", "raw_schema", "staging_schema", "features_schema", "audit_schema", "stage"
    )(_check_identifier)

    def tables(self) -> dict[str, str]:
        """Map each warehouse object the SQL files use to its qualified name."""
        db = self.database
        return {
            "database": db,
            "raw_schema": f"{db}.{self.raw_schema}",
            "staging_schema": f"{db}.{self.staging_schema}",
            "features_schema": f"{db}.{self.features_schema}",
            "audit_schema": f"{db}.{self.audit_schema}",
            "sink_stage": f"{db}.{self.raw_schema}.{self.stage}",
            "pos_transactions": f"{db}.{self.raw_schema}.POS_TRANSACTIONS",
            "pos_quarantine": f"{db}.{self.raw_schema}.POS_QUARANTINE",
            "pos_landing": f"{db}.{self.raw_schema}.POS_LANDING",
            "quarantine_landing": f"{db}.{self.raw_schema}.POS_QUARANTINE_LANDING",
            "sink_loads": f"{db}.{self.raw_schema}.SINK_LOADS",
            "sink_offsets": f"{db}.{self.raw_schema}.SINK_OFFSETS",
            "pos_lines": f"{db}.{self.staging_schema}.POS_LINES",
            "uk_bank_holidays": f"{db}.{self.staging_schema}.UK_BANK_HOLIDAYS",
            "weekly_demand": f"{db}.{self.features_schema}.WEEKLY_DEMAND",
            "load_checks": f"{db}.{self.audit_schema}.LOAD_CHECKS",
            "validation_runs": f"{db}.{self.audit_schema}.VALIDATION_RUNS",
        }


class KafkaConfig(_Section):
    conn_id: str = "kafka_default"
    topic: str = "pos_transactions"
    sink_group: str = "snowflake-sink"


class AwsConfig(_Section):
    conn_id: str = "aws_default"
    region: str = "eu-west-2"
    artifact_bucket: str
    model_package_group: str
    endpoint_name: str
    image_uri: str
    execution_role_arn: str
    instance_type: str = "ml.m5.large"
    initial_instance_count: int = Field(default=1, ge=1)
    cloudwatch_namespace: str = "MLLifecycle/DemandForecast"
    alert_topic_arn: str
    deploy_check_interval_s: int = Field(default=30, ge=1)
    deploy_timeout_s: int = Field(default=3600, ge=60)


class LoadCheckConfig(_Section):
    max_staleness_hours: float = Field(default=72, gt=0)


class ValidationConfig(_Section):
    suite: str = "include/gx/pos_transactions.json"
    min_rows: int = Field(default=1000, ge=1)
    data_docs_prefix: str = "data-docs"

    def suite_path(self) -> Path:
        """Return the suite file, relative paths resolved against the project root."""
        path = Path(self.suite)
        return path if path.is_absolute() else PROJECT_ROOT / path


class FeaturesConfig(_Section):
    top_n_skus: int = Field(default=500, ge=1, le=10_000)
    product_code_pattern: str = r"^[0-9]{5}[A-Za-z]{0,2}$"

    @field_validator("product_code_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as err:
            raise ValueError(f"invalid regular expression {value!r}: {err}") from err
        if "'" in value:
            raise ValueError(f"the pattern {value!r} must not contain a single quote")
        return value


PresetName = Literal["fast", "default", "thorough"]
# Cross-validation splits that train only on weeks before the ones they validate on.
TIME_ORDERED_SPLITS = ("rolling_origin",)


class TrainingConfig(_Section):
    window_weeks: int = Field(default=13, ge=4, le=104)
    holdout_weeks: int = Field(default=2, ge=1, le=8)
    cv_folds: int = Field(default=3, ge=2, le=10)
    # Only time-ordered splits are allowed; see forecasting.search.time_ordered_cv.
    cv_split: str = "rolling_origin"
    preset: PresetName = "default"
    random_state: int = 42
    n_jobs: int = Field(default=2, ge=1)
    baseline_margin: float = Field(default=0.0, ge=0.0, lt=1.0)
    champion_margin: float = Field(default=0.0, ge=0.0, lt=1.0)

    @field_validator("cv_split")
    @classmethod
    def _time_ordered(cls, value: str) -> str:
        if value not in TIME_ORDERED_SPLITS:
            raise ValueError(
                f"cross-validation split {value!r} is not allowed: shuffled and k-fold splits train on weeks "
                f"after the validation week, which leaks the future; use one of {', '.join(TIME_ORDERED_SPLITS)}"
            )
        return value

    @model_validator(mode="after")
    def _window_holds_folds(self) -> TrainingConfig:
        # Each CV fold validates on at least one week, and the first fold
        # trains on at least two, before the holdout weeks at the end.
        needed = self.holdout_weeks + self.cv_folds + 2
        if self.window_weeks < needed:
            raise ValueError(
                f"window_weeks={self.window_weeks} is too short for holdout_weeks={self.holdout_weeks} "
                f"and cv_folds={self.cv_folds}: expected at least {needed}"
            )
        return self


class MonitoringConfig(_Section):
    psi_threshold: float = Field(default=0.25, gt=0)
    min_drifted_features: int = Field(default=3, ge=1)
    wape_ratio_threshold: float = Field(default=1.5, gt=1.0)
    # Calendar features change by construction from week to week, so their PSI
    # is no evidence of drift. The data drift check leaves them out.
    exclude_features: tuple[str, ...] = ("WEEK_OF_YEAR", "MONTH", "WEEKS_TO_CHRISTMAS", "BANK_HOLIDAYS")


class LifecycleConfig(_Section):
    schedule: ScheduleConfig
    warehouse: WarehouseConfig = WarehouseConfig()
    kafka: KafkaConfig = KafkaConfig()
    aws: AwsConfig
    load_check: LoadCheckConfig = LoadCheckConfig()
    validation: ValidationConfig = ValidationConfig()
    features: FeaturesConfig = FeaturesConfig()
    training: TrainingConfig = TrainingConfig()
    monitoring: MonitoringConfig = MonitoringConfig()


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_layers(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path in seen:
        raise ConfigError(f"configuration files extend each other in a loop: {' -> '.join(map(str, seen))}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as err:
        raise ConfigError(
            f"configuration file {path} not found; set {CONFIG_ENV_VAR} to a YAML file"
        ) from err
    except yaml.YAMLError as err:
        raise ConfigError(f"configuration file {path} is not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"configuration file {path} must contain a mapping, got {type(raw).__name__}")

    base_name = raw.pop("extends", None)
    if base_name is None:
        return raw
    base = _read_layers((path.parent / base_name).resolve(), (*seen, path))
    return _deep_merge(base, raw)


def parse_config(path: Path) -> LifecycleConfig:
    """Read and validate one configuration file, following its ``extends`` chain.

    :raises ConfigError: if a file is missing or a value is invalid; the message
        names the key, the value and what was expected.
    """
    data = _read_layers(path.resolve())
    try:
        return LifecycleConfig.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in issue['loc'])}: {issue['msg']} (got {issue.get('input')!r})"
            for issue in err.errors()
        )
        raise ConfigError(f"invalid configuration in {path}: {problems}") from err


def config_path() -> Path:
    """Return the configuration file named by ``ML_LIFECYCLE_CONFIG``, or the default one."""
    value = os.environ.get(CONFIG_ENV_VAR)
    return Path(value) if value else DEFAULT_CONFIG_PATH


@cache
def _load_cached(path: Path) -> LifecycleConfig:
    return parse_config(path)


def load_config() -> LifecycleConfig:
    """Load the active configuration; repeated calls for the same file reuse the result."""
    return _load_cached(config_path().resolve())
