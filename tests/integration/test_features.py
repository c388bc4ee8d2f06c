"""sales_features against the warehouse emulator, on a year of the real data landed through Kafka.

The expected weekly demand and product ranking are computed here in Python
from the CSV lines that were replayed, independently of the feature SQL.
Extra events sit on the week boundaries of both UK daylight-saving changes
of 2011, and later sales are added and deleted to show that the features of
a week do not depend on anything after it.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ml_lifecycle.hooks.warehouse import WarehouseHook
from ml_lifecycle.ingest.events import EVENT_FIELDS
from ml_lifecycle.local.replay import default_retail_csv, producer_config, replay_file
from ml_lifecycle.local.stack import LocalStack
from ml_lifecycle.local.task_context import manual_task_context

from .conftest import SINK_TIMEOUT_S, TEST_CONFIG, write_retail_slice

pytestmark = pytest.mark.integration

TOP_N = 40
SLICE_PRODUCTS = 45
UTC = dt.UTC
TABLE = "LIFECYCLE.FEATURES.WEEKLY_DEMAND"

# Wall-clock times in London next to the 2011 daylight-saving changes: 01:30
# on 27 March does not exist and 01:30 on 30 October happens twice. Monday
# 00:30 in summer time is Sunday 23:30 UTC, so a week cut in UTC would move
# that line into the week before.
BOUNDARY_TIMES = [
    ("2011-03-27 01:30:00", 1_000),
    ("2011-03-27 23:59:00", 2_000),
    ("2011-03-28 00:30:00", 4_000),
    ("2011-10-30 01:30:00", 1_000),
    ("2011-10-30 23:59:00", 2_000),
    ("2011-10-31 00:00:00", 4_000),
]


def sale(code: str, when: str, quantity: int, number: str) -> dict[str, Any]:
    return {
        "InvoiceNo": number,
        "StockCode": code,
        "Description": "TEST LINE",
        "Quantity": quantity,
        "InvoiceDate": when,
        "UnitPrice": 1.25,
        "CustomerID": 12346.0,
        "Country": "United Kingdom",
    }


def write_lines(path: Path, lines: list[dict[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=EVENT_FIELDS)
        writer.writeheader()
        writer.writerows(lines)
    return path


def week_of(invoice_date: str) -> dt.date:
    day = dt.date.fromisoformat(invoice_date[:10])
    return day - dt.timedelta(days=day.weekday())


def weekly_demand(lines: list[dict[str, Any]]) -> dict[tuple[str, dt.date], int]:
    """Return the units sold per product and week, net of returns and never below zero."""
    net: Counter[tuple[str, dt.date]] = Counter()
    for line in lines:
        net[line["StockCode"], week_of(line["InvoiceDate"])] += int(line["Quantity"])
    return {key: max(quantity, 0) for key, quantity in net.items()}


def top_products(demand: dict[tuple[str, dt.date], int], week: dt.date) -> set[str]:
    """Return the products with the most units sold in the 52 weeks before ``week``, ties broken by code."""
    totals: Counter[str] = Counter()
    for (code, line_week), sold in demand.items():
        if week - dt.timedelta(weeks=52) <= line_week < week:
            totals[code] += sold
    ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
    return {code for code, _ in ranked[:TOP_N]}


def build(context: dict[str, Any]) -> dict[str, Any]:
    from ml_lifecycle.operators.features import SnowflakeWeeklyFeaturesOperator

    base = manual_task_context(run_id="manual__features_test")
    return SnowflakeWeeklyFeaturesOperator(task_id="build_weekly_features").execute({**base, **context})


def build_window(window_end: str, weeks: int) -> dict[str, Any]:
    return build({"params": {"window_end": window_end, "weeks": weeks}})


def build_scheduled(start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
    """Build as a scheduled run does: the interval start is the logical date."""
    return build(
        {
            "run_id": f"scheduled__{start.isoformat()}",
            "dag_run": SimpleNamespace(run_type="scheduled", run_after=end, conf={}),
            "logical_date": start,
            "data_interval_start": start,
            "data_interval_end": end,
        }
    )


def table_rows(where: str = "TRUE") -> list[dict[str, Any]]:
    return WarehouseHook(snowflake_conn_id="snowflake_default").fetch_dicts(
        f"SELECT * FROM {TABLE} WHERE {where} ORDER BY WEEK_START, STOCK_CODE"
    )


def differences(
    before: list[dict[str, Any]], after: list[dict[str, Any]], ignore: tuple[str, ...] = ()
) -> list[str]:
    """Name each row and column that changed; an empty list means the rows are the same."""
    keys_before = [(row["STOCK_CODE"], row["WEEK_START"]) for row in before]
    keys_after = [(row["STOCK_CODE"], row["WEEK_START"]) for row in after]
    if keys_before != keys_after:
        return [f"rows differ: {sorted(set(keys_before) ^ set(keys_after))[:5]}"]
    changed = []
    for old, new in zip(before, after, strict=True):
        for column, value in old.items():
            if column not in ignore and not _same(value, new[column]):
                changed.append(
                    f"{old['STOCK_CODE']} {old['WEEK_START']} {column}: {value!r} became {new[column]!r}"
                )
    return changed


def _same(first: Any, second: Any) -> bool:
    # Float sums may differ in the last bits when the engine adds in another
    # order, so floats are compared to a relative 1e-9.
    if isinstance(first, float) and isinstance(second, float):
        return math.isclose(first, second, rel_tol=1e-9, abs_tol=1e-12)
    return bool(first == second)


def quantities(week: dt.date) -> dict[str, int | None]:
    rows = WarehouseHook(snowflake_conn_id="snowflake_default").fetch_dicts(
        f"SELECT STOCK_CODE, QUANTITY FROM {TABLE} WHERE WEEK_START = %(week)s::DATE",
        {"week": week.isoformat()},
    )
    return {row["STOCK_CODE"]: row["QUANTITY"] for row in rows}


def lag_1(week: dt.date) -> dict[str, int]:
    rows = WarehouseHook(snowflake_conn_id="snowflake_default").fetch_dicts(
        f"SELECT STOCK_CODE, LAG_1 FROM {TABLE} WHERE WEEK_START = %(week)s::DATE",
        {"week": week.isoformat()},
    )
    return {row["STOCK_CODE"]: row["LAG_1"] for row in rows}


@pytest.fixture(scope="module")
def landed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Land the best-selling products of the whole year and the boundary events through the sink."""
    root = tmp_path_factory.mktemp("features")
    stack = LocalStack(root=root, config_path=TEST_CONFIG, with_airflow=False, with_aws=False)
    saved = dict(os.environ)
    try:
        stack.start()
        os.environ.update(stack.connection_env())
        slice_path = root / "slice.csv"
        count = write_retail_slice(
            default_retail_csv(), slice_path, start="2010-12-01", products=SLICE_PRODUCTS
        )
        with slice_path.open(encoding="utf-8", newline="") as stream:
            lines = list(csv.DictReader(stream))
        top_code = Counter(line["StockCode"] for line in lines).most_common(1)[0][0]
        boundary = [
            sale(top_code, when, quantity, f"59{number:04d}")
            for number, (when, quantity) in enumerate(BOUNDARY_TIMES)
        ]
        replay_file(slice_path, producer_config("kafka_default"), stack.config.kafka.topic)
        replay_file(
            write_lines(root / "boundary.csv", boundary),
            producer_config("kafka_default"),
            stack.config.kafka.topic,
        )
        stack.wait_for_sink(count + len(boundary), SINK_TIMEOUT_S)
        yield {
            "stack": stack,
            "root": root,
            "lines": lines + boundary,
            "top_code": top_code,
            "events": count + len(boundary),
        }
    finally:
        os.environ.clear()
        os.environ.update(saved)
        stack.stop()


