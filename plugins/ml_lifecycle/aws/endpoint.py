"""SageMaker endpoint helpers: which model an endpoint serves, and forecasts through InvokeEndpoint."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

# SageMaker rejects InvokeEndpoint payloads over 6 MB; 500 rows of about 30
# numbers stay far below it.
INVOKE_BATCH_ROWS = 500

# Environment variables the deployment sets on the model's container, so
# anyone can tell from the endpoint which registry version it serves.
ENV_MODEL_VERSION = "MODEL_VERSION"
ENV_MODEL_PACKAGE_ARN = "MODEL_PACKAGE_ARN"


@dataclass(frozen=True)
class LiveModel:
    endpoint_name: str
    endpoint_status: str
    endpoint_config_name: str
    model_name: str
    model_version: str | None
    model_package_arn: str | None
    failure_reason: str | None


def is_not_found(error: ClientError) -> bool:
    """Tell whether a SageMaker error reports that the named resource does not exist."""
    message = str(error.response.get("Error", {}).get("Message", ""))
    return "Could not find" in message or "not found" in message.lower()


def describe_live_model(client: Any, endpoint_name: str) -> LiveModel | None:
    """Return what an endpoint serves now, or None if the endpoint does not exist."""
    try:
        endpoint = client.describe_endpoint(EndpointName=endpoint_name)
    except ClientError as err:
        if is_not_found(err):
            return None
        raise
    config_name = endpoint["EndpointConfigName"]
    config = client.describe_endpoint_config(EndpointConfigName=config_name)
    model_name = config["ProductionVariants"][0]["ModelName"]
    model = client.describe_model(ModelName=model_name)
    environment = model.get("PrimaryContainer", {}).get("Environment", {}) or {}
    return LiveModel(
        endpoint_name=endpoint_name,
        endpoint_status=endpoint["EndpointStatus"],
        endpoint_config_name=config_name,
        model_name=model_name,
        model_version=environment.get(ENV_MODEL_VERSION),
        model_package_arn=environment.get(ENV_MODEL_PACKAGE_ARN),
        failure_reason=endpoint.get("FailureReason"),
    )


def invoke_forecasts(
    runtime_client: Any,
    endpoint_name: str,
    records: Sequence[Mapping[str, Any]],
    *,
    target_variant: str | None = None,
) -> tuple[list[dict[str, Any]], str | None, str | None]:
    """Send feature records to an endpoint in batches and return its predictions.

    :return: predictions in request order (each with ``forecast`` and the id
        columns), the model version the endpoint reported, and the variant
        that served the last batch.
    :raises ValueError: if the endpoint returns a different number of
        predictions or a forecast that is not a finite number.
    """
    predictions: list[dict[str, Any]] = []
    model_version = variant = None
    for start in range(0, len(records), INVOKE_BATCH_ROWS):
        batch = [_json_safe(record) for record in records[start : start + INVOKE_BATCH_ROWS]]
        arguments: dict[str, Any] = {
            "EndpointName": endpoint_name,
            "ContentType": "application/json",
            "Accept": "application/json",
            "Body": json.dumps({"instances": batch}).encode("utf-8"),
        }
        if target_variant:
            arguments["TargetVariant"] = target_variant
        response = runtime_client.invoke_endpoint(**arguments)
        body = json.loads(response["Body"].read().decode("utf-8"))
        batch_predictions = body.get("predictions")
        if not isinstance(batch_predictions, list) or len(batch_predictions) != len(batch):
            count = len(batch_predictions) if isinstance(batch_predictions, list) else "no"
            raise ValueError(
                f"endpoint {endpoint_name} returned {count} predictions for {len(batch)} records"
            )
        for prediction in batch_predictions:
            value = prediction.get("forecast")
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(
                    f"endpoint {endpoint_name} returned the forecast {value!r}; expected a finite number"
                )
        predictions.extend(batch_predictions)
        model_version = body.get("model_version", model_version)
        variant = response.get("InvokedProductionVariant", variant)
    return predictions, model_version, variant


def _json_safe(record: Mapping[str, Any]) -> dict[str, Any]:
    safe: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, float) and math.isnan(value):
            safe[key] = None
        elif hasattr(value, "isoformat"):
            safe[key] = value.isoformat()
        elif value is not None and not isinstance(value, str | int | float | bool):
            safe[key] = float(value)
        else:
            safe[key] = value
    return safe
