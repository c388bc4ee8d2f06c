"""Fixtures of the integration tests: a slice of the real data and the local services without Airflow.

The DAGs run in-process with ``dag.test()``; the warehouse emulator, the Kafka
broker, the AWS emulator with its model servers, and the sink run as separate
processes on loopback, started here and stopped afterwards.
"""

from __future__ import annotations

import csv
import gzip
import os
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from ml_lifecycle.local.replay import default_retail_csv, producer_config, replay_file
from ml_lifecycle.local.stack import LocalStack

TEST_CONFIG = Path(__file__).with_name("lifecycle-test.yaml")
SLICE_START = "2011-04-25"
SLICE_PRODUCTS = 60
PRODUCT_CODE = re.compile(r"^[0-9]{5}[A-Za-z]{0,2}$")
SINK_TIMEOUT_S = 120.0


def write_retail_slice(source: Path, target: Path, *, start: str, products: int) -> int:
    """Copy the lines from ``start`` on of the ``products`` most often sold products; return the count."""
    with gzip.open(source, "rt", encoding="utf-8", newline="") as stream:
        rows = [row for row in csv.DictReader(stream) if row["InvoiceDate"] >= start]
    counts = Counter(row["StockCode"] for row in rows if PRODUCT_CODE.match(row["StockCode"]))
    chosen = {code for code, _ in counts.most_common(products)}
    selected = [row for row in rows if row["StockCode"] in chosen]
    with target.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(selected)
    return len(selected)


@pytest.fixture(scope="session")
def retail_slice(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    source = default_retail_csv()
    if not source.is_file():
        pytest.fail(
            f"the sales data {source} is missing; set ML_LIFECYCLE_RETAIL_CSV to the UCI Online Retail file"
        )
    target = tmp_path_factory.mktemp("data") / "online_retail_slice.csv"
    return target, write_retail_slice(source, target, start=SLICE_START, products=SLICE_PRODUCTS)


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory, airflow_db: Path) -> Iterator[LocalStack]:
    """Start the warehouse, broker, AWS emulator and sink; point the connections at them."""
    stack = LocalStack(root=tmp_path_factory.mktemp("stack"), config_path=TEST_CONFIG, with_airflow=False)
    stack.start()
    saved = dict(os.environ)
    os.environ.update(stack.connection_env())
    from ml_lifecycle.config import _load_cached

    _load_cached.cache_clear()
    try:
        yield stack
    finally:
        os.environ.clear()
        os.environ.update(saved)
        _load_cached.cache_clear()
        stack.stop()


@pytest.fixture(scope="module")
def replayed(services: LocalStack, retail_slice: tuple[Path, int]) -> dict[str, int]:
    """Replay the slice through Kafka and wait until the sink has landed it."""
    path, lines = retail_slice
    summary = replay_file(path, producer_config("kafka_default"), services.config.kafka.topic)
    assert summary.events_produced == lines
    totals = services.wait_for_sink(lines, SINK_TIMEOUT_S)
    return {"produced": summary.events_produced, **totals}
