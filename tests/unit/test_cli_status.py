"""`ml-lifecycle status` checks each recorded service instead of trusting the state file."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ml_lifecycle.cli import main


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    yield process
    process.kill()
    process.wait()


def write_state(root: Path, services: dict[str, int]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    state = {"services": {name: {"pgid": pgid} for name, pgid in services.items()}}
    (root / "stack.json").write_text(json.dumps(state), encoding="utf-8")


def test_dead_service_named(
    tmp_path: Path, sleeper: subprocess.Popen[bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    finished = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    finished.wait()
    write_state(tmp_path, {"warehouse": sleeper.pid, "scheduler": finished.pid})

    returncode = main(["--root", str(tmp_path), "status"])
    output = capsys.readouterr().out

    assert returncode == 1
    assert "Not running: scheduler;" in output
    assert '"running": true' in output


def test_all_running_passes(
    tmp_path: Path, sleeper: subprocess.Popen[bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    write_state(tmp_path, {"warehouse": sleeper.pid})

    assert main(["--root", str(tmp_path), "status"]) == 0
    assert "Not running" not in capsys.readouterr().out
