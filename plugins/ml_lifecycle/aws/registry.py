"""The SageMaker model registry: model package versions of the demand-forecast group.

Every trained candidate becomes a version of the model package group, with
``ModelApprovalStatus`` Approved or Rejected, its metrics in S3 referenced
from ``ModelMetrics``, and the facts needed to trace it (data window,
training key, reason, code version) in ``CustomerMetadataProperties``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

log = logging.getLogger(__name__)

# SageMaker limits CustomerMetadataProperties values to 256 characters.
MAX_PROPERTY_LENGTH = 256


@dataclass(frozen=True)
class ModelVersion:
    """One model package version as the lifecycle reads it back."""

    arn: str
    version_number: int
    approval_status: str
    model_data_url: str
    image: str
    properties: dict[str, str]

    @property
    def training_key(self) -> str | None:
        return self.properties.get("training_key")

    @property
    def model_version(self) -> str:
        return self.properties.get("model_version") or f"v{self.version_number}"


def split_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into bucket and key."""
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise ValueError(f"invalid S3 URI {uri!r}: expected s3://bucket/key")
    bucket, key = uri[5:].split("/", 1)
    return bucket, key


class ModelRegistry:
    """Read and write model package versions and their S3 artifacts.

    :param aws_conn_id: Airflow connection to AWS; its extra may set
        ``endpoint_url`` and ``region_name``.
    :param group_name: the model package group.
    """

    def __init__(self, aws_conn_id: str, group_name: str) -> None:
        self.aws_conn_id = aws_conn_id
        self.group_name = group_name
        self.sagemaker = SageMakerHook(aws_conn_id=aws_conn_id)
        self.s3 = S3Hook(aws_conn_id=aws_conn_id)

    def versions(self, approval_status: str | None = None) -> list[ModelVersion]:
        """Return every version of the group, newest first."""
        client = self.sagemaker.get_conn()
        arguments: dict[str, Any] = {
            "ModelPackageGroupName": self.group_name,
            "SortBy": "CreationTime",
            "SortOrder": "Descending",
        }
        if approval_status:
            arguments["ModelApprovalStatus"] = approval_status
        summaries: list[dict[str, Any]] = []
        paginator = client.get_paginator("list_model_packages")
        for page in paginator.paginate(**arguments):
            summaries.extend(page.get("ModelPackageSummaryList", []))
        versions = [self.describe(summary["ModelPackageArn"]) for summary in summaries]
        return sorted(versions, key=lambda version: version.version_number, reverse=True)

    def describe(self, arn: str) -> ModelVersion:
        """Describe one model package version."""
        package = self.sagemaker.get_conn().describe_model_package(ModelPackageName=arn)
        containers = package.get("InferenceSpecification", {}).get("Containers", [{}])
        return ModelVersion(
            arn=package["ModelPackageArn"],
            version_number=int(package.get("ModelPackageVersion") or 0),
            approval_status=package.get("ModelApprovalStatus", "PendingManualApproval"),
            model_data_url=containers[0].get("ModelDataUrl", ""),
            image=containers[0].get("Image", ""),
            properties=dict(package.get("CustomerMetadataProperties") or {}),
        )

    def find_by_training_key(self, training_key: str) -> ModelVersion | None:
        """Return the version trained for ``training_key``, so re-runs register nothing new."""
        for version in self.versions():
            if version.training_key == training_key:
                return version
        return None

    def champion(self, exclude_training_key: str | None = None) -> ModelVersion | None:
        """Return the newest Approved version, the one a candidate must beat."""
        for version in self.versions(approval_status="Approved"):
            if version.training_key != exclude_training_key:
                return version
        return None

    def upload_bytes(self, payload: bytes, uri: str, content_type: str) -> None:
        bucket, key = split_s3_uri(uri)
        self.s3.get_conn().put_object(Bucket=bucket, Key=key, Body=payload, ContentType=content_type)
        log.info("Uploaded %d bytes to %s", len(payload), uri)

    def upload_json(self, document: Any, uri: str) -> None:
        self.upload_bytes(
            json.dumps(document, indent=2, default=str).encode("utf-8"), uri, "application/json"
        )

    def download_bytes(self, uri: str) -> bytes:
        bucket, key = split_s3_uri(uri)
        body: bytes = self.s3.get_conn().get_object(Bucket=bucket, Key=key)["Body"].read()
        return body

    def download_json(self, uri: str) -> Any:
        return json.loads(self.download_bytes(uri).decode("utf-8"))

    def register(
        self,
        *,
        model_data_url: str,
        image: str,
        approval_status: str,
        evaluation_uri: str,
        description: str,
        properties: dict[str, str],
    ) -> ModelVersion:
        """Create a model package version and return it as registered."""
        too_long = {key: len(value) for key, value in properties.items() if len(value) > MAX_PROPERTY_LENGTH}
        if too_long:
            raise ValueError(
                f"metadata properties exceed {MAX_PROPERTY_LENGTH} characters: {too_long}; shorten them "
                "or store them in the evaluation document"
            )
        response = self.sagemaker.get_conn().create_model_package(
            ModelPackageGroupName=self.group_name,
            ModelPackageDescription=description[:1000],
            ModelApprovalStatus=approval_status,
            InferenceSpecification={
                "Containers": [{"Image": image, "ModelDataUrl": model_data_url}],
                "SupportedContentTypes": ["application/json", "text/csv"],
                "SupportedResponseMIMETypes": ["application/json", "text/csv"],
            },
            ModelMetrics={
                "ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": evaluation_uri}}
            },
            CustomerMetadataProperties=properties,
        )
        version = self.describe(response["ModelPackageArn"])
        log.info(
            "Registered %s as version %d of %s with status %s",
            version.arn,
            version.version_number,
            self.group_name,
            approval_status,
        )
        return version

    def set_approval(self, arn: str, status: str, description: str) -> ModelVersion:
        """Record a reviewer's decision on a version, as done in SageMaker Studio or with the CLI."""
        if status not in ("Approved", "Rejected", "PendingManualApproval"):
            raise ValueError(
                f"invalid approval status {status!r}: expected Approved, Rejected or PendingManualApproval"
            )
        self.sagemaker.get_conn().update_model_package(
            ModelPackageArn=arn, ModelApprovalStatus=status, ApprovalDescription=description[:1000]
        )
        log.info("Set %s to %s: %s", arn, status, description)
        return self.describe(arn)
