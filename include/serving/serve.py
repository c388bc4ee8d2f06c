"""HTTP server of the demand-forecast inference container, after the SageMaker hosting contract.

SageMaker starts the image as ``docker run IMAGE serve`` and sends ``GET /ping``
and ``POST /invocations`` to port 8080. The local AWS emulator runs this file
directly, with ``--host 127.0.0.1`` and a free port. Run
``python serve.py --help`` for the options.

Like SageMaker's scikit-learn container, the server imports the handlers
``model_fn``, ``input_fn``, ``predict_fn`` and ``output_fn`` from
``code/inference.py`` in the model directory. A handler that file does not
define, or the whole set if the file is missing, comes from the
``inference.py`` next to this file. The container has only the standard
library, numpy, scikit-learn and joblib, so this file imports nothing else.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

log = logging.getLogger("serving.serve")

DEFAULT_PORT = 8080
DEFAULT_MODEL_DIR = "/opt/ml/model"
# SageMaker rejects real-time invocation payloads above 6 MB.
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
# An oversized body is read and discarded up to this size so that the client
# receives the 413 response instead of a connection reset.
MAX_DRAIN_BYTES = 64 * 1024 * 1024
DRAIN_CHUNK_BYTES = 64 * 1024
HANDLER_NAMES = ("model_fn", "input_fn", "predict_fn", "output_fn")
BUNDLED_HANDLERS = Path(__file__).resolve().with_name("inference.py")
USER_HANDLERS = Path("code") / "inference.py"


@dataclass(frozen=True)
class Handlers:
    """The four handler functions and the files they came from."""

    model_fn: Callable[[str], Any]
    input_fn: Callable[[bytes, str], Any]
    predict_fn: Callable[[Any, Any], Any]
    output_fn: Callable[[Any, str], tuple[bytes, str]]
    sources: dict[str, str]


def _import_file(module_name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    # Dataclasses and pickle look a module up in sys.modules while it executes.
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def load_handlers(model_dir: Path) -> Handlers:
    """Import the handlers from ``model_dir/code/inference.py``, else from the bundled file."""
    user_path = model_dir / USER_HANDLERS
    user_module = None
    if user_path.is_file():
        # SageMaker puts code/ on sys.path, so inference.py may import modules next to it.
        sys.path.insert(0, str(user_path.parent))
        user_module = _import_file("user_inference", user_path)

    bundled_module = None
    functions: dict[str, Callable[..., Any]] = {}
    sources: dict[str, str] = {}
    for name in HANDLER_NAMES:
        function = getattr(user_module, name, None) if user_module is not None else None
        source = user_path
        if function is None:
            if bundled_module is None:
                bundled_module = _import_file("bundled_inference", BUNDLED_HANDLERS)
            function = getattr(bundled_module, name)
            source = BUNDLED_HANDLERS
        functions[name] = function
        sources[name] = str(source)
    return Handlers(**functions, sources=sources)


class ModelState:
    """Handlers and model of this server, loaded once in a background thread."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        self.handlers: Handlers | None = None
        self.model: Any = None
        self.error: str | None = None
        self._ready = threading.Event()

    @property
    def status(self) -> str:
        if self._ready.is_set():
            return "healthy"
        return "failed" if self.error is not None else "loading"

    def load(self) -> None:
        """Import the handlers and call ``model_fn``, keeping any error for /ping."""
        started = time.perf_counter()
        try:
            handlers = load_handlers(self.model_dir)
            model = handlers.model_fn(str(self.model_dir))
        except Exception as err:
            # Any failure leaves the server up and unhealthy, which is how
            # SageMaker notices a broken model: /ping never returns 200.
            self.error = f"{type(err).__name__}: {err}"
            log.exception("Loading the model from %s failed", self.model_dir)
            return
        self.handlers = handlers
        self.model = model
        self._ready.set()
        log.info(
            "Model in %s loaded in %.0f ms; handlers from %s",
            self.model_dir,
            (time.perf_counter() - started) * 1000,
            sorted(set(handlers.sources.values())),
        )


