"""The AWS emulator as a subprocess, driven with real boto3 clients over loopback.

Each test creates its own endpoints from model.tar.gz artifacts built here: a
fitted LinearRegression, metadata.json and include/serving/inference.py as
code/inference.py, uploaded to the emulator's S3.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ml_lifecycle.local.process import ServiceProcess, python_module_command, start_service

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVING_DIR = REPO_ROOT / "include" / "serving"
REGION = "eu-west-2"
ACCOUNT_ID = "123456789012"
BUCKET = "ml-lifecycle-artifacts"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT_ID}:role/demand-forecast-sagemaker"
FEATURE_COLUMNS = ["LAG_1", "LAG_2", "ROLLING_MEAN_4"]
ROWS = [[3.0, 1.0, 4.0], [0.0, 5.0, 0.0], [10.5, 2.25, 7.0]]
FAST_WAIT = {"Delay": 0.25, "MaxAttempts": 240}
# Coefficients and intercepts of the two test models, so their forecasts differ.
FIRST_MODEL = ([2.0, -3.0, 0.5], 1.0)
SECOND_MODEL = ([1.0, 1.0, 1.0], 40.0)


def fit_model(coefficients: list[float], intercept: float) -> Any:
    import numpy as np
    from sklearn.linear_model import LinearRegression

    features = np.random.default_rng(3).uniform(0, 20, size=(100, 3))
    return LinearRegression().fit(features, features @ np.array(coefficients) + intercept)


def forecasts(estimator: Any, rows: list[list[float]]) -> list[float]:
    import numpy as np

    return [float(value) for value in np.clip(estimator.predict(np.array(rows)), 0, None)]


def tar_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def model_archive(estimator: Any, model_version: str) -> bytes:
    """Build model.tar.gz in the SageMaker scikit-learn layout."""
    import joblib
    import sklearn

    model_file = io.BytesIO()
    joblib.dump(estimator, model_file)
    metadata = {
        "model_version": model_version,
        "feature_columns": FEATURE_COLUMNS,
        "id_columns": ["STOCK_CODE", "WEEK_START"],
        "target": "QUANTITY",
        "framework": "scikit-learn",
        "framework_version": sklearn.__version__,
    }
    return tar_bytes(
        {
            "model.joblib": model_file.getvalue(),
            "metadata.json": json.dumps(metadata).encode(),
            "code/inference.py": (SERVING_DIR / "inference.py").read_bytes(),
        }
    )


@dataclass
class Emulator:
    """A running emulator and boto3 clients for it."""

    service: ServiceProcess
    s3: Any
    sagemaker: Any
    runtime: Any

    @property
    def endpoint_url(self) -> str:
        return str(self.service.info["endpoint_url"])

    def hosting(self, endpoint_name: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.endpoint_url}/_emulator/hosting", timeout=10) as response:
            status = json.load(response)
        matches = [item for item in status["endpoints"] if item["endpoint_name"] == endpoint_name]
        return matches[0] if matches else {}

    def server_pids(self, endpoint_name: str) -> list[int]:
        variants = self.hosting(endpoint_name).get("variants", {})
        return [server["pid"] for servers in variants.values() for server in servers]

    def upload(self, data: bytes) -> str:
        key = f"models/{uuid.uuid4().hex}/model.tar.gz"
        self.s3.put_object(Bucket=BUCKET, Key=key, Body=data)
        return f"s3://{BUCKET}/{key}"

    def create_model(self, model_data_url: str) -> str:
        name = f"model-{uuid.uuid4().hex[:8]}"
        self.sagemaker.create_model(
            ModelName=name,
            ExecutionRoleArn=ROLE_ARN,
            PrimaryContainer={"Image": "demand-forecast-serving:test", "ModelDataUrl": model_data_url},
        )
        return name

    def create_config(self, *variants: dict[str, Any]) -> str:
        name = f"config-{uuid.uuid4().hex[:8]}"
        production_variants = [
            {"InstanceType": "ml.m5.large", "InitialInstanceCount": 1, "InitialVariantWeight": 1.0, **variant}
            for variant in variants
        ]
        self.sagemaker.create_endpoint_config(EndpointConfigName=name, ProductionVariants=production_variants)
        return name

    def create_endpoint(self, config_name: str) -> str:
        name = f"endpoint-{uuid.uuid4().hex[:8]}"
        self.sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=config_name)
        return name

    def wait_in_service(self, endpoint_name: str) -> dict[str, Any]:
        self.sagemaker.get_waiter("endpoint_in_service").wait(
            EndpointName=endpoint_name, WaiterConfig=FAST_WAIT
        )
        return dict(self.sagemaker.describe_endpoint(EndpointName=endpoint_name))

    def invoke(
        self, endpoint_name: str, body: str, content_type: str = "application/json", **extra: Any
    ) -> Any:
        return self.runtime.invoke_endpoint(
            EndpointName=endpoint_name, Body=body.encode(), ContentType=content_type, **extra
        )

    def predict_json(
        self, endpoint_name: str, rows: list[list[float]], **extra: Any
    ) -> tuple[list[float], str]:
        records = [dict(zip(FEATURE_COLUMNS, row, strict=True)) for row in rows]
        response = self.invoke(endpoint_name, json.dumps({"instances": records}), **extra)
        payload = json.loads(response["Body"].read())
        return [item["forecast"] for item in payload["predictions"]], response["InvokedProductionVariant"]


def start_emulator(base: Path, seed: int) -> tuple[ServiceProcess, Emulator]:
    import boto3

    command = python_module_command(
        "ml_lifecycle.local.aws_emulator",
        "--state-dir",
        str(base / "state"),
        "--serving-dir",
        str(SERVING_DIR),
        "--seed",
        str(seed),
    )
    service = start_service("aws-emulator", command, run_dir=base / "run", log_dir=base / "log", timeout_s=60)
    settings = {
        "endpoint_url": service.info["endpoint_url"],
        "region_name": REGION,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    emulator = Emulator(
        service,
        boto3.client("s3", **settings),
        boto3.client("sagemaker", **settings),
        boto3.client("sagemaker-runtime", **settings),
    )
    emulator.s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    return service, emulator


@pytest.fixture(scope="module", autouse=True)
def offline_aws_environment() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.delenv("AWS_PROFILE", raising=False)
        yield


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory, offline_aws_environment: None) -> Iterator[Emulator]:
    service, running = start_emulator(tmp_path_factory.mktemp("aws-emulator"), seed=20111205)
    try:
        yield running
    finally:
        service.stop()


@pytest.fixture(scope="module")
def first_model() -> Any:
    return fit_model(*FIRST_MODEL)


@pytest.fixture(scope="module")
def second_model() -> Any:
    return fit_model(*SECOND_MODEL)


@pytest.fixture(scope="module")
def first_model_url(emulator: Emulator, first_model: Any) -> str:
    return emulator.upload(model_archive(first_model, "20111205-first"))


@pytest.fixture(scope="module")
def second_model_url(emulator: Emulator, second_model: Any) -> str:
    return emulator.upload(model_archive(second_model, "20111212-second"))


@pytest.fixture(scope="module")
def serving_endpoint(emulator: Emulator, first_model_url: str) -> str:
    """An InService endpoint of the first model, shared by tests that only invoke it."""
    config = emulator.create_config(
        {"VariantName": "primary", "ModelName": emulator.create_model(first_model_url)}
    )
    name = emulator.create_endpoint(config)
    emulator.wait_in_service(name)
    return name


@pytest.fixture(scope="module")
def two_variant_endpoint(emulator: Emulator, first_model_url: str, second_model_url: str) -> str:
    """An endpoint with a champion (weight 3) and a challenger (weight 1) variant."""
    config = emulator.create_config(
        {
            "VariantName": "champion",
            "ModelName": emulator.create_model(first_model_url),
            "InitialVariantWeight": 3,
        },
        {
            "VariantName": "challenger",
            "ModelName": emulator.create_model(second_model_url),
            "InitialVariantWeight": 1,
        },
    )
    name = emulator.create_endpoint(config)
    emulator.wait_in_service(name)
    return name


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class TestCreateEndpoint:
    def test_create_runs_model_and_serves_predictions(
        self, emulator: Emulator, first_model: Any, first_model_url: str
    ) -> None:
        config = emulator.create_config(
            {"VariantName": "primary", "ModelName": emulator.create_model(first_model_url)}
        )
        name = emulator.create_endpoint(config)

        assert emulator.sagemaker.describe_endpoint(EndpointName=name)["EndpointStatus"] == "Creating"
        description = emulator.wait_in_service(name)
        predicted, variant = emulator.predict_json(name, ROWS)

        assert description["EndpointConfigName"] == config
        assert "FailureReason" not in description
        assert [v["VariantName"] for v in description["ProductionVariants"]] == ["primary"]
        assert description["ProductionVariants"][0]["CurrentWeight"] == 1.0
        assert description["ProductionVariants"][0]["CurrentInstanceCount"] == 1
        assert predicted == forecasts(first_model, ROWS)
        assert variant == "primary"

    def test_csv_invocation_equals_predict(
        self, emulator: Emulator, serving_endpoint: str, first_model: Any
    ) -> None:
        body = "".join(",".join(repr(value) for value in row) + "\n" for row in ROWS)

        response = emulator.invoke(serving_endpoint, body, content_type="text/csv", Accept="text/csv")

        assert response["ContentType"] == "text/csv"
        values = [float(line) for line in response["Body"].read().decode().splitlines()]
        assert values == forecasts(first_model, ROWS)

    def test_existing_name_rejected(self, emulator: Emulator, serving_endpoint: str) -> None:
        from botocore.exceptions import ClientError

        config = emulator.sagemaker.describe_endpoint(EndpointName=serving_endpoint)["EndpointConfigName"]

        with pytest.raises(ClientError) as caught:
            emulator.sagemaker.create_endpoint(EndpointName=serving_endpoint, EndpointConfigName=config)

        assert caught.value.response["Error"]["Code"] == "ValidationException"
        assert "Cannot create already existing endpoint" in caught.value.response["Error"]["Message"]

    def test_instances_share_requests_round_robin(
        self, emulator: Emulator, first_model: Any, first_model_url: str
    ) -> None:
        model = emulator.create_model(first_model_url)
        config = emulator.create_config(
            {"VariantName": "primary", "ModelName": model, "InitialInstanceCount": 2}
        )
        name = emulator.create_endpoint(config)
        description = emulator.wait_in_service(name)

        for _ in range(4):
            assert emulator.predict_json(name, ROWS[:1])[0] == forecasts(first_model, ROWS[:1])

        servers = emulator.hosting(name)["variants"]["primary"]
        assert description["ProductionVariants"][0]["CurrentInstanceCount"] == 2
        assert len(servers) == 2
        for server in servers:
            assert Path(server["log"]).read_text().count("POST /invocations 200") == 2

    @pytest.mark.parametrize(
        ("files", "reason"),
        [
            ({"model.joblib": b"not a pickle", "metadata.json": b"{}"}, "failed its /ping health check"),
            ({"../escape.txt": b"x"}, "unsafe path '../escape.txt'"),
        ],
        ids=["unloadable-model", "path-traversal"],
    )
    def test_broken_artifact_fails(self, emulator: Emulator, files: dict[str, bytes], reason: str) -> None:
        from botocore.exceptions import WaiterError

        url = emulator.upload(tar_bytes(files))
        name = emulator.create_endpoint(
            emulator.create_config({"VariantName": "primary", "ModelName": emulator.create_model(url)})
        )

        with pytest.raises(WaiterError):
            emulator.wait_in_service(name)

        description = emulator.sagemaker.describe_endpoint(EndpointName=name)
        assert description["EndpointStatus"] == "Failed"
        assert reason in description["FailureReason"]
        assert emulator.server_pids(name) == []

    def test_missing_model_data_fails(self, emulator: Emulator) -> None:
        from botocore.exceptions import WaiterError

        url = f"s3://{BUCKET}/models/absent/model.tar.gz"
        name = emulator.create_endpoint(
            emulator.create_config({"VariantName": "primary", "ModelName": emulator.create_model(url)})
        )

        with pytest.raises(WaiterError):
            emulator.wait_in_service(name)

        description = emulator.sagemaker.describe_endpoint(EndpointName=name)
        assert description["EndpointStatus"] == "Failed"
        assert f"model data {url} not found" in description["FailureReason"]


class TestUpdateEndpoint:
    def test_update_switches_model_blue_green(
        self,
        emulator: Emulator,
        first_model: Any,
        second_model: Any,
        first_model_url: str,
        second_model_url: str,
    ) -> None:
        old_config = emulator.create_config(
            {"VariantName": "primary", "ModelName": emulator.create_model(first_model_url)}
        )
        name = emulator.create_endpoint(old_config)
        emulator.wait_in_service(name)
        old_pids = emulator.server_pids(name)
        new_config = emulator.create_config(
            {"VariantName": "primary", "ModelName": emulator.create_model(second_model_url)}
        )

        arn = emulator.sagemaker.update_endpoint(EndpointName=name, EndpointConfigName=new_config)[
            "EndpointArn"
        ]
        status_during_update = emulator.sagemaker.describe_endpoint(EndpointName=name)["EndpointStatus"]
        # The new model needs about a second to load, so the old one still serves.
        served_during_update = emulator.predict_json(name, ROWS)[0]
        description = emulator.wait_in_service(name)
        served_after_update = emulator.predict_json(name, ROWS)[0]

        assert arn == f"arn:aws:sagemaker:{REGION}:{ACCOUNT_ID}:endpoint/{name}"
        assert status_during_update == "Updating"
        assert served_during_update == forecasts(first_model, ROWS)
        assert description["EndpointConfigName"] == new_config
        assert "FailureReason" not in description
        assert served_after_update == forecasts(second_model, ROWS)
        assert served_after_update != served_during_update
        assert old_pids
        assert not any(process_exists(pid) for pid in old_pids)
        assert set(emulator.server_pids(name)).isdisjoint(old_pids)

    def test_failed_update_keeps_old_config(
        self, emulator: Emulator, first_model: Any, first_model_url: str
    ) -> None:
        old_config = emulator.create_config(
            {"VariantName": "primary", "ModelName": emulator.create_model(first_model_url)}
        )
        name = emulator.create_endpoint(old_config)
        emulator.wait_in_service(name)
        old_pids = emulator.server_pids(name)
        missing_url = f"s3://{BUCKET}/models/never-uploaded/model.tar.gz"
        broken_config = emulator.create_config(
            {"VariantName": "primary", "ModelName": emulator.create_model(missing_url)}
        )

        emulator.sagemaker.update_endpoint(EndpointName=name, EndpointConfigName=broken_config)
        description = emulator.wait_in_service(name)

        assert description["EndpointStatus"] == "InService"
        assert description["EndpointConfigName"] == old_config
        assert f"model data {missing_url} not found" in description["FailureReason"]
        assert emulator.predict_json(name, ROWS)[0] == forecasts(first_model, ROWS)
        assert emulator.server_pids(name) == old_pids
        assert all(process_exists(pid) for pid in old_pids)

    def test_update_while_creating_rejected(self, emulator: Emulator, first_model_url: str) -> None:
        from botocore.exceptions import ClientError

        config = emulator.create_config(
            {"VariantName": "primary", "ModelName": emulator.create_model(first_model_url)}
        )
        name = emulator.create_endpoint(config)

        with pytest.raises(ClientError) as caught:
            emulator.sagemaker.update_endpoint(EndpointName=name, EndpointConfigName=config)
        with pytest.raises(ClientError) as invoked:
            emulator.invoke(name, "[]")
        emulator.wait_in_service(name)

        error = caught.value.response["Error"]
        arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT_ID}:endpoint/{name}"
        assert error["Code"] == "ValidationException"
        assert error["Message"] == f'Cannot update in-progress endpoint "{arn}".'
        assert invoked.value.response["Error"]["Code"] == "ValidationError"
        assert "its status is Creating" in invoked.value.response["Error"]["Message"]

    @pytest.mark.parametrize(
        ("endpoint", "config", "message"),
        [
            ("absent-endpoint", None, "Could not find endpoint"),
            (None, "absent-config", "Could not find endpoint configuration"),
        ],
    )
    def test_update_unknown_names_rejected(
        self,
        emulator: Emulator,
        serving_endpoint: str,
        endpoint: str | None,
        config: str | None,
        message: str,
    ) -> None:
        from botocore.exceptions import ClientError

        current_config = emulator.sagemaker.describe_endpoint(EndpointName=serving_endpoint)[
            "EndpointConfigName"
        ]

        with pytest.raises(ClientError) as caught:
            emulator.sagemaker.update_endpoint(
                EndpointName=endpoint or serving_endpoint, EndpointConfigName=config or current_config
            )

        assert caught.value.response["Error"]["Code"] == "ValidationException"
        assert message in caught.value.response["Error"]["Message"]
        assert (endpoint or config) in caught.value.response["Error"]["Message"]


class TestRouting:
    def test_weights_split_traffic(self, emulator: Emulator, two_variant_endpoint: str) -> None:
        description = emulator.sagemaker.describe_endpoint(EndpointName=two_variant_endpoint)

        counts = Counter(emulator.predict_json(two_variant_endpoint, ROWS[:1])[1] for _ in range(200))

        weights = {v["VariantName"]: v["CurrentWeight"] for v in description["ProductionVariants"]}
        assert weights == {"champion": 3.0, "challenger": 1.0}
        assert set(counts) == {"champion", "challenger"}
        # The expected share is 0.75, and the bounds are about five standard deviations wide for 200 calls.
        assert 0.6 <= counts["champion"] / 200 <= 0.9

    def test_target_variant_pins_variant(
        self, emulator: Emulator, two_variant_endpoint: str, second_model: Any
    ) -> None:
        results = [
            emulator.predict_json(two_variant_endpoint, ROWS, TargetVariant="challenger") for _ in range(20)
        ]

        assert {variant for _, variant in results} == {"challenger"}
        assert all(predicted == forecasts(second_model, ROWS) for predicted, _ in results)

    def test_unknown_target_variant_rejected(self, emulator: Emulator, two_variant_endpoint: str) -> None:
        from botocore.exceptions import ClientError

        with pytest.raises(ClientError) as caught:
            emulator.predict_json(two_variant_endpoint, ROWS, TargetVariant="shadow")

        assert caught.value.response["Error"]["Code"] == "ValidationError"
        assert "shadow" in caught.value.response["Error"]["Message"]

    def test_weight_update_reroutes(self, emulator: Emulator, two_variant_endpoint: str) -> None:
        emulator.sagemaker.update_endpoint_weights_and_capacities(
            EndpointName=two_variant_endpoint,
            DesiredWeightsAndCapacities=[{"VariantName": "champion", "DesiredWeight": 0.0}],
        )
        description = emulator.wait_in_service(two_variant_endpoint)

        variants = {emulator.predict_json(two_variant_endpoint, ROWS[:1])[1] for _ in range(30)}

        summaries = {v["VariantName"]: v for v in description["ProductionVariants"]}
        assert summaries["champion"]["CurrentWeight"] == 0.0
        assert summaries["challenger"]["CurrentWeight"] == 1.0
        # The request named no instance count, so SageMaker keeps the current one.
        assert summaries["champion"]["CurrentInstanceCount"] == 1
        assert summaries["champion"]["DesiredInstanceCount"] == 1
        assert variants == {"challenger"}

    def test_instance_count_update_scales_servers(
        self, emulator: Emulator, two_variant_endpoint: str
    ) -> None:
        def scale(count: int) -> dict[str, Any]:
            emulator.sagemaker.update_endpoint_weights_and_capacities(
                EndpointName=two_variant_endpoint,
                DesiredWeightsAndCapacities=[{"VariantName": "challenger", "DesiredInstanceCount": count}],
            )
            status = emulator.sagemaker.describe_endpoint(EndpointName=two_variant_endpoint)["EndpointStatus"]
            summaries = emulator.wait_in_service(two_variant_endpoint)["ProductionVariants"]
            return {
                "status": status,
                "challenger": next(v for v in summaries if v["VariantName"] == "challenger"),
            }

        scaled_up = scale(2)
        pids_after_scale_up = [
            s["pid"] for s in emulator.hosting(two_variant_endpoint)["variants"]["challenger"]
        ]
        scaled_down = scale(1)
        pids_after_scale_down = [
            s["pid"] for s in emulator.hosting(two_variant_endpoint)["variants"]["challenger"]
        ]

        assert scaled_up["status"] == "Updating"
        assert scaled_up["challenger"]["CurrentInstanceCount"] == 2
        assert scaled_up["challenger"]["CurrentWeight"] == 1.0
        assert len(pids_after_scale_up) == 2
        assert scaled_down["challenger"]["CurrentInstanceCount"] == 1
        assert pids_after_scale_down == pids_after_scale_up[:1]
        assert not process_exists(pids_after_scale_up[1])

    def test_retained_variant_properties(
        self, emulator: Emulator, two_variant_endpoint: str, first_model_url: str, second_model_url: str
    ) -> None:
        # The earlier tests set the champion's weight to 0, and the update keeps it.
        config = emulator.create_config(
            {
                "VariantName": "champion",
                "ModelName": emulator.create_model(first_model_url),
                "InitialVariantWeight": 5,
            },
            {"VariantName": "challenger", "ModelName": emulator.create_model(second_model_url)},
        )

        emulator.sagemaker.update_endpoint(
            EndpointName=two_variant_endpoint,
            EndpointConfigName=config,
            RetainAllVariantProperties=True,
            ExcludeRetainedVariantProperties=[{"VariantPropertyType": "DesiredInstanceCount"}],
        )
        description = emulator.wait_in_service(two_variant_endpoint)

        weights = {v["VariantName"]: v["CurrentWeight"] for v in description["ProductionVariants"]}
        assert description["EndpointConfigName"] == config
        assert weights == {"champion": 0.0, "challenger": 1.0}


class TestInvokeErrors:
    def test_unknown_endpoint_validation_error(self, emulator: Emulator) -> None:
        from botocore.exceptions import ClientError

        with pytest.raises(ClientError) as caught:
            emulator.invoke("no-such-endpoint", "[]")

        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert caught.value.response["Error"]["Code"] == "ValidationError"
        assert (
            caught.value.response["Error"]["Message"]
            == f"Endpoint no-such-endpoint of account {ACCOUNT_ID} not found."
        )

    def test_container_error_becomes_model_error(self, emulator: Emulator, serving_endpoint: str) -> None:
        from botocore.exceptions import ClientError

        body = json.dumps([{"LAG_1": 1.0, "ROLLING_MEAN_4": 2.0}])

        with pytest.raises(ClientError) as caught:
            emulator.invoke(serving_endpoint, body)

        response = caught.value.response
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 424
        assert response["Error"]["Code"] == "ModelError"
        assert response["OriginalStatusCode"] == 400
        assert "record 0 is missing the feature 'LAG_2'" in response["OriginalMessage"]
        assert "Received client error (400) from primary" in response["Error"]["Message"]
        assert response["LogStreamArn"] == (
            f"arn:aws:logs:{REGION}:{ACCOUNT_ID}:log-group:/aws/sagemaker/Endpoints/{serving_endpoint}"
        )

    def test_unsupported_content_type_model_error(self, emulator: Emulator, serving_endpoint: str) -> None:
        from botocore.exceptions import ClientError

        with pytest.raises(ClientError) as caught:
            emulator.invoke(serving_endpoint, "<rows/>", content_type="application/xml")

        assert caught.value.response["Error"]["Code"] == "ModelError"
        assert caught.value.response["OriginalStatusCode"] == 415


class TestOtherServices:
    def test_moto_services_pass_through(self, emulator: Emulator) -> None:
        import boto3

        settings = {"endpoint_url": emulator.endpoint_url, "region_name": REGION}
        cloudwatch = boto3.client("cloudwatch", **settings)
        sns = boto3.client("sns", **settings)
        emulator.s3.put_object(Bucket=BUCKET, Key="reports/drift.json", Body=b'{"psi": 0.3}')

        cloudwatch.put_metric_data(
            Namespace="MLLifecycle/DemandForecast", MetricData=[{"MetricName": "WAPE", "Value": 0.21}]
        )
        topic_arn = sns.create_topic(Name="ml-lifecycle-alerts")["TopicArn"]
        metrics = cloudwatch.list_metrics(Namespace="MLLifecycle/DemandForecast")["Metrics"]
        report = emulator.s3.get_object(Bucket=BUCKET, Key="reports/drift.json")["Body"].read()
        models = emulator.sagemaker.list_models()["Models"]

        assert [metric["MetricName"] for metric in metrics] == ["WAPE"]
        assert topic_arn == f"arn:aws:sns:{REGION}:{ACCOUNT_ID}:ml-lifecycle-alerts"
        assert report == b'{"psi": 0.3}'
        assert models


class TestModelRegistry:
    def register(self, emulator: Emulator, group: str) -> str:
        emulator.sagemaker.create_model_package_group(ModelPackageGroupName=group)
        return str(
            emulator.sagemaker.create_model_package(
                ModelPackageGroupName=group,
                ModelApprovalStatus="Rejected",
                InferenceSpecification={
                    "Containers": [{"Image": "demand-forecast-serving:test", "ModelDataUrl": "s3://b/k"}],
                    "SupportedContentTypes": ["application/json"],
                    "SupportedResponseMIMETypes": ["application/json"],
                },
                CustomerMetadataProperties={"training_key": "20111205-w13-default", "holdout_wape": "0.41"},
            )["ModelPackageArn"]
        )

    def test_approval_keeps_metadata_properties(self, emulator: Emulator) -> None:
        arn = self.register(emulator, f"approval-{uuid.uuid4().hex[:6]}")

        emulator.sagemaker.update_model_package(
            ModelPackageArn=arn, ModelApprovalStatus="Approved", ApprovalDescription="reviewed"
        )
        package = emulator.sagemaker.describe_model_package(ModelPackageName=arn)

        assert package["ModelApprovalStatus"] == "Approved"
        assert package["CustomerMetadataProperties"] == {
            "training_key": "20111205-w13-default",
            "holdout_wape": "0.41",
        }

    def test_property_update_keeps_status_and_merges(self, emulator: Emulator) -> None:
        arn = self.register(emulator, f"properties-{uuid.uuid4().hex[:6]}")

        emulator.sagemaker.update_model_package(
            ModelPackageArn=arn,
            CustomerMetadataProperties={"reason": "drift"},
            CustomerMetadataPropertiesToRemove=["holdout_wape"],
        )
        package = emulator.sagemaker.describe_model_package(ModelPackageName=arn)

        assert package["ModelApprovalStatus"] == "Rejected"
        assert package["CustomerMetadataProperties"] == {
            "training_key": "20111205-w13-default",
            "reason": "drift",
        }


class TestDeleteEndpoint:
    def test_delete_stops_servers(self, emulator: Emulator, first_model_url: str) -> None:
        from botocore.exceptions import ClientError

        config = emulator.create_config(
            {"VariantName": "primary", "ModelName": emulator.create_model(first_model_url)}
        )
        name = emulator.create_endpoint(config)
        emulator.wait_in_service(name)
        pids = emulator.server_pids(name)

        emulator.sagemaker.delete_endpoint(EndpointName=name)

        assert pids
        assert not any(process_exists(pid) for pid in pids)
        assert emulator.hosting(name) == {}
        with pytest.raises(ClientError) as caught:
            emulator.invoke(name, "[]")
        assert caught.value.response["Error"]["Code"] == "ValidationError"

    def test_sigterm_stops_model_servers(self, tmp_path: Path, first_model: Any) -> None:
        service, own = start_emulator(tmp_path, seed=1)
        try:
            url = own.upload(model_archive(first_model, "20111205-first"))
            name = own.create_endpoint(
                own.create_config({"VariantName": "primary", "ModelName": own.create_model(url)})
            )
            own.wait_in_service(name)
            pids = own.server_pids(name)
        finally:
            service.stop()

        assert pids
        deadline = time.monotonic() + 5
        while any(process_exists(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(process_exists(pid) for pid in pids)
        assert f"Stopped the model servers {pids} on exit" in service.log_path.read_text()
