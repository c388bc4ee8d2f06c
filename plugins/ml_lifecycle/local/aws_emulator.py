"""Serve the AWS APIs on loopback with moto, and host SageMaker endpoints for real.

Run as ``python -m ml_lifecycle.local.aws_emulator --state-dir DIR
--serving-dir include/serving --ready-file F``. boto3 clients reach S3,
SageMaker, sagemaker-runtime, CloudWatch, SNS and every other service moto
emulates with ``endpoint_url`` set to the ``endpoint_url`` in the ready file.

moto 5.2.5 keeps only the records of SageMaker endpoints: CreateEndpoint is
InService at once without running anything, UpdateEndpoint fails with HTTP 500
and InvokeEndpoint returns a canned body. ``HostingMiddleware`` wraps moto's
WSGI application and handles those calls itself. It runs
``include/serving/serve.py`` once per instance of each production variant, from
the model.tar.gz that the model's ``ModelDataUrl`` names in moto's S3, and
forwards invocations to those servers. Endpoint records stay in moto's
in-process backends, so DescribeEndpoint and the boto3 waiters read the status
this module sets. Every other request goes to moto unchanged. The image that a
model's container names is never run: every variant runs serve.py with the
Python of the emulator.

moto keeps its state in memory and loses it on stop. ``--state-dir`` contains the
extracted models and the log of each model server.
"""

from __future__ import annotations

import argparse
import atexit
import http.client
import io
import itertools
import json
import logging
import os
import random
import re
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ml_lifecycle.local.process import bind_loopback_socket, install_sigterm_handler, write_ready_file

log = logging.getLogger("ml_lifecycle.aws_emulator")

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

MODEL_SERVER_START_TIMEOUT_S = 60.0
MODEL_SERVER_STOP_TIMEOUT_S = 5.0
# SageMaker real-time endpoints time out an invocation after 60 seconds.
INVOCATION_TIMEOUT_S = 60.0
PING_TIMEOUT_S = 2.0
# DescribeEndpoint limits FailureReason to 1024 characters.
MAX_FAILURE_REASON_CHARS = 1024
FAILURE_LOG_LINES = 8
IN_PROGRESS_STATUSES = frozenset({"Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting"})
SERVING_STATUSES = frozenset({"InService", "Updating"})
TARGET_PREFIX = "SageMaker."
INVOCATIONS_PATH = re.compile(r"^/endpoints/(?P<name>[^/]+)/invocations$")
CREDENTIAL_SCOPE = re.compile(
    r"Credential=(?P<key>[^/,\s]+)/\d{8}/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request"
)
HOSTING_STATUS_PATH = "/_emulator/hosting"


