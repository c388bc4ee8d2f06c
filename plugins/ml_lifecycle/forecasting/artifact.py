"""Model archives in the SageMaker scikit-learn layout, and forecasts computed as the endpoint does.

``model.tar.gz`` contains ``model.joblib`` (the fitted estimator),
``metadata.json`` (version, feature columns, target scaling) and
``code/inference.py`` (the request handlers of include/serving). Forecasts
made here for evaluation go through the same ``forecast_matrix`` handler
that the inference container runs, so the holdout metrics describe what the
endpoint will return.
"""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import tarfile
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ml_lifecycle.config import PROJECT_ROOT

SERVING_DIR = PROJECT_ROOT / "include" / "serving"
INFERENCE_MODULE = "inference.py"
MODEL_FILE = "model.joblib"
METADATA_FILE = "metadata.json"
ARCHIVE_NAME = "model.tar.gz"


@cache
def inference_module() -> ModuleType:
    """Import include/serving/inference.py, the handlers the inference container runs."""
    name = "ml_lifecycle_serving_inference"
    spec = importlib.util.spec_from_file_location(name, SERVING_DIR / INFERENCE_MODULE)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {SERVING_DIR / INFERENCE_MODULE}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def model_metadata(
    *,
    model_version: str,
    feature_columns: Sequence[str],
    id_columns: Sequence[str],
    target: str,
    scale_feature: str | None,
    scale_offset: float,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Return the content of ``metadata.json``."""
    import sklearn

    metadata: dict[str, Any] = {
        "model_version": model_version,
        "feature_columns": list(feature_columns),
        "id_columns": list(id_columns),
        "target": target,
        "framework": "scikit-learn",
        "framework_version": sklearn.__version__,
    }
    if scale_feature is not None:
        metadata["target_scale"] = {"feature": scale_feature, "offset": scale_offset}
    metadata.update(extra or {})
    return metadata


def forecast_units(estimator: Any, metadata: Mapping[str, Any], features: np.ndarray) -> np.ndarray:
    """Forecast units for a feature matrix exactly as the inference container would."""
    handlers = inference_module()
    scale = metadata.get("target_scale") or {}
    model = handlers.ForecastModel(
        estimator=estimator,
        model_version=metadata["model_version"],
        feature_columns=tuple(metadata["feature_columns"]),
        id_columns=tuple(metadata.get("id_columns", ())),
        target=metadata.get("target", ""),
        scale_feature=scale.get("feature"),
        scale_offset=float(scale.get("offset", 0.0)),
    )
    return np.asarray(
        handlers.forecast_matrix(model, np.asarray(features, dtype=np.float64)), dtype=np.float64
    )


def _add_bytes(archive: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    # A fixed timestamp and owner keep the archive byte-identical for the same model.
    info.mtime = 0
    info.mode = 0o644
    archive.addfile(info, io.BytesIO(payload))


def build_model_archive(estimator: Any, metadata: Mapping[str, Any]) -> bytes:
    """Return ``model.tar.gz`` as bytes: model.joblib, metadata.json and code/inference.py."""
    import gzip

    import joblib

    model_bytes = io.BytesIO()
    joblib.dump(estimator, model_bytes)
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w") as archive:
        _add_bytes(archive, MODEL_FILE, model_bytes.getvalue())
        _add_bytes(archive, METADATA_FILE, json.dumps(metadata, indent=2, sort_keys=True).encode("utf-8"))
        _add_bytes(archive, f"code/{INFERENCE_MODULE}", (SERVING_DIR / INFERENCE_MODULE).read_bytes())
    return gzip.compress(tar_bytes.getvalue(), mtime=0)


def read_model_archive(payload: bytes) -> tuple[Any, dict[str, Any]]:
    """Load the estimator and metadata from ``model.tar.gz`` bytes without extracting to disk."""
    import joblib

    with tarfile.open(fileobj=io.BytesIO(payload), mode="r:gz") as archive:
        members = {member.name: member for member in archive.getmembers() if member.isfile()}
        missing = [name for name in (MODEL_FILE, METADATA_FILE) if name not in members]
        if missing:
            raise ValueError(f"model archive lacks {', '.join(missing)}; found {sorted(members)}")
        model_file = archive.extractfile(members[MODEL_FILE])
        metadata_file = archive.extractfile(members[METADATA_FILE])
        if model_file is None or metadata_file is None:
            raise ValueError("model archive members cannot be read")
        estimator = joblib.load(io.BytesIO(model_file.read()))
        metadata = json.loads(metadata_file.read().decode("utf-8"))
    return estimator, metadata


def write_model_archive(directory: Path, estimator: Any, metadata: Mapping[str, Any]) -> Path:
    """Write ``model.tar.gz`` into ``directory`` and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ARCHIVE_NAME
    path.write_bytes(build_model_archive(estimator, metadata))
    return path
