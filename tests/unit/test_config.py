"""Configuration files: the shipped ones load, and bad values are named in the error."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml_lifecycle.config import PROJECT_ROOT, parse_config
from ml_lifecycle.exceptions import ConfigError

CONFIG_DIR = PROJECT_ROOT / "include" / "config"


@pytest.mark.parametrize("name", ["lifecycle.yaml", "local.yaml", "compose.yaml"])
def test_shipped_files_load(name: str) -> None:
    config = parse_config(CONFIG_DIR / name)

    assert config.schedule.timezone == "Europe/London"
    assert config.training.window_weeks == 13
    assert config.features.top_n_skus == 500
    assert config.training.cv_split == "rolling_origin"


def test_local_file_overrides_only_some_keys() -> None:
    production = parse_config(CONFIG_DIR / "lifecycle.yaml")
    local = parse_config(CONFIG_DIR / "local.yaml")

    assert production.schedule.end_date is None
    assert str(local.schedule.end_date) == "2011-12-12"
    assert local.aws.artifact_bucket == production.aws.artifact_bucket


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "override.yaml"
    path.write_text(f"extends: {CONFIG_DIR / 'lifecycle.yaml'}\n{text}", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("training:\n  cv_split: shuffle\n", "split 'shuffle' is not allowed"),
        ("training:\n  cv_split: kfold\n", "leaks the future"),
        ("training:\n  window_weeks: 5\n", "window_weeks=5 is too short"),
        ("training:\n  preset: huge\n", "training.preset"),
        ("schedule:\n  timezone: Mars/Olympus\n", "unknown IANA time zone 'Mars/Olympus'"),
        ("warehouse:\n  raw_schema: 'RAW; DROP'\n", "not a plain Snowflake identifier"),
        ("features:\n  product_code_pattern: '[0-9'\n", "invalid regular expression"),
        ("schedule:\n  end_date: '2010-01-01'\n", "must be after start_date"),
        ("monitoring:\n  wape_ratio_threshold: 0.5\n", "monitoring.wape_ratio_threshold"),
        ("schedule:\n  training_cron: every monday\n", "'every monday' is not a cron expression"),
        ("schedule:\n  load_check_cron: '0 6 * *'\n", "schedule.load_check_cron"),
    ],
)
def test_invalid_values_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(write(tmp_path, text))


def test_missing_file_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found; set ML_LIFECYCLE_CONFIG"):
        parse_config(tmp_path / "absent.yaml")


def test_extends_loop_rejected(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n", encoding="utf-8")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n", encoding="utf-8")

    with pytest.raises(ConfigError, match="extend each other in a loop"):
        parse_config(tmp_path / "a.yaml")