@pytest.mark.parametrize(
    ("interval", "week"),
    [
        pytest.param(
            (dt.datetime(2011, 3, 21, 8, tzinfo=UTC), dt.datetime(2011, 3, 28, 7, tzinfo=UTC)),
            dt.date(2011, 3, 21),
            id="spring-forward",
        ),
        pytest.param(
            (dt.datetime(2011, 10, 24, 7, tzinfo=UTC), dt.datetime(2011, 10, 31, 8, tzinfo=UTC)),
            dt.date(2011, 10, 24),
            id="fall-back",
        ),
    ],
)
def test_weeks_cut_in_london_time(
    landed: dict[str, Any], interval: tuple[dt.datetime, dt.datetime], week: dt.date
) -> None:
    # Each scheduled interval runs from Monday 08:00 to Monday 08:00 London
    # time, so it is an hour shorter or longer than a week in UTC.
    next_week = week + dt.timedelta(weeks=1)
    expected = weekly_demand(landed["lines"])

    summary = build_scheduled(*interval)
    build_window(str(next_week + dt.timedelta(weeks=1)), 1)
    built, following = quantities(week), quantities(next_week)

    assert summary["weeks"] == [str(week)]
    assert summary["forecast_week"] == str(next_week)
    assert set(built) == top_products(expected, week)
    assert built == {code: expected.get((code, week), 0) for code in built}
    assert following == {code: expected.get((code, next_week), 0) for code in following}
    assert lag_1(next_week) == {code: expected.get((code, week), 0) for code in following}
    # The Sunday lines count in the week, the Monday midnight line in the next.
    code = landed["top_code"]
    assert built[code] >= 3_000
    assert following[code] >= 4_000


