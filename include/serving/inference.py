"""Request handlers of the demand-forecast inference container.

serve.py calls them the way SageMaker's scikit-learn container does: ``model_fn``
once when the server starts, then ``input_fn``, ``predict_fn`` and ``output_fn``
for each request. The training code copies this file to ``code/inference.py``
inside ``model.tar.gz``, so every model archive carries the handlers it was
trained with. The container has only the standard library, numpy, scikit-learn
and joblib, so this module imports nothing else.

``input_fn`` receives no model, so it only parses the body. ``predict_fn`` checks
the parsed records against the feature columns in ``metadata.json``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("serving.inference")

JSON_CONTENT_TYPE = "application/json"
CSV_CONTENT_TYPE = "text/csv"
MODEL_FILE = "model.joblib"
METADATA_FILE = "metadata.json"


class RequestError(ValueError):
    """Invalid request. serve.py responds with ``status_code`` and the message."""

    status_code = 400


class UnsupportedContentTypeError(RequestError):
    """The request body has a content type that no handler parses."""

    status_code = 415


class UnsupportedAcceptError(RequestError):
    """The Accept header names no content type that ``output_fn`` writes."""

    status_code = 406


@dataclass(frozen=True)
class ForecastModel:
    """A fitted estimator and the columns it was trained on, from ``metadata.json``."""

    estimator: Any
    model_version: str
    feature_columns: tuple[str, ...]
    id_columns: tuple[str, ...]
    target: str
    scale_feature: str | None = None
    """Feature the estimator's output is multiplied by (plus ``scale_offset``), if any."""
    scale_offset: float = 0.0


@dataclass(frozen=True)
class JsonRecords:
    """Records of a JSON body, not yet checked against the feature columns."""

    records: list[dict[str, Any]]


@dataclass(frozen=True)
class CsvRows:
    """Rows of a CSV body as ``(line number, fields)``, blank lines left out."""

    rows: list[tuple[int, list[str]]]


@dataclass(frozen=True)
class Forecasts:
    """Forecasts in request order, with the id values each input record had."""

    values: list[float]
    ids: list[dict[str, Any]]
    model_version: str

    def __len__(self) -> int:
        return len(self.values)


def model_fn(model_dir: str) -> ForecastModel:
    """Load the estimator and its metadata from a directory in the SageMaker scikit-learn layout.

    :param model_dir: directory with ``model.joblib`` and ``metadata.json``.
    :raises FileNotFoundError: if either file is missing.
    :raises ValueError: if the metadata is invalid or does not match the estimator.
    :raises TypeError: if ``metadata.json`` is no object or the model file contains no estimator.
    """
    import joblib
    import sklearn

    directory = Path(model_dir)
    metadata_path = directory / METADATA_FILE
    model_path = directory / MODEL_FILE
    for required in (metadata_path, model_path):
        if not required.is_file():
            raise FileNotFoundError(
                f"{required} not found; a model directory needs {MODEL_FILE} and {METADATA_FILE}"
            )

    metadata = _read_metadata(metadata_path)
    estimator = joblib.load(model_path)
    if not callable(getattr(estimator, "predict", None)):
        raise TypeError(
            f"{model_path} contains a {type(estimator).__name__}, expected an estimator with predict()"
        )

    feature_columns = metadata["feature_columns"]
    expected_count = getattr(estimator, "n_features_in_", None)
    if expected_count is not None and expected_count != len(feature_columns):
        raise ValueError(
            f"the estimator in {model_path} was fitted on {expected_count} features, but "
            f"{metadata_path} lists {len(feature_columns)}: {feature_columns}"
        )
    fitted_names = getattr(estimator, "feature_names_in_", None)
    if fitted_names is not None:
        if list(fitted_names) != feature_columns:
            raise ValueError(
                f"the estimator in {model_path} was fitted on the columns {list(fitted_names)}, but "
                f"{metadata_path} lists {feature_columns}; the order must match"
            )
        # Fitted on a DataFrame, the estimator warns on every numpy predict. The
        # check above makes the column order right, and pandas is not installed here.
        warnings.filterwarnings("ignore", message="X does not have valid feature names", category=UserWarning)

    framework_version = metadata.get("framework_version")
    if framework_version and framework_version != sklearn.__version__:
        log.warning(
            "Model %s was trained with scikit-learn %s but this container has %s; predictions may differ",
            metadata["model_version"],
            framework_version,
            sklearn.__version__,
        )

    log.info(
        "Loaded model %s (%s) with %d feature columns",
        metadata["model_version"],
        type(estimator).__name__,
        len(feature_columns),
    )
    scale = metadata.get("target_scale") or {}
    return ForecastModel(
        estimator=estimator,
        model_version=metadata["model_version"],
        feature_columns=tuple(feature_columns),
        id_columns=tuple(metadata.get("id_columns", [])),
        target=metadata.get("target", ""),
        scale_feature=scale.get("feature"),
        scale_offset=float(scale.get("offset", 0.0)),
    )


