"""Benchmarks that print figures measured in one run on this machine.

``ml-lifecycle bench sink`` measures the Kafka-to-warehouse load and
``ml-lifecycle bench training`` the grid search presets and a backtest of the
selected model. Each compares its figures with a baseline measured in the
same run, which makes the ratios comparable across machines. The targets are
printed next to the figures, not asserted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any


def print_table(title: str, figures: dict[str, Any]) -> None:
    """Print nested figures as an indented two-column table."""
    print(title)
    _print_rows(figures, "  ")


def _print_rows(figures: dict[str, Any], indent: str) -> None:
    for key, value in figures.items():
        if isinstance(value, dict):
            print(f"{indent}{key}")
            _print_rows(value, indent + "  ")
        else:
            print(f"{indent}{key:<45} {value}")


def main(argv: list[str] | None = None) -> int:
    from ml_lifecycle.local.replay import default_retail_csv

    parser = argparse.ArgumentParser(prog="ml-lifecycle bench", description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--data", type=Path, default=None, help="sales CSV (default: the UCI Online Retail file)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    commands = parser.add_subparsers(dest="benchmark", required=True)
    sink = commands.add_parser(
        "sink", help="replay to landed rows against the bare consume rate, and sink memory"
    )
    sink.add_argument("--batch-max-events", type=int, default=50_000, help="sink batch size in events")
    training = commands.add_parser(
        "training", help="wall time and peak memory of each preset, and a rolling-origin backtest"
    )
    training.add_argument(
        "--presets", default="fast,default,thorough", help="comma-separated presets to time (default: all)"
    )
    training.add_argument("--origins", type=int, default=6, help="backtest origins, the last complete weeks")
    training.add_argument("--backtest-preset", default=None, help="preset of the backtest (default: config)")
    training.add_argument(
        "--window-weeks", type=int, default=None, help="weeks each model trains on (default: config)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data = args.data or default_retail_csv()

    if args.benchmark == "sink":
        from ml_lifecycle.local.benchmarks.sink import bench_sink

        figures = bench_sink(data, args.batch_max_events)
        title = f"Sink benchmark on {os.cpu_count()} CPUs"
    else:
        from ml_lifecycle.local.benchmarks.training import bench_training, check_options

        presets = [preset.strip() for preset in args.presets.split(",") if preset.strip()]
        try:
            check_options(presets, args.origins, args.backtest_preset)
        except ValueError as err:
            parser.error(str(err))
        figures = bench_training(
            data,
            presets=presets,
            origins=args.origins,
            backtest_preset=args.backtest_preset,
            window_weeks=args.window_weeks,
        )
        title = f"Training benchmark on {os.cpu_count()} CPUs"
    print_table(title, figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str), encoding="utf-8")
    return 0
