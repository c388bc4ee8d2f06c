"""Publish static HTML sites (Data Docs, model reports) to S3 and address them from a browser."""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Any


def is_custom_endpoint(s3_client: Any) -> bool:
    """Tell whether the client talks to an S3-compatible emulator rather than AWS."""
    return "amazonaws.com" not in str(s3_client.meta.endpoint_url)


def upload_directory(s3_client: Any, directory: Path, bucket: str, prefix: str) -> int:
    """Upload every file under ``directory`` to ``s3://bucket/prefix/`` with its content type; return the count.

    On an emulator the objects are made public-read, so the links open without
    credentials. On AWS they keep the bucket's access rules.
    """
    extra: dict[str, str] = {"ACL": "public-read"} if is_custom_endpoint(s3_client) else {}
    uploaded = 0
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            key = f"{prefix}/{path.relative_to(directory).as_posix()}"
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            s3_client.upload_file(str(path), bucket, key, ExtraArgs={"ContentType": content_type, **extra})
            uploaded += 1
    return uploaded


def browser_url(s3_client: Any, bucket: str, key: str) -> str:
    """Return an address a browser can open for an S3 object.

    With an emulator it is the path-style object URL. On AWS it is the bucket's
    static website address, which serves the pages once website hosting is
    enabled on the bucket.
    """
    if is_custom_endpoint(s3_client):
        return f"{str(s3_client.meta.endpoint_url).rstrip('/')}/{bucket}/{key}"
    return f"http://{bucket}.s3-website-{s3_client.meta.region_name}.amazonaws.com/{key}"
