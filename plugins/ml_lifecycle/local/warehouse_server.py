"""Serve the Snowflake wire protocol on loopback with fakesnow, data kept on disk.

Run as ``python -m ml_lifecycle.local.warehouse_server --data-dir DIR --ready-file F``.
The real snowflake-connector reaches it with ``host=127.0.0.1``, the port
from the ready file and ``protocol=http``.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path

from ml_lifecycle.local.process import bind_loopback_socket, install_sigterm_handler, write_ready_file

log = logging.getLogger("ml_lifecycle.warehouse_server")


def serve(data_dir: Path, ready_file: Path, port: int = 0, host: str = "127.0.0.1") -> None:
    """Run the emulator until SIGTERM; databases live as DuckDB files in ``data_dir``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    stage_dir = data_dir / "stages"
    stage_dir.mkdir(exist_ok=True)
    # fakesnow 0.12.1 keeps internal stages in a temporary directory created
    # when fakesnow.transforms.stage is imported, so point TMPDIR at the data
    # directory first to keep staged files under it.
    os.environ["TMPDIR"] = str(stage_dir)
    tempfile.tempdir = None

    import importlib

    import uvicorn
    from fakesnow.instance import FakeSnow

    # The fakesnow package exports a function named `server` that hides the
    # submodule of the same name, so the module is looked up by its full name.
    fakesnow_server = importlib.import_module("fakesnow.server")

    # NOTE: fakesnow 0.12.1 opens a separate DuckDB instance for every session
    # that sends FAKESNOW_DB_PATH, and DuckDB cannot attach one file to two
    # instances, so concurrent sessions would fail. One shared instance backed
    # by files serves all sessions instead; clients must not send that parameter.
    fakesnow_server.shared_fs = FakeSnow(db_path=data_dir)  # type: ignore[attr-defined]

    sock = bind_loopback_socket(port, host)
    actual_port = sock.getsockname()[1]
    config = uvicorn.Config(fakesnow_server.app, log_level="warning", timeout_keep_alive=30)
    server = uvicorn.Server(config)

    # uvicorn installs its own SIGTERM handler that shuts down gracefully, so
    # the ready file is written from its startup hook.
    original_startup = server.startup

    async def startup(sockets: list | None = None) -> None:
        await original_startup(sockets=sockets)
        write_ready_file(ready_file, {"port": actual_port, "host": "127.0.0.1", "data_dir": str(data_dir)})
        log.info("Warehouse emulator listening on 127.0.0.1:%d, data in %s", actual_port, data_dir)

    server.startup = startup  # type: ignore[method-assign]
    server.run(sockets=[sock])
    log.info("Warehouse emulator stopped")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data-dir", type=Path, required=True, help="directory for the DuckDB database files"
    )
    parser.add_argument(
        "--ready-file", type=Path, required=True, help="JSON file written once the server listens"
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 only inside a container"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_sigterm_handler()
    try:
        serve(args.data_dir, args.ready_file, args.port, args.host)
    except KeyboardInterrupt:
        log.info("Warehouse emulator stopped")


if __name__ == "__main__":
    main()