def _read_metadata(path: Path) -> dict[str, Any]:
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(metadata, dict):
        raise TypeError(f"{path} contains a {type(metadata).__name__}, expected a JSON object")

    version = metadata.get("model_version")
    if not isinstance(version, str) or not version:
        raise ValueError(f"{path} has model_version {version!r}, expected a non-empty string")
    columns = metadata.get("feature_columns")
    if (
        not isinstance(columns, list)
        or not columns
        or not all(isinstance(name, str) and name for name in columns)
    ):
        raise ValueError(f"{path} has feature_columns {columns!r}, expected a non-empty list of names")
    if len(set(columns)) != len(columns):
        raise ValueError(f"{path} lists a feature column twice: {columns}")
    id_columns = metadata.get("id_columns", [])
    if not isinstance(id_columns, list) or not all(isinstance(name, str) for name in id_columns):
        raise ValueError(f"{path} has id_columns {id_columns!r}, expected a list of names")
    scale = metadata.get("target_scale")
    if scale is not None and (
        not isinstance(scale, dict)
        or scale.get("feature") not in columns
        or isinstance(scale.get("offset", 0.0), bool)
        or not isinstance(scale.get("offset", 0.0), int | float)
    ):
        raise ValueError(
            f"{path} has target_scale {scale!r}, expected an object with 'feature' (one of the "
            "feature columns) and a numeric 'offset'"
        )
    return metadata


def input_fn(body: bytes, content_type: str) -> JsonRecords | CsvRows:
    """Parse a request body of type ``application/json`` or ``text/csv``.

    A missing content type counts as JSON. A JSON body is ``{"instances": [...]}``
    or a bare list of records. A CSV body has one row of feature values per line
    and no header, although a header row is tolerated and skipped by ``predict_fn``.

    :raises UnsupportedContentTypeError: for any other content type.
    :raises RequestError: if the body cannot be parsed or contains no records.
    """
    media_type = _media_type(content_type) or JSON_CONTENT_TYPE
    if media_type == JSON_CONTENT_TYPE:
        return _parse_json(body)
    if media_type == CSV_CONTENT_TYPE:
        return _parse_csv(body)
    raise UnsupportedContentTypeError(
        f"content type {content_type!r} is not supported; send {JSON_CONTENT_TYPE} or {CSV_CONTENT_TYPE}"
    )


def _media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


def _decode(body: bytes) -> str:
    try:
        # utf-8-sig drops the byte order mark that spreadsheet exports put first.
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise RequestError(f"request body is not valid UTF-8: {err}") from err


def _parse_json(body: bytes) -> JsonRecords:
    try:
        payload = json.loads(_decode(body))
    except json.JSONDecodeError as err:
        raise RequestError(f"request body is not valid JSON: {err}") from err

    if isinstance(payload, dict):
        if "instances" not in payload:
            raise RequestError(
                f"a JSON object body needs the key 'instances' with a list of records; "
                f"got the keys {sorted(payload)}"
            )
        payload = payload["instances"]
    if not isinstance(payload, list):
        raise RequestError(f"expected a list of records, got a JSON {type(payload).__name__}")
    if not payload:
        raise RequestError("the request contains no records")
    for index, record in enumerate(payload):
        if not isinstance(record, dict):
            raise RequestError(
                f"record {index} is a JSON {type(record).__name__}, "
                "expected an object that maps column names to values"
            )
    return JsonRecords(payload)


