"""Hyper-parameter search with GridSearchCV over time-ordered folds."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from ml_lifecycle.config import TIME_ORDERED_SPLITS
from ml_lifecycle.exceptions import ConfigError, NotEnoughData
from ml_lifecycle.forecasting.dataset import WeeklyDataset
from ml_lifecycle.forecasting.scoring import ScaledWapeScorer

PRESETS = ("fast", "default", "thorough")


def param_grid(preset: str, random_state: int) -> list[dict[str, list[Any]]]:
    """Return the GridSearchCV grid of a preset: HistGradientBoosting and RandomForest candidates.

    The pipeline has one step, ``model``; each grid entry swaps in a model
    family and its parameters.
    """
    hgb = HistGradientBoostingRegressor(random_state=random_state, max_iter=300, early_stopping=False)
    forest = RandomForestRegressor(random_state=random_state, n_jobs=1)
    if preset == "fast":
        return [
            {
                "model": [hgb],
                "model__loss": ["absolute_error"],
                "model__learning_rate": [0.05],
                "model__max_iter": [200],
                "model__min_samples_leaf": [20, 50],
            },
            {"model": [forest], "model__n_estimators": [100], "model__min_samples_leaf": [10]},
        ]
    if preset == "default":
        return [
            {
                "model": [hgb],
                "model__loss": ["absolute_error", "squared_error"],
                "model__learning_rate": [0.05, 0.1],
                "model__max_leaf_nodes": [15, 31],
                "model__min_samples_leaf": [20, 50],
            },
            {
                "model": [forest],
                "model__n_estimators": [200],
                "model__min_samples_leaf": [5, 20],
                "model__max_features": [0.5],
            },
        ]
    if preset == "thorough":
        return [
            {
                "model": [hgb],
                "model__loss": ["absolute_error", "squared_error", "poisson"],
                "model__learning_rate": [0.03, 0.05, 0.1],
                "model__max_leaf_nodes": [15, 31, 63],
                "model__min_samples_leaf": [10, 20, 50],
                "model__l2_regularization": [0.0, 1.0],
            },
            {
                "model": [forest],
                "model__n_estimators": [300],
                "model__min_samples_leaf": [2, 5, 10, 20],
                "model__max_features": [0.3, 0.5, 1.0],
            },
        ]
    raise ConfigError(f"unknown preset {preset!r}: expected one of {', '.join(PRESETS)}")


def rolling_origin_splits(
    weeks: Sequence[dt.date], n_folds: int, test_weeks: int = 1
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return GridSearchCV folds that train on all weeks before a cut-off and validate on the next ones.

    ``weeks`` gives the week of every row. Fold k validates on the
    ``test_weeks`` weeks after the k-th cut-off; cut-offs are the last
    ``n_folds`` positions, so every fold trains on the past only.
    """
    week_array = np.asarray(weeks, dtype=object)
    distinct = sorted(set(week_array.tolist()))
    needed = n_folds * test_weeks + 2
    if len(distinct) < needed:
        raise NotEnoughData(
            f"{len(distinct)} training weeks are too few for {n_folds} rolling-origin folds of {test_weeks} "
            f"week(s); expected at least {needed}"
        )
    folds = []
    for fold in range(n_folds):
        cut = len(distinct) - (n_folds - fold) * test_weeks
        train_weeks, validation_weeks = distinct[:cut], distinct[cut : cut + test_weeks]
        train = np.flatnonzero(np.isin(week_array, np.array(train_weeks, dtype=object)))
        validation = np.flatnonzero(np.isin(week_array, np.array(validation_weeks, dtype=object)))
        folds.append((train, validation))
    return folds


def time_ordered_cv(
    split: str, weeks: Sequence[dt.date], n_folds: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return the folds of a time-ordered split; any other kind of split is rejected.

    :raises ConfigError: for shuffled or k-fold splits, which would train on
        weeks after the ones they validate on and overstate accuracy.
    """
    if split not in TIME_ORDERED_SPLITS:
        raise ConfigError(
            f"cross-validation split {split!r} is not allowed: shuffled and k-fold splits train on weeks "
            f"after the validation week, which leaks the future; use one of {', '.join(TIME_ORDERED_SPLITS)}"
        )
    return rolling_origin_splits(weeks, n_folds)


@dataclass(frozen=True)
class SearchResult:
    search: GridSearchCV
    seconds: float

    @property
    def best_estimator(self) -> Any:
        return self.search.best_estimator_

    @property
    def best_params(self) -> dict[str, Any]:
        """Return the winning parameters with the model step shown as its class name."""
        params = {}
        for key, value in self.search.best_params_.items():
            params[key] = type(value).__name__ if key == "model" else value
        return params

    def cv_table(self) -> list[dict[str, Any]]:
        """Return one row per candidate: model, parameters, mean and std of CV WAPE, rank."""
        results = self.search.cv_results_
        rows = []
        for index, params in enumerate(results["params"]):
            rows.append(
                {
                    "model": type(params["model"]).__name__,
                    "params": {
                        key.removeprefix("model__"): value for key, value in params.items() if key != "model"
                    },
                    "mean_wape": -float(results["mean_test_score"][index]),
                    "std_wape": float(results["std_test_score"][index]),
                    "rank": int(results["rank_test_score"][index]),
                    "fit_seconds": float(results["mean_fit_time"][index]),
                }
            )
        return sorted(rows, key=lambda row: row["rank"])


def run_grid_search(
    train: WeeklyDataset,
    *,
    preset: str,
    cv_folds: int,
    random_state: int,
    n_jobs: int,
    split: str = "rolling_origin",
    scale_feature: str,
    scale_offset: float,
) -> SearchResult:
    """Search the preset's grid on ``train`` and refit the best candidate on all of it."""
    folds = time_ordered_cv(split, train.weeks.tolist(), cv_folds)
    scale = train.column(scale_feature) + scale_offset
    scorer = ScaledWapeScorer(train.feature_columns.index(scale_feature), scale_offset)
    search = GridSearchCV(
        estimator=Pipeline([("model", HistGradientBoostingRegressor(random_state=random_state))]),
        param_grid=param_grid(preset, random_state),
        scoring=scorer,
        cv=folds,
        n_jobs=n_jobs,
        refit=True,
        error_score="raise",
    )
    started = time.perf_counter()
    try:
        # Weighting each row by its scale makes the fit minimise error in units,
        # which is what WAPE measures, while the target stays scale-free.
        search.fit(train.features, train.target / scale, model__sample_weight=scale)
    finally:
        # joblib keeps its worker processes for reuse after the search. In an
        # Airflow task they would outlive the task, so they are stopped here.
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=True)
    return SearchResult(search=search, seconds=time.perf_counter() - started)
