"""Object storage (MinIO in production, any S3 API): where build artifacts and ML data live."""

from __future__ import annotations

import hashlib
import threading
from typing import Any

from prefect.blocks.core import Block
from pydantic import Field

from blocks.fields import HttpUrl, Name, RequiredSecret
from blocks.schema import CachedJsonSchema

# boto3 clients are thread-safe but slow to make (~0.2 s: the service model is loaded each
# time), so one client per distinct configuration is kept for the life of the process.
_CLIENTS: dict[tuple, Any] = {}
_CLIENTS_LOCK = threading.Lock()


class ObjectStore(CachedJsonSchema, Block):
    """An S3-compatible bucket with the credentials to use it.

    ``get_client()`` builds a boto3 S3 client with timeouts and adaptive retries;
    ``as_s3_bucket()`` gives the same bucket as a prefect-aws ``S3Bucket`` block.
    """

    _block_type_name = "opsflow object store"
    _block_type_slug = "opsflow-object-store"
    _description = "An S3-compatible bucket (MinIO, S3) with its endpoint and credentials."

    endpoint_url: HttpUrl = Field(
        description="S3 API endpoint, e.g. http://minio.lan:9000. Credentials never go in the URL."
    )
    bucket: Name = Field(description="Bucket name, e.g. opsflow-artifacts.")
    region: str = Field(default="us-east-1", description="S3 region name (MinIO accepts any).")
    access_key_id: RequiredSecret = Field(description="Access key id.")
    secret_access_key: RequiredSecret = Field(description="Secret access key.")
    verify_tls: bool = Field(default=True, description="Verify the endpoint's TLS certificate.")
    connect_timeout: float = Field(default=5, gt=0, description="Seconds to wait for a connection.")
    read_timeout: float = Field(default=60, gt=0, description="Seconds to wait for a response.")
    max_attempts: int = Field(default=5, ge=1, le=20, description="Attempts per request (adaptive retries).")

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``boto3.client('s3', ...)`` (secrets unwrapped here only)."""
        from botocore.config import Config

        return {
            "endpoint_url": self.endpoint_url,
            "region_name": self.region,
            "aws_access_key_id": self.access_key_id.get_secret_value(),
            "aws_secret_access_key": self.secret_access_key.get_secret_value(),
            "verify": self.verify_tls,
            "config": Config(
                connect_timeout=self.connect_timeout,
                read_timeout=self.read_timeout,
                retries={"max_attempts": self.max_attempts, "mode": "adaptive"},
                s3={"addressing_style": "path"},
            ),
        }

    def get_client(self):
        """A boto3 S3 client for this store (shared by every caller with the same configuration)."""
        import boto3

        secret = hashlib.sha256(self.secret_access_key.get_secret_value().encode()).hexdigest()
        key = (self.endpoint_url, self.region, self.access_key_id.get_secret_value(), secret, self.verify_tls,
               self.connect_timeout, self.read_timeout, self.max_attempts)
        with _CLIENTS_LOCK:
            if key not in _CLIENTS:
                _CLIENTS[key] = boto3.session.Session().client("s3", **self.client_kwargs())
            return _CLIENTS[key]

    def as_s3_bucket(self):
        """The same bucket as a prefect-aws ``S3Bucket`` block, for the collection's tasks."""
        from prefect_aws import AwsClientParameters, AwsCredentials, S3Bucket

        creds = AwsCredentials(
            aws_access_key_id=self.access_key_id.get_secret_value(),
            aws_secret_access_key=self.secret_access_key,
            region_name=self.region,
            aws_client_parameters=AwsClientParameters(endpoint_url=self.endpoint_url, verify=self.verify_tls),
        )
        return S3Bucket(bucket_name=self.bucket, credentials=creds)
