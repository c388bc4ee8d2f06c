"""Drift statistics: population stability of features and the change in forecast error.

Plain functions over numpy arrays and dictionaries; no I/O. The baseline is
computed once at training time and stored next to the model, so monitoring
compares recent weeks with exactly the data the live model learned from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

DEFAULT_BINS = 10
# Floor for empty bins: PSI takes the log of a share, which is undefined at 0.
MIN_SHARE = 1e-4


@dataclass(frozen=True)
class FeatureBaseline:
    """Bin edges (deciles of the training values) and the share of training rows per bin.

    ``shares`` has one entry per bin plus a last one for missing values.
    """

    edges: list[float]
    shares: list[float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def feature_baseline(values: np.ndarray, bins: int = DEFAULT_BINS) -> FeatureBaseline:
    """Summarise one feature's training values as quantile bins."""
    values = np.asarray(values, dtype=np.float64)
    present = values[~np.isnan(values)]
    if present.size == 0:
        return FeatureBaseline(edges=[], shares=[1.0])
    # Repeated quantiles collapse (a feature that is mostly 0), so the edges
    # are de-duplicated and the bins may be fewer than requested.
    inner = np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1]))
    return FeatureBaseline(edges=inner.tolist(), shares=bin_shares(values, inner.tolist()))


def bin_shares(values: np.ndarray, edges: Sequence[float]) -> list[float]:
    """Return the share of ``values`` in each bin defined by ``edges``, then the share missing."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("cannot compute bin shares of zero values")
    missing = np.isnan(values)
    counts = np.bincount(
        np.searchsorted(np.asarray(edges), values[~missing], side="right"), minlength=len(edges) + 1
    )
    shares = [*(counts / values.size).tolist(), float(missing.sum() / values.size)]
    return [float(share) for share in shares]


def population_stability_index(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Return the PSI between two distributions over the same bins.

    PSI = sum((a - e) * ln(a / e)). Common reading: below 0.1 stable, 0.1 to
    0.25 a moderate shift, above 0.25 a major shift.
    """
    if len(expected) != len(actual):
        raise ValueError(f"the distributions have {len(expected)} and {len(actual)} bins; expected the same")
    e = np.clip(np.asarray(expected, dtype=np.float64), MIN_SHARE, None)
    a = np.clip(np.asarray(actual, dtype=np.float64), MIN_SHARE, None)
    return float(np.sum((a - e) * np.log(a / e)))


@dataclass(frozen=True)
class DriftReport:
    feature_psi: dict[str, float]
    drifted_features: list[str]
    data_drift: bool
    recent_wape: float | None
    baseline_wape: float | None
    wape_ratio: float | None
    performance_drift: bool
    reasons: list[str] = field(default_factory=list)

    @property
    def drift(self) -> bool:
        return self.data_drift or self.performance_drift

    @property
    def max_psi(self) -> float:
        return max(self.feature_psi.values(), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drift": self.drift, "max_psi": self.max_psi}


def assess_drift(
    baselines: Mapping[str, FeatureBaseline],
    recent: Mapping[str, np.ndarray],
    *,
    psi_threshold: float,
    min_drifted_features: int,
    recent_wape: float | None,
    baseline_wape: float | None,
    wape_ratio_threshold: float,
) -> DriftReport:
    """Compare recent feature values and forecast error with the training baseline.

    Data drift: at least ``min_drifted_features`` features have a PSI above
    ``psi_threshold``. Performance drift: the live model's WAPE on recent weeks
    with known actuals exceeds its holdout WAPE by ``wape_ratio_threshold``
    times or more. Features without recent values are skipped.
    """
    scores = {
        name: population_stability_index(baseline.shares, bin_shares(recent[name], baseline.edges))
        for name, baseline in baselines.items()
        if name in recent and np.asarray(recent[name]).size > 0
    }
    drifted = sorted(
        (name for name, score in scores.items() if score > psi_threshold), key=lambda n: -scores[n]
    )
    data_drift = len(drifted) >= min_drifted_features

    reasons = []
    if data_drift:
        listed = ", ".join(f"{name} {scores[name]:.2f}" for name in drifted[:5])
        reasons.append(
            f"{len(drifted)} features have PSI above {psi_threshold} (at least {min_drifted_features} "
            f"needed): {listed}"
        )

    ratio = None
    performance_drift = False
    if recent_wape is not None and baseline_wape:
        ratio = recent_wape / baseline_wape
        if ratio >= wape_ratio_threshold:
            performance_drift = True
            reasons.append(
                f"recent WAPE {recent_wape:.4f} is {ratio:.2f} times the holdout WAPE {baseline_wape:.4f} "
                f"(threshold {wape_ratio_threshold})"
            )

    return DriftReport(
        feature_psi=scores,
        drifted_features=drifted,
        data_drift=data_drift,
        recent_wape=recent_wape,
        baseline_wape=baseline_wape,
        wape_ratio=ratio,
        performance_drift=performance_drift,
        reasons=reasons,
    )