class InferenceServer(ThreadingHTTPServer):
    """Threaded HTTP server that owns the model state."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: ModelState) -> None:
        super().__init__(address, InferenceRequestHandler)
        self.state = state


class InferenceRequestHandler(BaseHTTPRequestHandler):
    """Handle /ping, /invocations and /execution-parameters."""

    server: InferenceServer
    # HTTP/1.1 keeps connections open between invocations.
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        started = time.perf_counter()
        path = self.path.split("?", 1)[0]
        if path == "/ping":
            state = self.server.state
            body: dict[str, Any] = {"status": state.status}
            if state.error is not None:
                body["error"] = state.error
            status = HTTPStatus.OK if state.status == "healthy" else HTTPStatus.SERVICE_UNAVAILABLE
            self._send_json(status, body, started)
        elif path == "/execution-parameters":
            # Batch transform requests these once before it sends records.
            parameters = {
                "MaxConcurrentTransforms": os.cpu_count() or 1,
                "BatchStrategy": "MULTI_RECORD",
                "MaxPayloadInMB": MAX_PAYLOAD_BYTES // (1024 * 1024),
            }
            self._send_json(HTTPStatus.OK, parameters, started)
        else:
            self._send_error(HTTPStatus.NOT_FOUND, f"no route for GET {path}; use /ping", started)

    def do_POST(self) -> None:
        started = time.perf_counter()
        path = self.path.split("?", 1)[0]
        if path != "/invocations":
            self._send_error(HTTPStatus.NOT_FOUND, f"no route for POST {path}; use /invocations", started)
            return
        self._invoke(started)

    def _invoke(self, started: float) -> None:
        state = self.server.state
        if state.handlers is None:
            self._send_error(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"the model is not loaded ({state.status}): {state.error or 'try again shortly'}",
                started,
            )
            return

        body = self._read_body(started)
        if body is None:
            return

        content_type = self.headers.get("Content-Type", "")
        accept = self.headers.get("Accept", "")
        handlers = state.handlers
        try:
            data = handlers.input_fn(body, content_type)
            prediction = handlers.predict_fn(data, state.model)
            payload, response_type = handlers.output_fn(prediction, accept)
        except Exception as err:
            status_code = getattr(err, "status_code", None)
            if isinstance(status_code, int) and 400 <= status_code < 500:
                self._send_error(HTTPStatus(status_code), str(err), started)
                return
            log.exception("Prediction failed")
            self._send_error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(err).__name__}: {err}", started)
            return

        rows = len(prediction) if hasattr(prediction, "__len__") else None
        self._send(HTTPStatus.OK, payload, response_type, started, rows=rows)

    def _read_body(self, started: float) -> bytes | None:
        """Return the request body, or send the error response and return None."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            self._send_error(
                HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length header", started
            )
            return None
        header = self.headers.get("Content-Length")
        try:
            length = int(header) if header is not None else 0
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            self._send_error(HTTPStatus.BAD_REQUEST, f"invalid Content-Length {header!r}", started)
            return None
        if length > MAX_PAYLOAD_BYTES:
            self._discard_body(length)
            self.close_connection = True
            self._send_error(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"payload of {length} bytes exceeds the limit of {MAX_PAYLOAD_BYTES} bytes (6 MB); "
                "split the records into smaller requests",
                started,
            )
            return None
        if length == 0:
            self._send_error(
                HTTPStatus.BAD_REQUEST, "the request body is empty; send records to predict", started
            )
            return None
        return self.rfile.read(length)

    def _discard_body(self, length: int) -> None:
        remaining = min(length, MAX_DRAIN_BYTES)
        while remaining > 0:
            chunk = self.rfile.read(min(DRAIN_CHUNK_BYTES, remaining))
            if not chunk:
                break
            remaining -= len(chunk)

    def _send_json(self, status: HTTPStatus, body: dict[str, Any], started: float) -> None:
        self._send(status, json.dumps(body).encode("utf-8"), "application/json", started)

    def _send_error(self, status: HTTPStatus, message: str, started: float) -> None:
        payload = json.dumps({"error": message}).encode("utf-8")
        self._send(status, payload, "application/json", started, error=message)

    def _send(
        self,
        status: HTTPStatus,
        payload: bytes,
        content_type: str,
        started: float,
        *,
        rows: int | None = None,
        error: str | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        # One line per request. An error adds its message, which names at most
        # one offending value and never the payload.
        log.info(
            "%s %s %d rows=%s %.1f ms%s",
            self.command,
            self.path,
            status,
            "-" if rows is None else rows,
            (time.perf_counter() - started) * 1000,
            f": {error}" if error else "",
        )

    def log_message(self, format: str, *args: Any) -> None:
        # _send logs each request once with its row count, and the base class
        # would print a second line for every request to stderr.
        return


def write_ready_file(path: Path, port: int) -> None:
    """Write ``{"pid", "port"}`` to ``path`` atomically, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps({"pid": os.getpid(), "port": port}), encoding="utf-8")
    temporary.replace(path)


def _stop_on_sigterm(_signum: int, _frame: object) -> None:
    # SageMaker and the emulator stop the server with SIGTERM. Raising here
    # leaves serve_forever, so main closes the socket.
    raise KeyboardInterrupt


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Serve the demand-forecast model over HTTP (SageMaker contract)."
    )
    parser.add_argument(
        "command",
        nargs="?",
        choices=["serve"],
        help="SageMaker starts containers with 'serve'; optional here",
    )
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default: 0.0.0.0)")  # noqa: S104
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"TCP port; 0 picks a free one (default: $SAGEMAKER_BIND_TO_PORT, else {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help=f"model directory with model.joblib (default: $SM_MODEL_DIR, else {DEFAULT_MODEL_DIR})",
    )
    parser.add_argument(
        "--ready-file", type=Path, default=None, help='JSON file {"pid", "port"} written once listening'
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    args = parser.parse_args(argv)
    if args.port is None:
        args.port = int(os.environ.get("SAGEMAKER_BIND_TO_PORT", DEFAULT_PORT))
    if args.model_dir is None:
        args.model_dir = Path(os.environ.get("SM_MODEL_DIR", DEFAULT_MODEL_DIR))
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    signal.signal(signal.SIGTERM, _stop_on_sigterm)

    state = ModelState(args.model_dir)
    server = InferenceServer((args.host, args.port), state)
    port = int(server.server_address[1])
    try:
        # Listen first and load afterwards, so /ping returns 503 while a large model loads.
        threading.Thread(target=state.load, name="model-loader", daemon=True).start()
        if args.ready_file is not None:
            write_ready_file(args.ready_file, port)
        log.info("Inference server listening on %s:%d, model directory %s", args.host, port, args.model_dir)
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("Inference server on port %d stopping", port)
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
