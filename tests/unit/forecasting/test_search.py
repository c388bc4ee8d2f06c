"""Time-ordered cross-validation and the search presets."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from ml_lifecycle.exceptions import ConfigError, NotEnoughData
from ml_lifecycle.forecasting.dataset import FEATURE_COLUMNS, WeeklyDataset
from ml_lifecycle.forecasting.search import (
    param_grid,
    rolling_origin_splits,
    run_grid_search,
    time_ordered_cv,
)

WEEKS = [dt.date(2011, 8, 1) + dt.timedelta(days=7 * i) for i in range(8)]


def rows_per_week(per_week: int) -> list[dt.date]:
    return [week for week in WEEKS for _ in range(per_week)]


def test_folds_train_on_the_past_only() -> None:
    weeks = rows_per_week(3)

    folds = rolling_origin_splits(weeks, n_folds=3)

    assert len(folds) == 3
    for train, validation in folds:
        assert max(weeks[i] for i in train) < min(weeks[i] for i in validation)
    assert [sorted({weeks[i] for i in validation}) for _, validation in folds] == [
        [WEEKS[5]],
        [WEEKS[6]],
        [WEEKS[7]],
    ]
    assert [len(train) for train, _ in folds] == [15, 18, 21]


def test_too_few_weeks_for_folds() -> None:
    with pytest.raises(NotEnoughData, match="4 training weeks are too few for 3 rolling-origin folds"):
        rolling_origin_splits(WEEKS[:4], n_folds=3)


@pytest.mark.parametrize("split", ["shuffle", "kfold", "stratified"])
def test_shuffled_splits_rejected(split: str) -> None:
    with pytest.raises(ConfigError, match=f"split '{split}' is not allowed"):
        time_ordered_cv(split, rows_per_week(2), 3)


def test_unknown_preset_rejected() -> None:
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        param_grid("huge", 0)


@pytest.mark.parametrize("preset", ["fast", "default", "thorough"])
def test_presets_search_both_model_families(preset: str) -> None:
    families = {type(entry["model"][0]).__name__ for entry in param_grid(preset, 7)}

    assert families == {"HistGradientBoostingRegressor", "RandomForestRegressor"}


def synthetic_dataset(seed: int = 0) -> WeeklyDataset:
    rng = np.random.default_rng(seed)
    weeks = rows_per_week(30)
    features = rng.uniform(1, 50, size=(len(weeks), len(FEATURE_COLUMNS)))
    scale = features[:, FEATURE_COLUMNS.index("ROLLING_MEAN_4")] + 1
    target = np.round(scale * (0.8 + 0.4 * features[:, 0] / 50))
    return WeeklyDataset(
        features, target, np.array([f"S{i % 30}" for i in range(len(weeks))]), np.array(weeks)
    )


def test_same_inputs_same_model() -> None:
    dataset = synthetic_dataset()
    common = dict(
        preset="fast", cv_folds=3, random_state=11, n_jobs=1, scale_feature="ROLLING_MEAN_4", scale_offset=1.0
    )

    first = run_grid_search(dataset, **common)
    second = run_grid_search(dataset, **common)

    assert first.best_params == second.best_params
    np.testing.assert_array_equal(
        first.best_estimator.predict(dataset.features), second.best_estimator.predict(dataset.features)
    )
    assert len(first.cv_table()) == 3
    assert first.cv_table()[0]["rank"] == 1