def _parse_csv(body: bytes) -> CsvRows:
    reader = csv.reader(io.StringIO(_decode(body), newline=""))
    try:
        rows = [(reader.line_num, fields) for fields in reader if fields]
    except csv.Error as err:
        raise RequestError(f"CSV body is invalid at line {reader.line_num}: {err}") from err
    if not rows:
        raise RequestError("the request contains no CSV rows")
    return CsvRows(rows)


def predict_fn(data: JsonRecords | CsvRows, model: ForecastModel) -> Forecasts:
    """Forecast demand for each record, clipped at 0 because demand is never negative.

    :raises RequestError: if a record lacks a feature or has a non-numeric value.
    :raises RuntimeError: if the estimator returns the wrong number of values or a non-finite one.
    """
    features, ids = build_feature_matrix(data, model)
    values = forecast_matrix(model, features)
    return Forecasts([float(value) for value in values], ids, model.model_version)


def forecast_matrix(model: ForecastModel, features: Any) -> Any:
    """Return the forecasts in units for a float64 matrix in ``feature_columns`` order.

    The training code calls this too, so evaluation and serving compute
    forecasts the same way. With ``target_scale`` in the metadata the estimator
    predicts demand relative to a feature, and the result is multiplied back.

    :raises RequestError: if a row lacks the scale feature.
    :raises RuntimeError: if the estimator returns the wrong number of values or a non-finite one.
    """
    import numpy as np

    raw = np.asarray(model.estimator.predict(features), dtype=np.float64).reshape(-1)
    if raw.shape[0] != features.shape[0]:
        raise RuntimeError(
            f"model {model.model_version} returned {raw.shape[0]} predictions for {features.shape[0]} rows"
        )
    not_finite = np.flatnonzero(~np.isfinite(raw))
    if not_finite.size:
        raise RuntimeError(
            f"model {model.model_version} returned non-finite forecasts for the rows "
            f"{not_finite[:10].tolist()}; check the model for NaN handling"
        )
    values = np.clip(raw, 0.0, None)
    if model.scale_feature is not None:
        scale = features[:, model.feature_columns.index(model.scale_feature)] + model.scale_offset
        missing = np.flatnonzero(np.isnan(scale))
        if missing.size:
            raise RequestError(
                f"rows {missing[:10].tolist()} have no value for {model.scale_feature!r}, which the "
                f"forecast of model {model.model_version} is scaled by; send a number"
            )
        values = values * np.clip(scale, 0.0, None)
    return values


def build_feature_matrix(
    data: JsonRecords | CsvRows, model: ForecastModel
) -> tuple[Any, list[dict[str, Any]]]:
    """Return a float64 array in ``feature_columns`` order and the id values of each record.

    Missing values (JSON null, empty CSV field) become NaN. Record indexes in
    messages count from 0 and CSV row numbers are line numbers counted from 1.

    :raises RequestError: naming the record or row, the column and the value at fault.
    """
    if isinstance(data, JsonRecords):
        return _json_matrix(data.records, model)
    if isinstance(data, CsvRows):
        features = _csv_matrix(data.rows, model)
        # CSV rows carry feature values only, so there are no ids to echo.
        return features, [{} for _ in range(features.shape[0])]
    raise TypeError(f"predict_fn got {type(data).__name__}, expected the JsonRecords or CsvRows of input_fn")


def _json_matrix(records: list[dict[str, Any]], model: ForecastModel) -> tuple[Any, list[dict[str, Any]]]:
    import numpy as np

    columns = model.feature_columns
    features = np.empty((len(records), len(columns)), dtype=np.float64)
    ids: list[dict[str, Any]] = []
    for index, record in enumerate(records):
        for position, column in enumerate(columns):
            if column not in record:
                raise RequestError(
                    f"record {index} is missing the feature {column!r}; "
                    f"every record needs the keys {list(columns)}"
                )
            features[index, position] = _json_number(record[column], index, column)
        ids.append({column: record[column] for column in model.id_columns if column in record})
    return features, ids


