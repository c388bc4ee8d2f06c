"""Forecast metrics, baselines and the approval gate, on plain arrays."""

from __future__ import annotations

import numpy as np
import pytest

from ml_lifecycle.forecasting.evaluation import (
    ForecastMetrics,
    approval_gate,
    forecast_metrics,
    last_value_forecast,
    moving_average_forecast,
)


class TestForecastMetrics:
    def test_hand_computed_values(self) -> None:
        metrics = forecast_metrics(np.array([10.0, 0.0, 30.0, 20.0]), np.array([12.0, 3.0, 24.0, 20.0]))

        assert metrics.mae == pytest.approx((2 + 3 + 6 + 0) / 4)
        assert metrics.wape == pytest.approx(11 / 60)
        assert metrics.mape == pytest.approx((0.2 + 0.2 + 0.0) / 3)
        assert metrics.rows == 4
        assert metrics.zero_actuals_excluded == 1

    def test_all_zero_actuals(self) -> None:
        metrics = forecast_metrics(np.zeros(3), np.ones(3))

        assert metrics.mape is None
        assert metrics.wape == float("inf")
        assert metrics.zero_actuals_excluded == 3

    def test_shape_mismatch_rejected(self) -> None:
        with pytest.raises(ValueError, match=r"differ in shape: \(2,\) and \(3,\)"):
            forecast_metrics(np.ones(2), np.ones(3))

    def test_nan_forecast_rejected(self) -> None:
        with pytest.raises(ValueError, match="1 NaN values"):
            forecast_metrics(np.ones(2), np.array([1.0, np.nan]))

    def test_empty_rejected(self) -> None:
        with pytest.raises(ValueError, match="zero rows"):
            forecast_metrics(np.array([]), np.array([]))


def test_baselines_treat_missing_history_as_zero() -> None:
    assert last_value_forecast(np.array([3.0, np.nan])).tolist() == [3.0, 0.0]
    assert moving_average_forecast(np.array([np.nan, 2.5])).tolist() == [0.0, 2.5]


def metrics(wape: float) -> ForecastMetrics:
    return ForecastMetrics(mae=1.0, wape=wape, mape=None, rows=10, zero_actuals_excluded=0)


class TestApprovalGate:
    def test_beats_baseline_without_champion(self) -> None:
        decision = approval_gate(metrics(0.50), metrics(0.60), None, baseline_margin=0.1, champion_margin=0.0)

        assert decision.approved
        assert decision.status == "Approved"
        assert decision.reasons[-1] == "no champion to compare with"

    def test_margin_not_met_rejects(self) -> None:
        decision = approval_gate(
            metrics(0.58), metrics(0.60), None, baseline_margin=0.05, champion_margin=0.0
        )

        assert not decision.approved
        assert decision.status == "Rejected"
        assert decision.reasons[0] == (
            "WAPE 0.5800 does not beat the 4-week moving average 0.6000 by the margin 5.0% (required below 0.5700)"
        )

    def test_worse_than_champion_rejects(self) -> None:
        decision = approval_gate(
            metrics(0.50), metrics(0.60), metrics(0.49), baseline_margin=0.0, champion_margin=0.0
        )

        assert not decision.approved
        assert "does not beat the champion 0.4900" in decision.reasons[1]

    def test_equal_to_baseline_is_not_better(self) -> None:
        decision = approval_gate(metrics(0.60), metrics(0.60), None, baseline_margin=0.0, champion_margin=0.0)

        assert not decision.approved
