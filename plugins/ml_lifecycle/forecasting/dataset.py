"""The training table: weekly demand features of one window, as numpy arrays."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ml_lifecycle.exceptions import NotEnoughData

# Columns of FEATURES.WEEKLY_DEMAND the model reads, in the order of the
# model's input matrix. The serving container receives the same names.
FEATURE_COLUMNS: tuple[str, ...] = (
    "LAG_1",
    "LAG_2",
    "LAG_3",
    "LAG_4",
    "ROLLING_MEAN_4",
    "ROLLING_STD_4",
    "ROLLING_MEAN_13",
    "ROLLING_STD_13",
    "LAG_1_RATIO",
    "LAG_2_RATIO",
    "LAG_3_RATIO",
    "LAG_4_RATIO",
    "MEAN_13_RATIO",
    "STD_4_RATIO",
    "SHOP_TREND_1_4",
    "SHOP_TREND_4_13",
    "WEEKS_SINCE_LAST_SALE",
    "AVG_UNIT_PRICE",
    "PRICE_CHANGE",
    "DISTINCT_CUSTOMERS_4",
    "RETURNS_RATE_13",
    "BANK_HOLIDAYS",
    "WEEK_OF_YEAR",
    "MONTH",
    "WEEKS_TO_CHRISTMAS",
    "SKU_RANK",
)
ID_COLUMNS: tuple[str, ...] = ("STOCK_CODE", "WEEK_START")
TARGET_COLUMN = "QUANTITY"

# The model predicts demand relative to the 4-week moving average plus one,
# which makes one model fit products of every size; forecasts are scaled back
# by the same factor. The serving container applies it from metadata.json.
TARGET_SCALE_FEATURE = "ROLLING_MEAN_4"
TARGET_SCALE_OFFSET = 1.0


@dataclass(frozen=True)
class WeeklyDataset:
    """Rows of (stock code, week), sorted by week then stock code."""

    features: np.ndarray
    target: np.ndarray
    stock_codes: np.ndarray
    weeks: np.ndarray
    feature_columns: tuple[str, ...] = FEATURE_COLUMNS

    def __len__(self) -> int:
        return len(self.target)

    @property
    def distinct_weeks(self) -> list[dt.date]:
        return sorted(set(self.weeks.tolist()))

    def column(self, name: str) -> np.ndarray:
        return self.features[:, self.feature_columns.index(name)]

    def scale(self) -> np.ndarray:
        """Return the per-row factor between the model's target and units."""
        return self.column(TARGET_SCALE_FEATURE) + TARGET_SCALE_OFFSET

    def select_weeks(self, weeks: Sequence[dt.date]) -> WeeklyDataset:
        mask = np.isin(self.weeks, np.array(list(weeks), dtype=object))
        return WeeklyDataset(
            self.features[mask],
            self.target[mask],
            self.stock_codes[mask],
            self.weeks[mask],
            self.feature_columns,
        )

    def split_holdout(self, holdout_weeks: int) -> tuple[WeeklyDataset, WeeklyDataset]:
        """Split off the last ``holdout_weeks`` weeks as the final evaluation window."""
        weeks = self.distinct_weeks
        if len(weeks) <= holdout_weeks:
            raise NotEnoughData(
                f"the window holds {len(weeks)} weeks of features; expected more than the "
                f"{holdout_weeks} holdout weeks. Build features for earlier weeks first"
            )
        return self.select_weeks(weeks[:-holdout_weeks]), self.select_weeks(weeks[-holdout_weeks:])


def dataset_from_rows(
    rows: Sequence[Mapping[str, Any]], feature_columns: Sequence[str] = FEATURE_COLUMNS
) -> WeeklyDataset:
    """Build a dataset from warehouse rows keyed by upper-case column name.

    Rows without a target (forecast inputs of a week that has not ended) are
    skipped. Missing feature values become NaN, which both model families accept.
    """
    usable = [row for row in rows if row.get(TARGET_COLUMN) is not None]
    usable.sort(key=lambda row: (row["WEEK_START"], str(row["STOCK_CODE"])))
    features = np.array(
        [
            [np.nan if row.get(column) is None else float(row[column]) for column in feature_columns]
            for row in usable
        ],
        dtype=np.float64,
    ).reshape(len(usable), len(feature_columns))
    return WeeklyDataset(
        features=features,
        target=np.array([float(row[TARGET_COLUMN]) for row in usable], dtype=np.float64),
        stock_codes=np.array([str(row["STOCK_CODE"]) for row in usable], dtype=object),
        weeks=np.array([as_date(row["WEEK_START"]) for row in usable], dtype=object),
        feature_columns=tuple(feature_columns),
    )


def as_date(value: Any) -> dt.date:
    """Return a date from a date, a datetime or an ISO 8601 string, as warehouse rows carry them."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))
