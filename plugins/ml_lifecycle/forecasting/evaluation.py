"""Forecast accuracy on the holdout window, baselines and the approval gate.

Plain functions over numpy arrays; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ForecastMetrics:
    """Accuracy of one forecast against actual weekly units.

    MAPE is computed over weeks with non-zero actuals only, because a week
    without sales has no percentage error; ``zero_actuals_excluded`` says how
    many were left out.
    """

    mae: float
    wape: float
    mape: float | None
    rows: int
    zero_actuals_excluded: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def forecast_metrics(actual: np.ndarray, forecast: np.ndarray) -> ForecastMetrics:
    """Compute MAE, WAPE and MAPE (non-zero actuals only) of ``forecast`` against ``actual``."""
    actual = np.asarray(actual, dtype=np.float64)
    forecast = np.asarray(forecast, dtype=np.float64)
    if actual.shape != forecast.shape:
        raise ValueError(f"actual and forecast differ in shape: {actual.shape} and {forecast.shape}")
    if actual.size == 0:
        raise ValueError("cannot compute forecast metrics on zero rows")
    if np.isnan(forecast).any():
        raise ValueError(f"forecast holds {int(np.isnan(forecast).sum())} NaN values; expected numbers only")

    errors = np.abs(actual - forecast)
    total = np.abs(actual).sum()
    nonzero = actual != 0
    return ForecastMetrics(
        mae=float(errors.mean()),
        wape=float(errors.sum() / total) if total > 0 else float("inf"),
        mape=float((errors[nonzero] / np.abs(actual[nonzero])).mean()) if nonzero.any() else None,
        rows=int(actual.size),
        zero_actuals_excluded=int((~nonzero).sum()),
    )


def last_value_forecast(lag_1: np.ndarray) -> np.ndarray:
    """Forecast next week's units as last week's."""
    return np.nan_to_num(np.asarray(lag_1, dtype=np.float64), nan=0.0)


def moving_average_forecast(rolling_mean_4: np.ndarray) -> np.ndarray:
    """Forecast next week's units as the mean of the last four weeks, the rule the business used."""
    return np.nan_to_num(np.asarray(rolling_mean_4, dtype=np.float64), nan=0.0)


@dataclass(frozen=True)
class GateDecision:
    approved: bool
    reasons: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        """Return the SageMaker ModelApprovalStatus for this decision."""
        return "Approved" if self.approved else "Rejected"


def approval_gate(
    candidate: ForecastMetrics,
    moving_average: ForecastMetrics,
    champion: ForecastMetrics | None,
    *,
    baseline_margin: float,
    champion_margin: float,
) -> GateDecision:
    """Decide whether a candidate may replace the live model.

    The candidate must beat the 4-week moving average's WAPE by at least
    ``baseline_margin`` (a fraction) and, when a champion exists, the
    champion's WAPE on the same holdout by at least ``champion_margin``.
    """
    reasons = []
    approved = True

    limit = moving_average.wape * (1 - baseline_margin)
    if candidate.wape < limit:
        reasons.append(
            f"WAPE {candidate.wape:.4f} beats the 4-week moving average {moving_average.wape:.4f} "
            f"(required below {limit:.4f})"
        )
    else:
        approved = False
        reasons.append(
            f"WAPE {candidate.wape:.4f} does not beat the 4-week moving average {moving_average.wape:.4f} "
            f"by the margin {baseline_margin:.1%} (required below {limit:.4f})"
        )

    if champion is None:
        reasons.append("no champion to compare with")
    else:
        limit = champion.wape * (1 - champion_margin)
        if candidate.wape < limit:
            reasons.append(
                f"WAPE {candidate.wape:.4f} beats the champion {champion.wape:.4f} (required below {limit:.4f})"
            )
        else:
            approved = False
            reasons.append(
                f"WAPE {candidate.wape:.4f} does not beat the champion {champion.wape:.4f} "
                f"by the margin {champion_margin:.1%} (required below {limit:.4f})"
            )
    return GateDecision(approved=approved, reasons=reasons)


def metrics_table(metrics: Mapping[str, ForecastMetrics | None]) -> dict[str, dict[str, Any] | None]:
    """Return the metrics of each forecaster as plain dictionaries."""
    return {name: (value.to_dict() if value is not None else None) for name, value in metrics.items()}
