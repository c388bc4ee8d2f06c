"""Train a candidate on a window of weeks and score it, with the baselines, on the holdout.

No I/O: the caller loads the dataset and stores what this returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ml_lifecycle.forecasting.artifact import forecast_units, model_metadata
from ml_lifecycle.forecasting.dataset import (
    ID_COLUMNS,
    TARGET_COLUMN,
    TARGET_SCALE_FEATURE,
    TARGET_SCALE_OFFSET,
    WeeklyDataset,
)
from ml_lifecycle.forecasting.evaluation import (
    ForecastMetrics,
    forecast_metrics,
    last_value_forecast,
    moving_average_forecast,
)
from ml_lifecycle.forecasting.search import SearchResult, run_grid_search


@dataclass(frozen=True)
class TrainingSettings:
    """What one training run uses: grid, folds, split and seed."""

    preset: str
    holdout_weeks: int
    cv_folds: int
    cv_split: str
    random_state: int
    n_jobs: int


@dataclass(frozen=True)
class Candidate:
    """A trained candidate with its holdout forecasts and those of the baselines."""

    search: SearchResult
    metadata: dict[str, Any]
    train: WeeklyDataset
    holdout: WeeklyDataset
    forecasts: dict[str, np.ndarray]
    metrics: dict[str, ForecastMetrics]

    @property
    def estimator(self) -> Any:
        return self.search.best_estimator

    def predict_units(self, features: np.ndarray) -> np.ndarray:
        """Forecast units for a feature matrix, exactly as the serving container does."""
        return forecast_units(self.estimator, self.metadata, features)


def train_candidate(dataset: WeeklyDataset, settings: TrainingSettings, *, model_version: str) -> Candidate:
    """Search the preset's grid on all but the last weeks, then score the winner and the baselines.

    :param model_version: written into the model's metadata and its forecasts.
    """
    train, holdout = dataset.split_holdout(settings.holdout_weeks)
    search = run_grid_search(
        train,
        preset=settings.preset,
        cv_folds=settings.cv_folds,
        random_state=settings.random_state,
        n_jobs=settings.n_jobs,
        split=settings.cv_split,
        scale_feature=TARGET_SCALE_FEATURE,
        scale_offset=TARGET_SCALE_OFFSET,
    )
    metadata = model_metadata(
        model_version=model_version,
        feature_columns=dataset.feature_columns,
        id_columns=ID_COLUMNS,
        target=TARGET_COLUMN,
        scale_feature=TARGET_SCALE_FEATURE,
        scale_offset=TARGET_SCALE_OFFSET,
    )
    forecasts = {
        "candidate": forecast_units(search.best_estimator, metadata, holdout.features),
        "moving_average_4": moving_average_forecast(holdout.column("ROLLING_MEAN_4")),
        "last_value": last_value_forecast(holdout.column("LAG_1")),
    }
    metrics = {name: forecast_metrics(holdout.target, forecast) for name, forecast in forecasts.items()}
    return Candidate(search, metadata, train, holdout, forecasts, metrics)


def score_on_holdout(estimator: Any, metadata: dict[str, Any], holdout: WeeklyDataset) -> np.ndarray:
    """Forecast the holdout with another model (the champion), on the columns its metadata lists."""
    indexes = [holdout.feature_columns.index(column) for column in metadata["feature_columns"]]
    return forecast_units(estimator, metadata, holdout.features[:, indexes])
