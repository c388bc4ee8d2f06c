"""The training report of a model version: Markdown with PNG charts, written to a directory.

Charts: forecast against actual on the holdout for the largest stock codes,
WAPE by holdout week for the model and the baselines, permutation feature
importances on the holdout, and the table of cross-validation results.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

TOP_STOCK_CODES = 6
IMPORTANCE_REPEATS = 5
REPORT_FILE = "report.md"


@dataclass(frozen=True)
class HoldoutForecasts:
    """Actual units and each forecaster's units on the holdout rows."""

    weeks: np.ndarray
    stock_codes: np.ndarray
    actual: np.ndarray
    forecasts: Mapping[str, np.ndarray]


def wape_by_week(holdout: HoldoutForecasts) -> dict[str, dict[dt.date, float]]:
    """Return each forecaster's WAPE per holdout week."""
    result: dict[str, dict[dt.date, float]] = {}
    for name, forecast in holdout.forecasts.items():
        per_week = {}
        for week in sorted(set(holdout.weeks.tolist())):
            mask = holdout.weeks == week
            total = np.abs(holdout.actual[mask]).sum()
            per_week[week] = (
                float(np.abs(holdout.actual[mask] - forecast[mask]).sum() / total) if total else 0.0
            )
        result[name] = per_week
    return result


def permutation_importances(
    predict_units: Any, features: np.ndarray, actual: np.ndarray, names: Sequence[str], random_state: int
) -> dict[str, float]:
    """Return the rise in holdout WAPE when each feature is shuffled, averaged over a few shuffles.

    :param predict_units: function from a feature matrix to forecasts in units.
    """
    rng = np.random.default_rng(random_state)
    total = float(np.abs(actual).sum()) or 1.0
    base = float(np.abs(actual - predict_units(features)).sum()) / total
    importances = {}
    for index, name in enumerate(names):
        rises = []
        for _ in range(IMPORTANCE_REPEATS):
            shuffled = features.copy()
            shuffled[:, index] = rng.permutation(shuffled[:, index])
            rises.append(float(np.abs(actual - predict_units(shuffled)).sum()) / total - base)
        importances[name] = float(np.mean(rises))
    return dict(sorted(importances.items(), key=lambda item: -item[1]))


