"""Fixtures of the inference container tests: running serve.py subprocesses."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ml_lifecycle.local.process import start_service

from .support import SERVING_DIR, RunningServer, ServerFactory, fit_linear_model, write_model_dir


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start serve.py on a free loopback port and stop every server after the test."""
    started: list[RunningServer] = []

    def start(
        model_dir: Path | None,
        *,
        port: int | None = 0,
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> RunningServer:
        """Start a server. ``None`` for ``model_dir`` or ``port`` leaves that option out."""
        name = f"serve-{len(started)}"
        command = [sys.executable, str(SERVING_DIR / "serve.py"), *extra_args, "--host", "127.0.0.1"]
        if model_dir is not None:
            command += ["--model-dir", str(model_dir)]
        if port is not None:
            command += ["--port", str(port)]
        service = start_service(
            name, command, run_dir=tmp_path / "run", log_dir=tmp_path / "log", env=env, timeout_s=30
        )
        server = RunningServer(service)
        started.append(server)
        return server

    yield start
    for server in started:
        server.service.stop(timeout_s=5)


@pytest.fixture(scope="module")
def linear_model() -> Any:
    return fit_linear_model()


@pytest.fixture(scope="module")
def linear_server(tmp_path_factory: pytest.TempPathFactory, linear_model: Any) -> Iterator[RunningServer]:
    """One server with the linear model, shared by the tests that only send requests."""
    base = tmp_path_factory.mktemp("linear-server")
    model_dir = write_model_dir(base / "model", linear_model)
    command = [
        sys.executable,
        str(SERVING_DIR / "serve.py"),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--model-dir",
        str(model_dir),
    ]
    service = start_service("serve-linear", command, run_dir=base / "run", log_dir=base / "log", timeout_s=30)
    server = RunningServer(service)
    try:
        assert server.wait_for_ping("healthy").status == 200, server.log_text()
        yield server
    finally:
        service.stop(timeout_s=5)