def _json_number(value: Any, index: int, column: str) -> float:
    if value is None:
        return math.nan
    # bool is a subclass of int, but true/false is no quantity.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(
            f"record {index} has the non-numeric value {value!r} for {column!r}; send a number or null"
        )
    number = float(value)
    if math.isinf(number):
        raise RequestError(
            f"record {index} has the infinite value {value!r} for {column!r}; send a finite number"
        )
    return number


def _is_header(fields: list[str], columns: tuple[str, ...]) -> bool:
    return [field.strip().lower() for field in fields] == [column.lower() for column in columns]


def _csv_matrix(rows: list[tuple[int, list[str]]], model: ForecastModel) -> Any:
    import numpy as np

    columns = model.feature_columns
    if _is_header(rows[0][1], columns):
        rows = rows[1:]
    if not rows:
        raise RequestError("the CSV body contains only a header row")

    features = np.empty((len(rows), len(columns)), dtype=np.float64)
    for index, (line_number, fields) in enumerate(rows):
        if len(fields) != len(columns):
            raise RequestError(
                f"CSV row {line_number} has {len(fields)} fields, expected {len(columns)} "
                f"in the order {list(columns)}"
            )
        for position, (column, field) in enumerate(zip(columns, fields, strict=True)):
            features[index, position] = _csv_number(field, line_number, column)
    return features


def _csv_number(field: str, line_number: int, column: str) -> float:
    text = field.strip()
    if not text:
        return math.nan
    try:
        number = float(text)
    except ValueError:
        raise RequestError(
            f"CSV row {line_number} has the non-numeric value {field!r} in column {column!r}; "
            "send a number or leave the field empty"
        ) from None
    if math.isinf(number):
        raise RequestError(
            f"CSV row {line_number} has the infinite value {field!r} in column {column!r}; "
            "send a finite number"
        )
    return number


def output_fn(prediction: Forecasts, accept: str) -> tuple[bytes, str]:
    """Serialize forecasts as JSON (the default, also for ``*/*``) or as CSV, one per line.

    :raises UnsupportedAcceptError: if ``accept`` allows neither type.
    """
    media_type = negotiate_accept(accept)
    if media_type == CSV_CONTENT_TYPE:
        lines = "".join(f"{value!r}\n" for value in prediction.values)
        return lines.encode("utf-8"), CSV_CONTENT_TYPE

    predictions = [
        {"forecast": value, **ids} for value, ids in zip(prediction.values, prediction.ids, strict=True)
    ]
    body = {"predictions": predictions, "model_version": prediction.model_version}
    return json.dumps(body).encode("utf-8"), JSON_CONTENT_TYPE


def negotiate_accept(accept: str | None) -> str:
    """Return the response content type for an Accept header, preferring higher ``q``.

    :raises UnsupportedAcceptError: if no media range matches JSON or CSV.
    """
    if not accept or not accept.strip():
        return JSON_CONTENT_TYPE

    ranges: list[tuple[float, str]] = []
    for part in accept.split(","):
        media_type, *parameters = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        ranges.append((quality, media_type.lower()))

    # sorted() is stable, so ranges of equal quality keep the client's order.
    for quality, media_type in sorted(ranges, key=lambda item: -item[0]):
        if quality <= 0:
            continue
        if media_type in ("*/*", "application/*", JSON_CONTENT_TYPE):
            return JSON_CONTENT_TYPE
        if media_type in ("text/*", CSV_CONTENT_TYPE):
            return CSV_CONTENT_TYPE
    raise UnsupportedAcceptError(
        f"Accept {accept!r} allows no supported content type; "
        f"accept {JSON_CONTENT_TYPE} or {CSV_CONTENT_TYPE}"
    )