def _plot_top_stock_codes(holdout: HoldoutForecasts, path: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    volume: dict[str, float] = {}
    for code, units in zip(holdout.stock_codes.tolist(), holdout.actual.tolist(), strict=True):
        volume[code] = volume.get(code, 0.0) + units
    top = sorted(volume, key=lambda code: -volume[code])[:TOP_STOCK_CODES]
    weeks = sorted(set(holdout.weeks.tolist()))

    figure, axes = plt.subplots(2, 3, figsize=(12, 6), sharex=True)
    for axis, code in zip(axes.flat, top, strict=False):
        mask = holdout.stock_codes == code
        order = np.argsort(holdout.weeks[mask])
        x = [str(week) for week in holdout.weeks[mask][order]]
        axis.plot(x, holdout.actual[mask][order], marker="o", label="actual", color="black")
        for name, forecast in holdout.forecasts.items():
            axis.plot(x, forecast[mask][order], marker=".", label=name)
        axis.set_title(f"stock code {code}")
        axis.tick_params(axis="x", labelrotation=30)
    axes.flat[0].legend(fontsize="small")
    figure.suptitle(f"Forecast against actual units, holdout weeks {weeks[0]} to {weeks[-1]}")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return top


def _plot_wape_by_week(per_week: Mapping[str, Mapping[dt.date, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    names = list(per_week)
    weeks = sorted({week for values in per_week.values() for week in values})
    width = 0.8 / max(len(names), 1)
    for index, name in enumerate(names):
        axis.bar(
            [position + index * width for position in range(len(weeks))],
            [per_week[name].get(week, 0.0) for week in weeks],
            width=width,
            label=name,
        )
    axis.set_xticks([position + width * (len(names) - 1) / 2 for position in range(len(weeks))])
    axis.set_xticklabels([str(week) for week in weeks])
    axis.set_ylabel("WAPE")
    axis.set_title("Holdout error by week")
    axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _plot_importances(importances: Mapping[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(importances)[:15][::-1]
    figure, axis = plt.subplots(figsize=(7, 5))
    axis.barh(names, [importances[name] for name in names])
    axis.set_xlabel("rise in holdout WAPE when the feature is shuffled")
    axis.set_title("Permutation feature importance")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _format(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def write_report(
    directory: Path,
    *,
    evaluation: Mapping[str, Any],
    holdout: HoldoutForecasts,
    importances: Mapping[str, float],
) -> Path:
    """Write ``report.md`` and its PNG charts into ``directory`` and return the report's path."""
    directory.mkdir(parents=True, exist_ok=True)
    per_week = wape_by_week(holdout)
    top = _plot_top_stock_codes(holdout, directory / "forecast_vs_actual.png")
    _plot_wape_by_week(per_week, directory / "wape_by_week.png")
    _plot_importances(importances, directory / "feature_importance.png")

    metrics = evaluation["metrics"]
    lines = [
        f"# Demand forecast {evaluation['model_version']}",
        "",
        f"Trained on {evaluation['window']['window_start'][:10]} to {evaluation['window']['window_end'][:10]} "
        f"({evaluation['rows']['train']:,} training rows), evaluated on the holdout weeks "
        f"{', '.join(evaluation['holdout_weeks'])} ({evaluation['rows']['holdout']:,} rows).",
        f"Reason: {evaluation.get('reason') or 'n/a'}.",
        "",
        f"**Gate: {evaluation['gate']['status']}.** "
        + " ".join(f"{reason}." for reason in evaluation["gate"]["reasons"]),
        "",
        "## Holdout metrics",
        "",
        "| forecaster | MAE | WAPE | MAPE (non-zero weeks) | rows | zero weeks left out of MAPE |",
        "|---|---|---|---|---|---|",
    ]
    for name, values in metrics.items():
        if values is None:
            lines.append(f"| {name} | n/a | n/a | n/a | n/a | n/a |")
            continue
        lines.append(
            f"| {name} | {_format(values['mae'])} | {_format(values['wape'])} | {_format(values['mape'])} | "
            f"{values['rows']:,} | {values['zero_actuals_excluded']:,} |"
        )
    lines += [
        "",
        "## Forecast against actual, largest stock codes",
        "",
        f"Stock codes: {', '.join(top)}.",
        "",
        "![forecast against actual](forecast_vs_actual.png)",
        "",
        "## Error by week",
        "",
        "![WAPE by week](wape_by_week.png)",
        "",
        "| week | " + " | ".join(per_week) + " |",
        "|---|" + "---|" * len(per_week),
    ]
    weeks = sorted({week for values in per_week.values() for week in values})
    for week in weeks:
        lines.append(f"| {week} | " + " | ".join(f"{per_week[name][week]:.4f}" for name in per_week) + " |")
    lines += [
        "",
        "## Feature importance",
        "",
        "![feature importance](feature_importance.png)",
        "",
        "## Cross-validation results",
        "",
        f"Best parameters: `{evaluation['best_params']}`.",
        "",
        "| rank | model | parameters | mean WAPE | std | fit seconds |",
        "|---|---|---|---|---|---|",
    ]
    for row in evaluation["cv_results"]:
        lines.append(
            f"| {row['rank']} | {row['model']} | `{row['params']}` | {row['mean_wape']:.4f} | "
            f"{row['std_wape']:.4f} | {row['fit_seconds']:.2f} |"
        )
    lines += ["", f"Features ({len(evaluation['features'])}): {', '.join(evaluation['features'])}.", ""]
    path = directory / REPORT_FILE
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
