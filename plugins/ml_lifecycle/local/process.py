"""Start, find and stop the local service processes.

Every local service is a module run as ``python -m <module> --ready-file PATH``.
It listens on 127.0.0.1, picks a free port itself, and once it serves it
writes PATH as a JSON object with at least ``pid`` and ``port``. It stops
cleanly on SIGTERM. Each one runs in its own process group, so stopping it
also stops the children it started.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_START_TIMEOUT_S = 60.0
DEFAULT_STOP_TIMEOUT_S = 15.0


class ServiceStartError(RuntimeError):
    """A local service exited or did not become ready in time."""


def write_ready_file(path: str | Path, info: Mapping[str, Any]) -> None:
    """Write ``info`` (plus this process's pid) to ``path`` atomically."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_suffix(target.suffix + ".tmp")
    temporary.write_text(json.dumps({"pid": os.getpid(), **info}), encoding="utf-8")
    temporary.replace(target)


LOOPBACK = "127.0.0.1"


def bind_loopback_socket(port: int = 0, host: str = LOOPBACK) -> socket.socket:
    """Return a listening-ready TCP socket bound to 127.0.0.1 (``port`` 0 picks a free one).

    ``host`` is for containers only, where a service must accept connections
    from the other containers; local runs keep the loopback default.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    Prefer passing a bound socket to the server; use this only for programs
    that take a port number and bind it themselves.
    """
    with contextlib.closing(bind_loopback_socket(0)) as sock:
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 30.0) -> None:
    """Block until something accepts TCP connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise ServiceStartError(f"nothing listens on 127.0.0.1:{port} after {timeout_s:.0f} s")


@dataclass
class ServiceProcess:
    """A started service: its process and what it wrote to its ready file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        """Stop the service's process group: SIGTERM, then SIGKILL after ``timeout_s``."""
        stop_process_group(self.process.pid, timeout_s)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=1)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"


def start_service(
    name: str,
    command: Sequence[str],
    *,
    run_dir: Path,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    timeout_s: float = DEFAULT_START_TIMEOUT_S,
    wait_ready: bool = True,
) -> ServiceProcess:
    """Start ``command`` with ``--ready-file`` appended and wait for the file.

    :param command: the program and its arguments, without ``--ready-file``.
    :param wait_ready: if False, return at once; for programs without a ready file.
    :raises ServiceStartError: if the process exits or writes nothing within ``timeout_s``.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    ready_file = run_dir / f"{name}.json"
    ready_file.unlink(missing_ok=True)
    log_path = log_dir / f"{name}.log"
    full_command = [*command, "--ready-file", str(ready_file)] if wait_ready else list(command)

    with log_path.open("ab") as log_stream:
        process = subprocess.Popen(
            full_command,
            stdin=subprocess.DEVNULL,
            stdout=log_stream,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
    service = ServiceProcess(name, process, log_path)
    if not wait_ready:
        return service

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready_file.exists():
            service.info = json.loads(ready_file.read_text(encoding="utf-8"))
            log.info("Started %s (pid %d): %s", name, process.pid, service.info)
            return service
        if process.poll() is not None:
            raise ServiceStartError(
                f"{name} exited with code {process.returncode} before it was ready; "
                f"last lines of {log_path}:\n{_tail(log_path)}"
            )
        time.sleep(0.1)
    service.stop()
    raise ServiceStartError(
        f"{name} was not ready after {timeout_s:.0f} s; last lines of {log_path}:\n{_tail(log_path)}"
    )


def python_module_command(module: str, *args: str) -> list[str]:
    """Return the command that runs ``module`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def process_group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_process_group(pgid: int, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> bool:
    """Send SIGTERM to a process group, then SIGKILL if it is still alive after ``timeout_s``.

    :return: True if the group had to be killed.
    """
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        # Reap the leader if it is our child, otherwise it lingers as a zombie
        # and the group looks alive.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pgid, os.WNOHANG)
        if not process_group_alive(pgid):
            return False
        time.sleep(0.1)
    log.warning("Process group %d did not stop within %.0f s after SIGTERM; sending SIGKILL", pgid, timeout_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    return True


def install_sigterm_handler() -> None:
    """Turn SIGTERM into KeyboardInterrupt, so ``finally`` blocks of a service run on stop."""

    def _raise(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _raise)
