"""Helpers of the inference container tests: fitted models, model directories, an HTTP client.

include/ is no package, so the serving modules are imported by file path.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from ml_lifecycle.local.process import ServiceProcess

SERVING_DIR = Path(__file__).resolve().parents[2] / "include" / "serving"
FEATURE_COLUMNS = ["LAG_1", "LAG_2", "ROLLING_MEAN_4"]
ID_COLUMNS = ["STOCK_CODE", "WEEK_START"]
# Coefficients of the linear demand the test models learn. LAG_2 has a negative
# weight so some inputs give a negative raw prediction that must be clipped.
COEFFICIENTS = [2.0, -3.0, 0.5]
INTERCEPT = 1.0


def import_serving_module(name: str) -> ModuleType:
    """Import include/serving/<name>.py under a test-only module name."""
    module_name = f"serving_under_test_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, SERVING_DIR / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def training_data(rows: int = 200, seed: int = 7) -> tuple[Any, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    features = rng.uniform(0, 20, size=(rows, len(FEATURE_COLUMNS)))
    target = features @ np.array(COEFFICIENTS) + INTERCEPT
    return features, target


def fit_linear_model() -> Any:
    from sklearn.linear_model import LinearRegression

    return LinearRegression().fit(*training_data())


def fit_boosting_model() -> Any:
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(max_iter=30, random_state=0).fit(*training_data())


def write_model_dir(
    directory: Path,
    estimator: Any,
    *,
    model_version: str = "20111205-ab12cd",
    with_code: bool = True,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``model.joblib``, ``metadata.json`` and ``code/inference.py`` like the training code does."""
    import joblib
    import sklearn

    directory.mkdir(parents=True, exist_ok=True)
    joblib.dump(estimator, directory / "model.joblib")
    content = {
        "model_version": model_version,
        "feature_columns": FEATURE_COLUMNS,
        "id_columns": ID_COLUMNS,
        "target": "QUANTITY",
        "framework": "scikit-learn",
        "framework_version": sklearn.__version__,
    }
    content.update(metadata or {})
    (directory / "metadata.json").write_text(json.dumps(content), encoding="utf-8")
    if with_code:
        (directory / "code").mkdir(exist_ok=True)
        shutil.copy(SERVING_DIR / "inference.py", directory / "code" / "inference.py")
    return directory


def expected_forecasts(estimator: Any, rows: list[list[float]]) -> list[float]:
    import numpy as np

    return [float(value) for value in np.clip(estimator.predict(np.array(rows, dtype=np.float64)), 0, None)]


@dataclass
class Response:
    status: int
    content_type: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class RunningServer:
    """A serve.py subprocess and a small HTTP client for it."""

    service: ServiceProcess

    @property
    def port(self) -> int:
        return int(self.service.info["port"])

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Response:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return Response(response.status, response.getheader("Content-Type", ""), response.read())
        finally:
            connection.close()

    def invoke(
        self, body: bytes | str, content_type: str = "application/json", accept: str | None = None
    ) -> Response:
        headers = {"Content-Type": content_type}
        if accept is not None:
            headers["Accept"] = accept
        payload = body.encode("utf-8") if isinstance(body, str) else body
        return self.request("POST", "/invocations", payload, headers)

    def wait_for_ping(self, expected: str, timeout_s: float = 30.0) -> Response:
        """Poll /ping until its ``status`` field is ``expected`` (healthy, loading or failed)."""
        deadline = time.monotonic() + timeout_s
        response = self.request("GET", "/ping")
        while response.json()["status"] != expected and time.monotonic() < deadline:
            time.sleep(0.1)
            response = self.request("GET", "/ping")
        return response

    def log_text(self) -> str:
        return self.service.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_for_log(self, text: str, timeout_s: float = 5.0) -> str:
        """Return the log once it contains ``text``; the server writes a request's line after responding."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            log_text = self.log_text()
            if text in log_text:
                return log_text
            time.sleep(0.05)
        return self.log_text()


ServerFactory = Callable[..., RunningServer]
