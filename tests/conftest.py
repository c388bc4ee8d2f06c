"""Test session setup: an Airflow home of its own, so no test touches a real deployment.

The variables are set before any Airflow import, because Airflow reads its
configuration when first imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="ml-lifecycle-airflow-"))

os.environ.update(
    {
        "AIRFLOW_HOME": str(_AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}",
        "AWS_EC2_METADATA_DISABLED": "true",
        "GX_ANALYTICS_ENABLED": "False",
    }
)
os.environ.setdefault("ML_LIFECYCLE_CONFIG", str(PROJECT_ROOT / "include" / "config" / "local.yaml"))


@pytest.fixture(scope="session")
def airflow_db() -> Iterator[Path]:
    """Create the metadata database of the test Airflow home once per session."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        capture_output=True,
        text=True,
        check=False,
        env=os.environ.copy(),
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    yield _AIRFLOW_HOME
