"""Pytest plugin: a real moto S3 server on a loopback port, and a fresh bucket per test.

moto runs as its own process (``python -m moto.server``) so that importing it cannot patch botocore in the
test process; every client here names the endpoint and the dummy credentials explicitly.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.envsetup import RUN_DIR, free_port
from tests.support import child_env

REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}


@dataclass
class MotoS3:
    endpoint_url: str
    proc: subprocess.Popen[bytes]

    def client(self) -> Any:
        """A synchronous boto3 client for arranging and inspecting buckets from tests."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=REGION,
                            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])

    def objects(self, bucket: str, prefix: str = "") -> dict[str, int]:
        """Key -> size of every object in ``bucket`` under ``prefix``."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return {obj["Key"]: obj["Size"] for page in pages for obj in page.get("Contents", [])}


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoS3]:
    port = free_port()
    log = RUN_DIR / f"moto-{port}.log"
    env = child_env({**CREDENTIALS, "AWS_ENDPOINT_URL": None, "AWS_PROFILE": None, "AWS_SESSION_TOKEN": None})
    with log.open("wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                env=env, stdout=fh, stderr=subprocess.STDOUT)
    server = MotoS3(endpoint_url=f"http://127.0.0.1:{port}", proc=proc)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
            try:
                if httpx.get(f"{server.endpoint_url}/moto-api/", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto did not start on {server.endpoint_url}:\n{log.read_text(errors='replace')}")
            time.sleep(0.1)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture
def s3_bucket(s3_server: MotoS3, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new empty bucket; the test process gets the dummy credentials that aioboto3 reads from the
    environment (S3Storage takes no credentials of its own)."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    bucket = f"test-{uuid.uuid4().hex[:20]}"
    s3_server.client().create_bucket(Bucket=bucket)
    return bucket
