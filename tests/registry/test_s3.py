"""The registry against S3: a real uvicorn configured with STORAGE_URL=s3://… and a moto server."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import httpx
import pytest

from tests.registry.test_api import create_model, manifest, mlp_bytes, publish
from tests.s3 import CREDENTIALS, MotoS3
from tests.support import Server, login, start_uvicorn

pytestmark = pytest.mark.django_db(transaction=True)


def s3_env(service_env: dict[str, str], s3: MotoS3, bucket: str) -> dict[str, str]:
    return {**service_env, **CREDENTIALS, "STORAGE_URL": f"s3://{bucket}/artifacts",
            "AWS_ENDPOINT_URL": s3.endpoint_url}


@pytest.fixture
def s3_service(service_env, s3_server, s3_bucket) -> Iterator[Server]:
    server = start_uvicorn(s3_env(service_env, s3_server, s3_bucket))
    yield server
    server.stop()


def test_publish_stores_the_artifact_in_s3(s3_service, s3_server, s3_bucket, make_user):
    with httpx.Client(base_url=s3_service.url, timeout=30) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["storage"] == "ok"

        token = login(client, make_user("maintainer"))["access"]
        assert create_model(client, token, "s3-model").status_code == 201
        artifact = mlp_bytes()
        response = publish(client, token, "s3-model", artifact, manifest())
        assert response.status_code == 201, response.text
        version = response.json()

    assert version["artifact_sha256"] == hashlib.sha256(artifact).hexdigest()
    stored = s3_server.objects(s3_bucket)
    assert list(stored.values()) == [len(artifact)], stored
    (key,) = stored
    assert key.startswith("artifacts/models/s3-model/") and key.endswith(".safetensors")
    obj = s3_server.client().get_object(Bucket=s3_bucket, Key=key)
    assert hashlib.sha256(obj["Body"].read()).hexdigest() == version["artifact_sha256"]
    assert obj["Metadata"]["sha256"] == version["artifact_sha256"]


def test_readyz_reports_a_missing_bucket(service_env, s3_server, s3_bucket):
    server = start_uvicorn(s3_env(service_env, s3_server, f"{s3_bucket}-missing"))
    try:
        response = httpx.get(server.url + "/readyz", timeout=30)
    finally:
        server.stop()
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["database"] == body["redis"] == "ok"
    assert isinstance(body["storage"], str) and body["storage"] != "ok"
    assert "404" in body["storage"] or "Not Found" in body["storage"], body["storage"]