class ApiError(Exception):
    """An AWS error response: the error code, HTTP status and any modeled fields."""

    def __init__(self, code: str, message: str, status: int = 400, **fields: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.fields = fields


class ProvisioningError(RuntimeError):
    """Starting the model servers of an endpoint config failed. The message becomes FailureReason."""


# WSGI plumbing


@dataclass(frozen=True)
class RequestContext:
    """Account, region and parsed body of a signed request."""

    account_id: str
    region: str
    body: bytes

    def json(self) -> dict[str, Any]:
        try:
            payload = json.loads(self.body or b"{}")
        except json.JSONDecodeError as err:
            raise ApiError("SerializationException", f"request body is not valid JSON: {err}") from err
        if not isinstance(payload, dict):
            raise ApiError("SerializationException", "request body must be a JSON object")
        return payload


@dataclass
class Response:
    """A complete HTTP response, from moto or built here."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def send(self, start_response: StartResponse) -> list[bytes]:
        reason = http.client.responses.get(self.status, "Unknown")
        headers = [(name, value) for name, value in self.headers if name.lower() != "content-length"]
        headers.append(("Content-Length", str(len(self.body))))
        start_response(f"{self.status} {reason}", headers)
        return [self.body]


def read_body(environ: dict[str, Any]) -> bytes:
    """Read the request body and put it back, so moto can read it again."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return body


def call_app(app: WsgiApp, environ: dict[str, Any]) -> Response:
    """Run a WSGI application and collect its whole response."""
    captured: dict[str, Any] = {}
    chunks: list[bytes] = []

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        captured["status"] = int(status.split(" ", 1)[0])
        captured["headers"] = list(headers)
        return chunks.append

    result = app(environ, start_response)
    try:
        chunks.extend(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return Response(captured["status"], captured["headers"], b"".join(chunks))


def sagemaker_response(payload: dict[str, Any]) -> Response:
    headers = [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-RequestId", str(uuid.uuid4()))]
    return Response(200, headers, json.dumps(payload).encode("utf-8"))


def sagemaker_error(error: ApiError) -> Response:
    """Render an error in the awsJson1_1 protocol of the SageMaker API."""
    headers = [
        ("Content-Type", "application/x-amz-json-1.1"),
        ("x-amzn-RequestId", str(uuid.uuid4())),
        ("x-amzn-ErrorType", error.code),
    ]
    body = {"__type": error.code, "message": error.message, **error.fields}
    return Response(error.status, headers, json.dumps(body).encode("utf-8"))


def runtime_error(error: ApiError) -> Response:
    """Render an error in the restJson1 protocol of the SageMaker Runtime API."""
    headers = [
        ("Content-Type", "application/json"),
        ("x-amzn-RequestId", str(uuid.uuid4())),
        ("x-amzn-ErrorType", error.code),
    ]
    body = {"ErrorCode": error.code, "Message": error.message, **error.fields}
    return Response(error.status, headers, json.dumps(body).encode("utf-8"))


def request_account_and_region(environ: dict[str, Any]) -> tuple[str, str, str] | None:
    """Return ``(account id, region, signing service)`` of a SigV4-signed request, else None.

    The account id is found the way moto's own responses find it: the
    MOTO_ACCOUNT_ID variable, then the ``x-moto-account-id`` header, then
    moto's mapping of the access key (123456789012 unless the key is one that
    moto's IAM or STS handed out).
    """
    match = CREDENTIAL_SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    if match is None:
        return None
    account_id = os.environ.get("MOTO_ACCOUNT_ID") or environ.get("HTTP_X_MOTO_ACCOUNT_ID")
    if not account_id:
        from moto.iam.models import get_account_id_from

        account_id = get_account_id_from(match["key"])
    return account_id, match["region"], match["service"].lower()


# Model artifacts


def parse_s3_url(url: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into bucket and key."""
    if not url.startswith("s3://"):
        raise ProvisioningError(f"model data URL {url!r} is not an s3:// URL")
    bucket, _, key = url[len("s3://") :].partition("/")
    if not bucket or not key:
        raise ProvisioningError(
            f"model data URL {url!r} needs a bucket and a key, as in s3://bucket/model.tar.gz"
        )
    return bucket, key


def read_model_data(account_id: str, region: str, url: str) -> bytes:
    """Read a model artifact from moto's S3 backend of ``account_id``."""
    from moto.s3.exceptions import MissingBucket
    from moto.s3.models import s3_backends
    from moto.utilities.utils import get_partition

    bucket, key = parse_s3_url(url)
    try:
        s3_object = s3_backends[account_id][get_partition(region)].get_object(bucket, key)
    except MissingBucket:
        raise ProvisioningError(f"model data {url} not found: bucket {bucket!r} does not exist") from None
    if s3_object is None:
        raise ProvisioningError(
            f"model data {url} not found: no object with key {key!r} in bucket {bucket!r}"
        )
    return bytes(s3_object.value)


def extract_model_archive(data: bytes, target: Path, url: str) -> None:
    """Extract a model.tar.gz into ``target``, rejecting members that could land outside it.

    :raises ProvisioningError: for an invalid archive, an absolute path, a ``..``
        component, or a member that is neither a regular file nor a directory.
    """
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
            members = archive.getmembers()
            for member in members:
                path = PurePosixPath(member.name)
                if path.is_absolute() or ".." in path.parts:
                    raise ProvisioningError(f"model data {url} contains the unsafe path {member.name!r}")
                if not (member.isfile() or member.isdir()):
                    raise ProvisioningError(
                        f"model data {url} contains {member.name!r}, which is neither a file nor a directory"
                    )
            target.mkdir(parents=True, exist_ok=True)
            # The "data" filter repeats the checks above inside tarfile itself.
            archive.extractall(target, members=members, filter="data")
    except tarfile.TarError as err:
        raise ProvisioningError(f"model data {url} cannot be extracted as a tar archive: {err}") from err


# Model servers and deployments


@dataclass(frozen=True)
class VariantSpec:
    """Model artifact, container settings, instance count and weight of one production variant."""

    name: str
    model_name: str
    model_data_url: str
    image: str | None
    environment: dict[str, str]
    instance_count: int
    weight: float


@dataclass
class ModelServer:
    """One serve.py process, the local stand-in for one instance of a variant."""

    variant: str
    index: int
    process: subprocess.Popen[bytes]
    ready_file: Path
    log_path: Path
    port: int | None = None

    def log_tail(self, lines: int = FAILURE_LOG_LINES) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no log written)"
        return "\n".join(text.splitlines()[-lines:])


def stop_servers(servers: Iterable[ModelServer]) -> None:
    """Send SIGTERM to every server at once, then SIGKILL those still running after the timeout."""
    running = [server for server in servers if server.process.poll() is None]
    for server in running:
        server.process.terminate()
    deadline = time.monotonic() + MODEL_SERVER_STOP_TIMEOUT_S
    for server in running:
        try:
            server.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            log.warning(
                "Model server %d of variant %s did not stop within %.0f s after SIGTERM; killing it",
                server.process.pid,
                server.variant,
                MODEL_SERVER_STOP_TIMEOUT_S,
            )
            server.process.kill()
            server.process.wait()


@dataclass
class VariantDeployment:
    """The running servers of one variant, picked round-robin per invocation."""

    spec: VariantSpec
    model_dir: Path
    servers: list[ModelServer]
    _turn: itertools.count[int] = field(default_factory=itertools.count)

    def next_server(self) -> ModelServer:
        return self.servers[next(self._turn) % len(self.servers)]


@dataclass
class Deployment:
    """The variants of one endpoint config, started together."""

    config_name: str
    directory: Path
    variants: dict[str, VariantDeployment]

    def servers(self) -> list[ModelServer]:
        return [server for variant in self.variants.values() for server in variant.servers]


@dataclass
class HostedEndpoint:
    """Hosting state of one endpoint, next to the API record in moto's FakeEndpoint."""

    account_id: str
    region: str
    name: str
    record: Any
    deployment: Deployment | None = None


def describe_variant(spec: VariantSpec, instance_count: int) -> dict[str, Any]:
    """Return a ProductionVariantSummary as DescribeEndpoint shows it."""
    from moto.core.utils import utcnow

    summary: dict[str, Any] = {
        "VariantName": spec.name,
        "CurrentWeight": spec.weight,
        "DesiredWeight": spec.weight,
        "CurrentInstanceCount": instance_count,
        "DesiredInstanceCount": spec.instance_count,
    }
    if spec.image:
        summary["DeployedImages"] = [
            {"SpecifiedImage": spec.image, "ResolvedImage": spec.image, "ResolutionTime": utcnow()}
        ]
    return summary


def variant_weight(variant: dict[str, Any]) -> float:
    # SageMaker defaults InitialVariantWeight to 1.0. Weight 0 is valid and sends no traffic.
    weight = variant.get("InitialVariantWeight")
    return 1.0 if weight is None else float(weight)


def variant_instance_count(variant: dict[str, Any]) -> int:
    # Serverless variants have no InitialInstanceCount, so one server runs in their place.
    count = variant.get("InitialInstanceCount")
    return 1 if count is None else int(count)


class HostingManager:
    """Start, route to and stop the model servers of every endpoint.

    ``_lock`` guards the endpoint records in moto's backend and ``_endpoints``.
    Provisioning runs outside the lock in a background thread per call.
    """

    def __init__(self, state_dir: Path, serving_dir: Path, rng: random.Random) -> None:
        self.state_dir = state_dir
        self.serve_script = serving_dir / "serve.py"
        self.rng = rng
        self._lock = threading.Lock()
        self._endpoints: dict[tuple[str, str, str], HostedEndpoint] = {}
        self._processes: dict[int, ModelServer] = {}
        self._deployment_ids = itertools.count(1)
        self._closing = False

    # Helpers for moto's backends

    @staticmethod
    def backend(account_id: str, region: str) -> Any:
        from moto.sagemaker.models import sagemaker_backends

        return sagemaker_backends[account_id][region]

    @staticmethod
    def endpoint_arn(account_id: str, region: str, name: str) -> str:
        from moto.sagemaker.utils import arn_formatter

        return arn_formatter("endpoint", name, account_id, region)

    @staticmethod
    def config_arn(account_id: str, region: str, name: str) -> str:
        from moto.sagemaker.utils import arn_formatter

        return arn_formatter("endpoint-config", name, account_id, region)

    @staticmethod
    def _set_status(record: Any, status: str, failure_reason: str | None) -> None:
        from moto.core.utils import utcnow

        record.endpoint_status = status
        record.failure_reason = failure_reason[:MAX_FAILURE_REASON_CHARS] if failure_reason else None
        record.last_modified_time = utcnow()

    # CreateEndpoint

    def check_create(self, account_id: str, region: str, name: str) -> None:
        with self._lock:
            if name in self.backend(account_id, region).endpoints:
                arn = self.endpoint_arn(account_id, region, name)
                raise ApiError("ValidationException", f'Cannot create already existing endpoint "{arn}".')

    def start_create(self, account_id: str, region: str, name: str) -> None:
        """Mark an endpoint moto has just created as Creating and provision it in the background."""
        with self._lock:
            record = self.backend(account_id, region).endpoints[name]
            config = self.backend(account_id, region).endpoint_configs[record.endpoint_config_name]
            record.production_variants = [
                {
                    "VariantName": variant["VariantName"],
                    "CurrentWeight": variant_weight(variant),
                    "DesiredWeight": variant_weight(variant),
                    "CurrentInstanceCount": 0,
                    "DesiredInstanceCount": variant_instance_count(variant),
                }
                for variant in config.production_variants
            ]
            self._set_status(record, "Creating", None)
            hosted = HostedEndpoint(account_id, region, name, record)
            self._endpoints[(account_id, region, name)] = hosted
        log.info("Creating endpoint %s with config %s", name, record.endpoint_config_name)
        self._run_in_background(f"create-{name}", self._create, hosted, record.endpoint_config_name)

    def _create(self, hosted: HostedEndpoint, config_name: str) -> None:
        try:
            deployment = self._provision(hosted, config_name, retained={})
        except ProvisioningError as err:
            self._fail_create(hosted, err)
            return

        with self._lock:
            if self._closing or not self._is_current(hosted):
                stale = True
            else:
                stale = False
                hosted.deployment = deployment
                hosted.record.production_variants = self._describe(deployment)
                self._set_status(hosted.record, "InService", None)
        if stale:
            self._stop_deployment(deployment)
            return
        log.info("Endpoint %s is InService with config %s", hosted.name, config_name)

    def _fail_create(self, hosted: HostedEndpoint, error: ProvisioningError) -> None:
        log.error("Endpoint %s failed: %s", hosted.name, error)
        with self._lock:
            self._set_status(hosted.record, "Failed", str(error))

    # UpdateEndpoint

    def start_update(self, account_id: str, region: str, request: dict[str, Any]) -> str:
        """Validate an UpdateEndpoint request, mark the endpoint Updating and provision in the background.

        :return: the endpoint ARN.
        """
        name = request.get("EndpointName", "")
        config_name = request.get("EndpointConfigName", "")
        backend = self.backend(account_id, region)
        with self._lock:
            record = backend.endpoints.get(name)
            arn = self.endpoint_arn(account_id, region, name)
            if record is None:
                raise ApiError("ValidationException", f'Could not find endpoint "{arn}".')
            if config_name not in backend.endpoint_configs:
                config_arn = self.config_arn(account_id, region, config_name)
                raise ApiError(
                    "ValidationException", f'Could not find endpoint configuration "{config_arn}".'
                )
            self._check_not_in_progress(record, arn)
            if record.endpoint_status != "InService":
                # NOTE: this message is the emulator's own wording, because SageMaker's
                # message for updating a Failed endpoint could not be checked here.
                raise ApiError(
                    "ValidationException",
                    f'Cannot update endpoint "{arn}" because its status is {record.endpoint_status}; '
                    "delete it and create it again.",
                )

            retained = self._retained_properties(record, request)
            hosted = self._endpoints.get((account_id, region, name))
            if hosted is None:
                # An endpoint that moto created without this middleware, e.g. from CloudFormation.
                hosted = HostedEndpoint(account_id, region, name, record)
                self._endpoints[(account_id, region, name)] = hosted
            self._set_status(record, "Updating", None)

        # NOTE: blue/green traffic shifting in steps, rolling updates and
        # rollback alarms of DeploymentConfig are not emulated.
        if request.get("DeploymentConfig"):
            log.warning(
                "UpdateEndpoint of %s: DeploymentConfig is ignored; the emulator always switches "
                "all traffic at once after the new variants pass /ping",
                name,
            )
        log.info("Updating endpoint %s from config %s to %s", name, record.endpoint_config_name, config_name)
        self._run_in_background(f"update-{name}", self._update, hosted, config_name, retained)
        return str(record.arn)

    @staticmethod
    def _retained_properties(record: Any, request: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Return the weight and instance count per variant that RetainAllVariantProperties keeps."""
        if not request.get("RetainAllVariantProperties"):
            return {}
        excluded = {
            item.get("VariantPropertyType") for item in request.get("ExcludeRetainedVariantProperties") or []
        }
        retained: dict[str, dict[str, Any]] = {}
        for variant in record.production_variants:
            properties: dict[str, Any] = {}
            if "DesiredWeight" not in excluded and variant.get("CurrentWeight") is not None:
                properties["weight"] = float(variant["CurrentWeight"])
            if "DesiredInstanceCount" not in excluded and variant.get("CurrentInstanceCount"):
                properties["instance_count"] = int(variant["CurrentInstanceCount"])
            retained[variant["VariantName"]] = properties
        return retained

    def _update(self, hosted: HostedEndpoint, config_name: str, retained: dict[str, dict[str, Any]]) -> None:
        try:
            deployment = self._provision(hosted, config_name, retained)
        except ProvisioningError as err:
            self._roll_back_update(hosted, config_name, err)
            return

        # Traffic moves to the new variants first. The endpoint turns InService
        # only after the old servers have stopped, so a caller that waited for
        # InService never reaches the old model.
        with self._lock:
            stale = self._closing or not self._is_current(hosted)
            previous = None
            if not stale:
                previous = hosted.deployment
                hosted.deployment = deployment
                config = self.backend(hosted.account_id, hosted.region).endpoint_configs.get(config_name)
                hosted.record.endpoint_config_name = config_name
                if config is not None:
                    hosted.record.data_capture_config = config.data_capture_config
                hosted.record.production_variants = self._describe(deployment)
        if stale:
            self._stop_deployment(deployment)
            return

        if previous is not None:
            log.info(
                "Stopping the %d model servers of config %s", len(previous.servers()), previous.config_name
            )
            self._stop_deployment(previous)
        with self._lock:
            if self._is_current(hosted):
                self._set_status(hosted.record, "InService", None)
        log.info("Endpoint %s is InService with config %s", hosted.name, config_name)

    def _roll_back_update(self, hosted: HostedEndpoint, config_name: str, error: ProvisioningError) -> None:
        # SageMaker rolls back: the old config keeps serving and the endpoint
        # returns to InService with the reason of the failed update.
        log.error(
            "Update of endpoint %s to config %s failed; the previous config keeps serving: %s",
            hosted.name,
            config_name,
            error,
        )
        with self._lock:
            self._set_status(hosted.record, "InService", str(error))

    # DeleteEndpoint

    def check_delete(self, account_id: str, region: str, name: str) -> None:
        with self._lock:
            record = self.backend(account_id, region).endpoints.get(name)
            if record is not None:
                self._check_not_in_progress(record, self.endpoint_arn(account_id, region, name))

    def finish_delete(self, account_id: str, region: str, name: str) -> None:
        """Stop the servers of an endpoint that moto has just deleted."""
        with self._lock:
            hosted = self._endpoints.pop((account_id, region, name), None)
        if hosted is not None and hosted.deployment is not None:
            self._stop_deployment(hosted.deployment)
        log.info("Deleted endpoint %s", name)

    # UpdateEndpointWeightsAndCapacities

    def check_weights_update(self, account_id: str, region: str, name: str) -> list[dict[str, Any]]:
        """Reject the call unless the endpoint is InService, and return its variants before the change."""
        with self._lock:
            record = self.backend(account_id, region).endpoints.get(name)
            if record is None:
                return []
            self._check_not_in_progress(record, self.endpoint_arn(account_id, region, name))
            return [dict(variant) for variant in record.production_variants]

    def finish_weights_update(
        self, account_id: str, region: str, name: str, before: list[dict[str, Any]]
    ) -> None:
        """Keep the values moto cleared and start or stop servers for changed instance counts.

        moto 5.2.5 sets DesiredWeight and DesiredInstanceCount to None when the
        request leaves them out, but SageMaker keeps the current value.
        """
        previous = {variant["VariantName"]: variant for variant in before}
        scaling: dict[str, int] = {}
        with self._lock:
            record = self.backend(account_id, region).endpoints.get(name)
            hosted = self._endpoints.get((account_id, region, name))
            if record is None:
                return
            for variant in record.production_variants:
                old = previous.get(variant["VariantName"], {})
                for weight_key in ("DesiredWeight", "CurrentWeight"):
                    if variant.get(weight_key) is None:
                        variant[weight_key] = old.get(weight_key, 1.0)
                desired = variant.get("DesiredInstanceCount")
                if desired is None:
                    variant["DesiredInstanceCount"] = old.get("DesiredInstanceCount")
                    variant["CurrentInstanceCount"] = old.get("CurrentInstanceCount")
                elif hosted is not None and hosted.deployment is not None:
                    running = len(hosted.deployment.variants[variant["VariantName"]].servers)
                    if desired != running:
                        scaling[variant["VariantName"]] = int(desired)
                        variant["CurrentInstanceCount"] = running
            if scaling and hosted is not None:
                self._set_status(record, "Updating", None)
        if scaling and hosted is not None:
            log.info("Scaling endpoint %s: %s", name, scaling)
            self._run_in_background(f"scale-{name}", self._scale, hosted, scaling)

    def _scale(self, hosted: HostedEndpoint, scaling: dict[str, int]) -> None:
        deployment = hosted.deployment
        if deployment is None:
            return
        failures = []
        for variant_name, desired in scaling.items():
            try:
                self._scale_variant(deployment, deployment.variants[variant_name], desired)
            except ProvisioningError as err:
                failures.append(str(err))
        if failures:
            log.error("Scaling endpoint %s failed: %s", hosted.name, "; ".join(failures))
        failure = "; ".join(failures) or None
        with self._lock:
            for summary in hosted.record.production_variants:
                if summary["VariantName"] in deployment.variants:
                    summary["CurrentInstanceCount"] = len(deployment.variants[summary["VariantName"]].servers)
            self._set_status(hosted.record, "InService", failure)

    def _scale_variant(self, deployment: Deployment, variant: VariantDeployment, desired: int) -> None:
        running = len(variant.servers)
        if desired < running:
            with self._lock:
                surplus = variant.servers[desired:]
                variant.servers = variant.servers[:desired]
            self._stop_servers(surplus)
            return
        started: list[ModelServer] = []
        try:
            for index in range(running, desired):
                started.append(
                    self._start_server(variant.spec, variant.model_dir, deployment.directory, index)
                )
            self._wait_until_healthy(started)
        except ProvisioningError:
            self._stop_servers(started)
            raise
        with self._lock:
            variant.servers = [*variant.servers, *started]

    # InvokeEndpoint

    def route(
        self, account_id: str, region: str, name: str, target_variant: str | None
    ) -> tuple[str, ModelServer]:
        """Pick the variant and server for an invocation.

        :raises ApiError: ValidationError if the endpoint or the target variant does not exist.
        """
        with self._lock:
            record = self.backend(account_id, region).endpoints.get(name)
            hosted = self._endpoints.get((account_id, region, name))
            if record is None:
                raise ApiError("ValidationError", f"Endpoint {name} of account {account_id} not found.")
            deployment = hosted.deployment if hosted is not None else None
            if record.endpoint_status not in SERVING_STATUSES or deployment is None:
                raise ApiError(
                    "ValidationError",
                    f"Endpoint {name} of account {account_id} cannot serve requests because its status is "
                    f"{record.endpoint_status}. Wait until it is InService.",
                )

            if target_variant:
                if target_variant not in deployment.variants:
                    raise ApiError(
                        "ValidationError",
                        f"Target variant {target_variant} not found for endpoint {name}; "
                        f"the endpoint has the variants {sorted(deployment.variants)}.",
                    )
                variant_name = target_variant
            else:
                variant_name = self._choose_by_weight(record, deployment, name)
            variant = deployment.variants[variant_name]
            if not variant.servers:
                raise ApiError(
                    "ValidationError",
                    f"Variant {variant_name} of endpoint {name} has 0 instances; "
                    "raise its DesiredInstanceCount.",
                )
            return variant_name, variant.next_server()

    def _choose_by_weight(self, record: Any, deployment: Deployment, name: str) -> str:
        names: list[str] = []
        weights: list[float] = []
        for summary in record.production_variants:
            if summary["VariantName"] in deployment.variants:
                names.append(summary["VariantName"])
                weights.append(float(summary.get("CurrentWeight") or 0.0))
        if not names or sum(weights) <= 0:
            raise ApiError(
                "ValidationError",
                f"Endpoint {name} has no variant with a weight above 0; set one with "
                "UpdateEndpointWeightsAndCapacities or name a TargetVariant.",
            )
        return self.rng.choices(names, weights=weights)[0]

    # Provisioning

    def _resolve_variants(
        self, hosted: HostedEndpoint, config_name: str, retained: dict[str, dict[str, Any]]
    ) -> list[VariantSpec]:
        with self._lock:
            backend = self.backend(hosted.account_id, hosted.region)
            config = backend.endpoint_configs.get(config_name)
            if config is None:
                raise ProvisioningError(f"endpoint config {config_name} not found")
            variants = [dict(variant) for variant in config.production_variants]
            models = {name: backend._models.get(name) for name in {v["ModelName"] for v in variants}}

        specs = []
        for variant in variants:
            model = models[variant["ModelName"]]
            if model is None:
                raise ProvisioningError(
                    f"model {variant['ModelName']} of variant {variant['VariantName']} not found"
                )
            container = model.primary_container
            if not container and len(model.containers) == 1:
                container = model.containers[0]
            if not container:
                raise ProvisioningError(
                    f"model {model.model_name} has {len(model.containers)} containers; "
                    "the emulator runs models with one container only"
                )
            url = container.get("ModelDataUrl")
            if not url:
                raise ProvisioningError(
                    f"model {model.model_name} has no PrimaryContainer.ModelDataUrl; "
                    "the emulator needs an s3:// URL of a model.tar.gz"
                )
            properties = retained.get(variant["VariantName"], {})
            specs.append(
                VariantSpec(
                    name=variant["VariantName"],
                    model_name=model.model_name,
                    model_data_url=url,
                    image=container.get("Image"),
                    environment={str(k): str(v) for k, v in (container.get("Environment") or {}).items()},
                    instance_count=properties.get("instance_count", variant_instance_count(variant)),
                    weight=properties.get("weight", variant_weight(variant)),
                )
            )
        return specs

    def _provision(
        self, hosted: HostedEndpoint, config_name: str, retained: dict[str, dict[str, Any]]
    ) -> Deployment:
        """Start and health-check every instance of every variant of ``config_name``.

        :raises ProvisioningError: after stopping the servers it started.
        """
        specs = self._resolve_variants(hosted, config_name, retained)
        directory = (
            self.state_dir
            / "endpoints"
            / hosted.account_id
            / hosted.region
            / hosted.name
            / f"{next(self._deployment_ids):03d}-{config_name}"
        )
        deployment = Deployment(config_name, directory, {})
        try:
            for spec in specs:
                model_dir = directory / spec.name / "model"
                archive = read_model_data(hosted.account_id, hosted.region, spec.model_data_url)
                extract_model_archive(archive, model_dir, spec.model_data_url)
                variant = VariantDeployment(spec, model_dir, [])
                deployment.variants[spec.name] = variant
                # Start every instance before waiting, so they load their models in parallel.
                for index in range(spec.instance_count):
                    variant.servers.append(self._start_server(spec, model_dir, directory, index))
            self._wait_until_healthy(deployment.servers())
        except BaseException:
            self._stop_deployment(deployment)
            raise
        return deployment

    def _start_server(self, spec: VariantSpec, model_dir: Path, directory: Path, index: int) -> ModelServer:
        run_dir = directory / "run"
        run_dir.mkdir(parents=True, exist_ok=True)
        ready_file = run_dir / f"{spec.name}-{index}.json"
        log_path = run_dir / f"{spec.name}-{index}.log"
        # A server that scaling stopped earlier may have left a ready file with its old port.
        ready_file.unlink(missing_ok=True)
        command = [
            sys.executable,
            str(self.serve_script),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--model-dir",
            str(model_dir),
            "--ready-file",
            str(ready_file),
        ]
        # SageMaker passes the container's Environment to the process, as here.
        env = {**os.environ, **spec.environment, "SM_MODEL_DIR": str(model_dir)}

        # The servers stay in the emulator's process group, so stopping the
        # group also stops them. close() still stops each one explicitly.
        with log_path.open("ab") as log_stream:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log_stream, stderr=subprocess.STDOUT, env=env
            )
        server = ModelServer(spec.name, index, process, ready_file, log_path)

        # Registering under the lock means close() either stops this server or
        # has already set _closing, so no server outlives the emulator.
        with self._lock:
            closing = self._closing
            if not closing:
                self._processes[process.pid] = server
        if closing:
            stop_servers([server])
            raise ProvisioningError("the emulator is stopping")
        log.info("Started model server %d for variant %s (model %s)", process.pid, spec.name, spec.model_name)
        return server

    def _wait_until_healthy(self, servers: list[ModelServer]) -> None:
        deadline = time.monotonic() + MODEL_SERVER_START_TIMEOUT_S
        for server in servers:
            self._wait_for_server(server, deadline)

    def _wait_for_server(self, server: ModelServer, deadline: float) -> None:
        label = f"the container of variant {server.variant} (instance {server.index})"
        while time.monotonic() < deadline:
            if self._closing:
                raise ProvisioningError("the emulator is stopping")
            returncode = server.process.poll()
            if returncode is not None:
                raise ProvisioningError(
                    f"{label} exited with code {returncode} during startup; "
                    f"last log lines:\n{server.log_tail()}"
                )
            if server.port is None and server.ready_file.exists():
                server.port = int(json.loads(server.ready_file.read_text(encoding="utf-8"))["port"])
            if server.port is not None:
                status, ping = ping_server(server.port)
                if status == 200:
                    return
                if ping.get("status") == "failed":
                    raise ProvisioningError(
                        f"{label} failed its /ping health check: {ping.get('error')}; "
                        f"last log lines:\n{server.log_tail()}"
                    )
            time.sleep(0.1)
        raise ProvisioningError(
            f"{label} did not pass /ping within {MODEL_SERVER_START_TIMEOUT_S:.0f} s; "
            f"last log lines:\n{server.log_tail()}"
        )

    def _describe(self, deployment: Deployment) -> list[dict[str, Any]]:
        return [
            describe_variant(variant.spec, len(variant.servers)) for variant in deployment.variants.values()
        ]

    # Stopping

    def _stop_servers(self, servers: list[ModelServer]) -> None:
        stop_servers(servers)
        with self._lock:
            for server in servers:
                self._processes.pop(server.process.pid, None)
        for server in servers:
            log.info("Stopped model server %d of variant %s", server.process.pid, server.variant)

    def _stop_deployment(self, deployment: Deployment) -> None:
        self._stop_servers(deployment.servers())

    def close(self) -> None:
        """Stop every model server this emulator started, also those still starting."""
        with self._lock:
            self._closing = True
            servers = list(self._processes.values())
            self._processes.clear()
        stop_servers(servers)
        if servers:
            log.info("Stopped the model servers %s on exit", [server.process.pid for server in servers])

    def hosting_status(self) -> dict[str, Any]:
        """Return the servers of every endpoint, for tests and for debugging by hand."""
        with self._lock:
            endpoints = []
            for hosted in self._endpoints.values():
                deployment = hosted.deployment
                endpoints.append(
                    {
                        "account_id": hosted.account_id,
                        "region": hosted.region,
                        "endpoint_name": hosted.name,
                        "endpoint_status": hosted.record.endpoint_status,
                        "endpoint_config_name": deployment.config_name if deployment else None,
                        "variants": {
                            name: [
                                {"pid": server.process.pid, "port": server.port, "log": str(server.log_path)}
                                for server in variant.servers
                            ]
                            for name, variant in (deployment.variants.items() if deployment else [])
                        },
                    }
                )
            return {"endpoints": endpoints}

    # Shared checks

    def _is_current(self, hosted: HostedEndpoint) -> bool:
        backend = self.backend(hosted.account_id, hosted.region)
        return backend.endpoints.get(hosted.name) is hosted.record

    @staticmethod
    def _check_not_in_progress(record: Any, arn: str) -> None:
        if record.endpoint_status in IN_PROGRESS_STATUSES:
            raise ApiError("ValidationException", f'Cannot update in-progress endpoint "{arn}".')

    def _run_in_background(self, name: str, target: Callable[..., None], *args: Any) -> None:
        def run() -> None:
            try:
                target(*args)
            except Exception:
                log.exception("Background task %s failed", name)

        threading.Thread(target=run, name=name, daemon=True).start()


def ping_server(port: int) -> tuple[int, dict[str, Any]]:
    """Return the status and JSON body of a model server's /ping, or ``(0, {})`` if unreachable."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=PING_TIMEOUT_S)
    try:
        connection.request("GET", "/ping")
        response = connection.getresponse()
        raw = response.read()
    except OSError:
        return 0, {}
    finally:
        connection.close()
    try:
        body = json.loads(raw)
    except json.JSONDecodeError:
        body = {}
    return response.status, body if isinstance(body, dict) else {}


# The middleware


class HostingMiddleware:
    """WSGI middleware that handles SageMaker hosting calls and passes the rest to moto."""

    def __init__(self, app: WsgiApp, hosting: HostingManager) -> None:
        self.app = app
        self.hosting = hosting
        # One control-plane call at a time, so two CreateEndpoint calls for one
        # name cannot both pass the existence check before moto stores either.
        self._control_lock = threading.Lock()
        self._handlers: dict[str, Callable[[dict[str, Any], RequestContext], Response]] = {
            "CreateEndpoint": self._create_endpoint,
            "UpdateEndpoint": self._update_endpoint,
            "DeleteEndpoint": self._delete_endpoint,
            "UpdateEndpointWeightsAndCapacities": self._update_weights,
            "UpdateModelPackage": self._update_model_package,
        }

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == HOSTING_STATUS_PATH and environ.get("REQUEST_METHOD") == "GET":
            body = json.dumps(self.hosting.hosting_status()).encode("utf-8")
            return Response(200, [("Content-Type", "application/json")], body).send(start_response)

        signed = request_account_and_region(environ)
        if signed is None or signed[2] != "sagemaker":
            return self.app(environ, start_response)
        account_id, region, _ = signed

        target = environ.get("HTTP_X_AMZ_TARGET", "")
        handler = (
            self._handlers.get(target.removeprefix(TARGET_PREFIX))
            if target.startswith(TARGET_PREFIX)
            else None
        )
        if handler is not None:
            context = RequestContext(account_id, region, read_body(environ))
            try:
                with self._control_lock:
                    response = handler(environ, context)
            except ApiError as err:
                response = sagemaker_error(err)
            return response.send(start_response)

        match = INVOCATIONS_PATH.match(path)
        if match is not None and environ.get("REQUEST_METHOD") == "POST":
            context = RequestContext(account_id, region, read_body(environ))
            try:
                response = self._invoke_endpoint(environ, context, match["name"])
            except ApiError as err:
                response = runtime_error(err)
            return response.send(start_response)

        return self.app(environ, start_response)

    def _create_endpoint(self, environ: dict[str, Any], context: RequestContext) -> Response:
        name = context.json().get("EndpointName", "")
        self.hosting.check_create(context.account_id, context.region, name)
        response = call_app(self.app, environ)
        if response.status == 200:
            self.hosting.start_create(context.account_id, context.region, name)
        return response

    def _update_endpoint(self, environ: dict[str, Any], context: RequestContext) -> Response:
        arn = self.hosting.start_update(context.account_id, context.region, context.json())
        return sagemaker_response({"EndpointArn": arn})

    def _delete_endpoint(self, environ: dict[str, Any], context: RequestContext) -> Response:
        name = context.json().get("EndpointName", "")
        self.hosting.check_delete(context.account_id, context.region, name)
        response = call_app(self.app, environ)
        if response.status == 200:
            self.hosting.finish_delete(context.account_id, context.region, name)
        return response

    def _update_weights(self, environ: dict[str, Any], context: RequestContext) -> Response:
        name = context.json().get("EndpointName", "")
        before = self.hosting.check_weights_update(context.account_id, context.region, name)
        response = call_app(self.app, environ)
        if response.status == 200:
            self.hosting.finish_weights_update(context.account_id, context.region, name, before)
        return response

    def _update_model_package(self, environ: dict[str, Any], context: RequestContext) -> Response:
        """Pass UpdateModelPackage to moto, keeping the metadata properties the request leaves out.

        SageMaker adds the request's CustomerMetadataProperties to the existing
        ones and removes only those named in CustomerMetadataPropertiesToRemove.
        It keeps the approval status unless the request sets one. moto 5.2.5
        replaces both with what the request contains, so an approval would
        erase the metadata.
        """
        request = context.json()
        backend = self.hosting.backend(context.account_id, context.region)
        arn = request.get("ModelPackageArn", "")
        name = backend.model_package_name_mapping.get(arn, arn)
        package = backend.model_packages.get(name)
        kept = dict(getattr(package, "customer_metadata_properties", None) or {}) if package else {}
        kept_status = getattr(package, "model_approval_status", None)
        response = call_app(self.app, environ)
        if response.status == 200 and package is not None:
            merged = {**kept, **(request.get("CustomerMetadataProperties") or {})}
            for key in request.get("CustomerMetadataPropertiesToRemove") or []:
                merged.pop(key, None)
            package.customer_metadata_properties = merged
            # moto also clears the approval status when the request leaves it out.
            if "ModelApprovalStatus" not in request:
                package.model_approval_status = kept_status
        return response

    def _invoke_endpoint(self, environ: dict[str, Any], context: RequestContext, name: str) -> Response:
        target_variant = environ.get("HTTP_X_AMZN_SAGEMAKER_TARGET_VARIANT")
        variant, server = self.hosting.route(context.account_id, context.region, name, target_variant)
        if server.port is None:
            raise ApiError(
                "ServiceUnavailable", f"variant {variant} of endpoint {name} has no listening server", 503
            )

        headers = {}
        for environ_key, header in (
            ("CONTENT_TYPE", "Content-Type"),
            ("HTTP_ACCEPT", "Accept"),
            ("HTTP_X_AMZN_SAGEMAKER_CUSTOM_ATTRIBUTES", "X-Amzn-SageMaker-Custom-Attributes"),
        ):
            if environ.get(environ_key):
                headers[header] = environ[environ_key]

        # NOTE: SageMaker Runtime rejects bodies over 6 MB itself. Here serve.py
        # rejects them with 413, which reaches the caller as a ModelError.
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=INVOCATION_TIMEOUT_S)
        try:
            connection.request("POST", "/invocations", body=context.body, headers=headers)
            reply = connection.getresponse()
            body = reply.read()
        except OSError as err:
            log.warning("Model server %d of endpoint %s is unreachable: %s", server.process.pid, name, err)
            raise ApiError(
                "ServiceUnavailable",
                f"instance {server.index} of variant {variant} of endpoint {name} is unreachable: {err}",
                503,
            ) from err
        finally:
            connection.close()

        if reply.status >= 400:
            raise self._model_error(context, name, variant, server, status=reply.status, body=body)

        response_headers = [
            ("Content-Type", reply.getheader("Content-Type", "application/octet-stream")),
            ("x-Amzn-Invoked-Production-Variant", variant),
            ("x-amzn-RequestId", str(uuid.uuid4())),
        ]
        custom_attributes = reply.getheader("X-Amzn-SageMaker-Custom-Attributes")
        if custom_attributes:
            response_headers.append(("X-Amzn-SageMaker-Custom-Attributes", custom_attributes))
        return Response(200, response_headers, body)

    @staticmethod
    def _model_error(
        context: RequestContext, name: str, variant: str, server: ModelServer, *, status: int, body: bytes
    ) -> ApiError:
        """Build the ModelError (HTTP 424) that SageMaker returns for a 4xx or 5xx from the container."""
        original = body.decode("utf-8", errors="replace")
        kind = "client" if status < 500 else "server"
        log_group = f"/aws/sagemaker/Endpoints/{name}"
        message = (
            f'Received {kind} error ({status}) from {variant} with message "{original}". '
            f"See the container log {server.log_path} for more information."
        )
        return ApiError(
            "ModelError",
            message,
            424,
            OriginalStatusCode=status,
            OriginalMessage=original,
            LogStreamArn=f"arn:aws:logs:{context.region}:{context.account_id}:log-group:{log_group}",
        )


# The process


def serve(
    state_dir: Path,
    serving_dir: Path,
    ready_file: Path,
    *,
    port: int = 0,
    seed: int | None = None,
    host: str = "127.0.0.1",
) -> None:
    """Run the emulator until SIGTERM, then stop every model server it started."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    serve_script = serving_dir / "serve.py"
    if not serve_script.is_file():
        raise FileNotFoundError(
            f"{serve_script} not found; pass the include/serving directory as --serving-dir"
        )
    state_dir.mkdir(parents=True, exist_ok=True)

    hosting = HostingManager(state_dir.resolve(), serving_dir.resolve(), random.Random(seed))  # noqa: S311 - routing, not security
    atexit.register(hosting.close)
    app = HostingMiddleware(DomainDispatcherApplication(create_backend_app), hosting)

    sock = bind_loopback_socket(port, host)
    sock.listen(128)
    actual_port = int(sock.getsockname()[1])
    server = make_server(
        host, actual_port, app, threaded=True, request_handler=MotoRequestHandler, fd=sock.fileno()
    )
    try:
        endpoint_url = f"http://127.0.0.1:{actual_port}"
        write_ready_file(
            ready_file, {"port": actual_port, "endpoint_url": endpoint_url, "state_dir": str(state_dir)}
        )
        log.info("AWS emulator listening on %s, state in %s", endpoint_url, state_dir)
        server.serve_forever()
    finally:
        server.server_close()
        sock.close()
        hosting.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--state-dir", type=Path, required=True, help="directory for extracted models and server logs"
    )
    parser.add_argument(
        "--serving-dir",
        type=Path,
        required=True,
        help="directory with serve.py and inference.py (include/serving)",
    )
    parser.add_argument(
        "--ready-file", type=Path, required=True, help="JSON file written once the server listens"
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 only inside a container"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the weighted choice of variants")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    install_sigterm_handler()
    try:
        serve(
            args.state_dir, args.serving_dir, args.ready_file, port=args.port, seed=args.seed, host=args.host
        )
    except KeyboardInterrupt:
        log.info("AWS emulator stopped")


if __name__ == "__main__":
    main()