def test_rebuilt_week_is_identical(landed: dict[str, Any]) -> None:
    first = build_window("2011-09-19", 3)
    before = table_rows()

    again = build_window("2011-09-19", 3)
    after_again = table_rows()
    # An earlier week alone: its forecast row must not erase the next week's target.
    build_window("2011-09-05", 1)
    after_earlier_week = table_rows()

    assert first == again
    assert first["rows"] == 3 * TOP_N
    assert differences(before, after_again) == []
    assert differences(before, after_earlier_week) == []
    assert None not in quantities(dt.date(2011, 9, 5)).values()


def test_features_ignore_later_sales(landed: dict[str, Any]) -> None:
    cutoff = dt.date(2011, 11, 14)
    build_window("2011-11-21", 3)
    earlier_before = table_rows(f"WEEK_START < '{cutoff}'")
    cutoff_before = table_rows(f"WEEK_START = '{cutoff}'")

    # Sales from the cutoff on change: a new product outsells every other,
    # the top product sells much more, and one product's later lines vanish.
    stack: LocalStack = landed["stack"]
    code = landed["top_code"]
    later = [
        sale("99999", "2011-11-14 00:00:00", 1_000_000, "599990"),
        sale("99999", "2011-11-16 12:00:00", 1_000_000, "599991"),
        sale(code, "2011-11-15 10:00:00", 50_000, "599992"),
    ]
    replay_file(
        write_lines(landed["root"] / "later.csv", later),
        producer_config("kafka_default"),
        stack.config.kafka.topic,
    )
    stack.wait_for_sink(landed["events"] + len(later), SINK_TIMEOUT_S)
    other = sorted(top_products(weekly_demand(landed["lines"]), cutoff) - {code})[0]
    WarehouseHook(snowflake_conn_id="snowflake_default").run_script(
        [
            "DELETE FROM LIFECYCLE.RAW.POS_TRANSACTIONS WHERE RECORD_CONTENT:StockCode::VARCHAR = %(code)s "
            "AND RECORD_CONTENT:InvoiceDate::TIMESTAMP_NTZ >= %(cutoff)s::TIMESTAMP_NTZ"
        ],
        {"code": other, "cutoff": f"{cutoff} 00:00:00"},
    )
    build_window("2011-11-21", 3)
    earlier_after = table_rows(f"WEEK_START < '{cutoff}'")
    cutoff_after = table_rows(f"WEEK_START = '{cutoff}'")

    # Weeks before the cutoff do not move at all. The cutoff week keeps its
    # features, and only its target (the week's own sales) changes.
    assert differences(earlier_before, earlier_after) == []
    assert differences(cutoff_before, cutoff_after, ignore=("QUANTITY",)) == []
    assert differences(cutoff_before, cutoff_after) != []
    cutoff_quantities = quantities(cutoff)
    assert "99999" not in cutoff_quantities
    assert cutoff_quantities[other] == 0
    # The week after the cutoff ranks the new product: the change was visible.
    assert "99999" in quantities(cutoff + dt.timedelta(weeks=1))
