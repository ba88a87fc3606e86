"""Documents in an S3-compatible object store (`s3://bucket/prefix`), through boto3.

Where the store is and who we are come from boto3's standard configuration: `AWS_ENDPOINT_URL` (any
S3-compatible service: MinIO, Scaleway, OVH, Garage, rclone), `AWS_DEFAULT_REGION`, `AWS_ACCESS_KEY_ID` and
`AWS_SECRET_ACCESS_KEY` (or a profile, or an instance role). Nothing here reads them itself.

Keys are `<prefix>/<first two hex digits>/<sha256>`, so an object's content never changes: storing bytes that
are already there is skipped, and a resend that brings new bytes gets a new key while the invoice row swaps its
pointer in one transaction. Uploads are staged in a local temporary file (screened there first), then sent with
boto3's managed transfer (multipart past its threshold); downloads are streamed in chunks.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import boto3
from boto3.exceptions import Boto3Error
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from portal.storage.base import CHUNK, SHA256, StorageError, StoredFile, check_sha256, hash_file

# Path-style requests (`endpoint/bucket/key`) work with every S3-compatible server, virtual-hosted ones need
# DNS for `bucket.endpoint`; AWS itself accepts both.
CLIENT_CONFIG = Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 3},
                       connect_timeout=5, read_timeout=30)


class S3Store:
    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        # Uploads are spooled locally before they go to the bucket: the system's temporary directory, as for
        # temporary_file().
        self.incoming = Path(tempfile.gettempdir())

    @classmethod
    def from_url(cls, url: str) -> S3Store:
        parts = urlsplit(url)
        if not parts.netloc:
            raise ValueError("an S3 storage URL names a bucket: s3://bucket/prefix")
        return cls(boto3.session.Session().client("s3", config=CLIENT_CONFIG), parts.netloc, parts.path)

    def __repr__(self) -> str:
        return f"S3Store(s3://{self.bucket}/{self.prefix})"

    def _key(self, sha256: str) -> str:
        check_sha256(sha256)
        return "/".join(part for part in (self.prefix, sha256[:2], sha256) if part)

    def temporary_file(self) -> tuple[BinaryIO, Path]:
        handle, name = tempfile.mkstemp(prefix="quittance-doc-", suffix=".part")
        return os.fdopen(handle, "wb"), Path(name)

    def store_file(self, source: Path) -> StoredFile:
        """Upload a finished temporary file under its hash. The source is consumed."""
        try:
            stored = hash_file(source)
            if not self.exists(stored.sha256):
                self.client.upload_file(str(source), self.bucket, self._key(stored.sha256),
                                        ExtraArgs={"ContentType": "application/octet-stream"})
            return stored
        except (Boto3Error, BotoCoreError, ClientError) as exc:
            raise StorageError(f"document store {self!r}: {exc}") from exc
        finally:
            source.unlink(missing_ok=True)

    def exists(self, sha256: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(sha256))
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return False
            raise StorageError(f"document store {self!r}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"document store {self!r}: {exc}") from exc
        return True

    def iter_bytes(self, sha256: str) -> Iterator[bytes]:
        """The object in chunks of at most 64 KiB: a download never holds it whole in memory."""
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(sha256))["Body"]
        except (Boto3Error, BotoCoreError, ClientError) as exc:
            raise StorageError(f"document store {self!r}: {exc}") from exc
        with body:
            yield from body.iter_chunks(CHUNK)

    def keys(self) -> Iterator[str]:
        start = f"{self.prefix}/" if self.prefix else ""
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start):
                for item in page.get("Contents", []):
                    name = item["Key"].rsplit("/", 1)[-1]
                    if SHA256.fullmatch(name) and item["Key"] == self._key(name):
                        yield name
        except (Boto3Error, BotoCoreError, ClientError) as exc:
            raise StorageError(f"document store {self!r}: {exc}") from exc

    def check_writable(self) -> None:
        """Write and remove a small object (readiness); StorageError when the store refuses either."""
        key = "/".join(part for part in (self.prefix, "readiness", secrets.token_hex(8)) if part)
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=b"ready")
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (Boto3Error, BotoCoreError, ClientError) as exc:
            raise StorageError(f"document store {self!r}: {exc}") from exc
