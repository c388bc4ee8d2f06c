"""Population stability and drift decisions, on plain arrays."""

from __future__ import annotations

import numpy as np
import pytest

from ml_lifecycle.forecasting.drift import (
    assess_drift,
    bin_shares,
    feature_baseline,
    population_stability_index,
)


def test_baseline_has_deciles_and_missing_share() -> None:
    values = np.concatenate([np.arange(100, dtype=float), [np.nan] * 25])

    baseline = feature_baseline(values)

    assert len(baseline.edges) == 9
    assert len(baseline.shares) == 11
    assert baseline.shares[-1] == pytest.approx(0.2)
    assert sum(baseline.shares) == pytest.approx(1.0)


def test_mostly_constant_feature_collapses_bins() -> None:
    baseline = feature_baseline(np.array([0.0] * 95 + [1.0, 2.0, 3.0, 4.0, 5.0]))

    assert baseline.edges == [0.0]
    assert sum(baseline.shares) == pytest.approx(1.0)


def test_psi_is_zero_for_the_same_distribution() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(size=5000)
    baseline = feature_baseline(values)

    assert population_stability_index(baseline.shares, bin_shares(values, baseline.edges)) == pytest.approx(
        0.0
    )


def test_psi_grows_with_the_shift() -> None:
    rng = np.random.default_rng(2)
    baseline = feature_baseline(rng.normal(size=5000))
    small = population_stability_index(
        baseline.shares, bin_shares(rng.normal(0.1, size=5000), baseline.edges)
    )
    large = population_stability_index(
        baseline.shares, bin_shares(rng.normal(1.0, size=5000), baseline.edges)
    )

    assert small < 0.1
    assert large > 0.25
    assert large > small


def test_psi_hand_computed() -> None:
    psi = population_stability_index([0.5, 0.5], [0.25, 0.75])

    assert psi == pytest.approx((0.25 - 0.5) * np.log(0.5) + (0.75 - 0.5) * np.log(1.5))


def test_psi_bin_count_mismatch_rejected() -> None:
    with pytest.raises(ValueError, match="2 and 3 bins"):
        population_stability_index([0.5, 0.5], [0.2, 0.3, 0.5])


class TestAssessDrift:
    def setup_method(self) -> None:
        rng = np.random.default_rng(3)
        self.training = {name: rng.normal(size=2000) for name in ("A", "B", "C")}
        self.baselines = {name: feature_baseline(values) for name, values in self.training.items()}

    def test_no_drift(self) -> None:
        report = assess_drift(
            self.baselines,
            self.training,
            psi_threshold=0.25,
            min_drifted_features=2,
            recent_wape=0.5,
            baseline_wape=0.5,
            wape_ratio_threshold=1.5,
        )

        assert not report.drift
        assert report.reasons == []
        assert report.wape_ratio == pytest.approx(1.0)

    def test_data_drift_needs_enough_features(self) -> None:
        recent = {**self.training, "A": self.training["A"] + 3.0}

        one = assess_drift(
            self.baselines,
            recent,
            psi_threshold=0.25,
            min_drifted_features=2,
            recent_wape=None,
            baseline_wape=0.5,
            wape_ratio_threshold=1.5,
        )
        recent["B"] = self.training["B"] * 4
        two = assess_drift(
            self.baselines,
            recent,
            psi_threshold=0.25,
            min_drifted_features=2,
            recent_wape=None,
            baseline_wape=0.5,
            wape_ratio_threshold=1.5,
        )

        assert one.drifted_features == ["A"]
        assert not one.data_drift
        assert set(two.drifted_features) == {"A", "B"}
        assert two.data_drift
        assert two.reasons[0].startswith("2 features have PSI above 0.25")

    def test_performance_drift(self) -> None:
        report = assess_drift(
            self.baselines,
            self.training,
            psi_threshold=0.25,
            min_drifted_features=2,
            recent_wape=0.8,
            baseline_wape=0.5,
            wape_ratio_threshold=1.5,
        )

        assert report.performance_drift
        assert report.drift
        assert report.reasons == ["recent WAPE 0.8000 is 1.60 times the holdout WAPE 0.5000 (threshold 1.5)"]

    def test_unknown_recent_error_is_no_performance_drift(self) -> None:
        report = assess_drift(
            self.baselines,
            self.training,
            psi_threshold=0.25,
            min_drifted_features=2,
            recent_wape=None,
            baseline_wape=0.5,
            wape_ratio_threshold=1.5,
        )

        assert report.wape_ratio is None
        assert not report.performance_drift
