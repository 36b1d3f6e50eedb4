"""`manage.py backup` and `manage.py restore`: a round trip into a fresh database that then serves the
model, on local files and on S3; refusal of a non-empty target; a corrupted artifact named, nothing written."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
import torch

from inference.architectures import build
from tests.models import MLP
from tests.registry.test_api import create_model, manifest, mlp_bytes, publish
from tests.s3 import CREDENTIALS
from tests.support import Account, bearer, child_env, login, start_uvicorn

pytestmark = pytest.mark.django_db(transaction=True)

ROWS = [[0.1, 0.2, 0.3, 0.4], [1.0, -1.0, 0.5, 2.0]]
CSV = b"age,city,income\n31,Oslo,52000\n45,Bergen,61000\n28,Paris,40000\n"


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    from tests.envsetup import ROOT

    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=child_env(env), capture_output=True,
                          text=True, timeout=120)


def backup(env: dict[str, str]) -> str:
    result = manage("backup", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    prefix = result.stdout.strip().splitlines()[-1]
    assert prefix.startswith("backups/"), result.stdout
    return prefix


def _postgres(url: str) -> bool:
    return url.startswith(("postgres://", "postgresql://"))


def _conninfo(url: str, dbname: str | None = None) -> str:
    parts = urlsplit(url)._replace(scheme="postgresql")
    return urlunsplit(parts._replace(path=f"/{dbname}") if dbname else parts)


def table_count(url: str) -> int:
    if _postgres(url):
        with psycopg.connect(_conninfo(url)) as conn:
            row = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
            return int(row[0]) if row else 0
    path = Path(urlsplit(url).path)
    if not path.exists():
        return 0
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0])


@pytest.fixture
def empty_database(service_env, tmp_path) -> Iterator[Callable[[], str]]:
    """Makes new, empty databases beside the test database (same server); drops them afterwards."""
    source = service_env["DATABASE_URL"]
    made: list[str] = []

    def make() -> str:
        if not _postgres(source):
            url = f"sqlite:///{tmp_path / f'restore-{len(made)}.sqlite3'}"
        else:
            name = f"torchwire_restore_{os.getpid()}_{len(made)}"
            with psycopg.connect(_conninfo(source, "postgres"), autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                conn.execute(f"CREATE DATABASE {name}")
            url = urlunsplit(urlsplit(source)._replace(path=f"/{name}"))
        made.append(url)
        return url

    yield make
    if _postgres(source):
        with psycopg.connect(_conninfo(source, "postgres"), autocommit=True) as conn:
            for url in made:
                conn.execute(f"DROP DATABASE IF EXISTS {urlsplit(url).path.lstrip('/')} WITH (FORCE)")


def expected_outputs(seed: int) -> list[list[float]]:
    torch.manual_seed(seed)
    module = build("mlp", MLP).eval()
    with torch.no_grad():
        return module(torch.tensor(ROWS, dtype=torch.float32)).tolist()


def assert_serves(env: dict[str, str], account: Account, name: str, seed: int) -> None:
    """A fresh server on ``env``: the account logs in (its row came back) and the model answers."""
    server = start_uvicorn(env)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            token = login(client, account)["access"]
            response = client.post(f"/api/v1/models/{name}/predict", json={"inputs": ROWS}, headers=bearer(token))
            assert response.status_code == 200, response.text + server.log_tail()
            outputs = response.json()["outputs"]
    finally:
        server.stop()
    assert all(math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-5)
               for got, want in zip(outputs, expected_outputs(seed), strict=True)
               for a, b in zip(got, want, strict=True))


def local_root() -> Path:
    return Path(os.environ["STORAGE_URL"].removeprefix("file://"))


def test_round_trip_restores_users_models_and_datasets(client, publish_model, make_user, service_env,
                                                      empty_database):
    from app.datasets.models import Dataset
    from app.registry.models import ModelVersion

    publish_model("backup-mlp", seeds=(0, 5))
    member = make_user("member")
    token = login(client, member)["access"]
    uploaded = client.post("/api/v1/datasets", headers=bearer(token),
                           files={"file": ("people.csv", io.BytesIO(CSV), "text/csv")})
    assert uploaded.status_code == 201, uploaded.text

    prefix = backup(service_env)
    saved = json.loads((local_root() / prefix / "manifest.json").read_text())
    dump = (local_root() / saved["database"]["key"]).read_bytes()
    assert saved["database"]["sha256"] == hashlib.sha256(dump).hexdigest()
    assert saved["database"]["engine"] == ("postgresql" if _postgres(service_env["DATABASE_URL"]) else "sqlite")
    listed = {entry["key"]: entry for entry in saved["objects"]}
    for version in ModelVersion.objects.filter(model__name="backup-mlp"):
        entry = listed[version.artifact_key]
        assert (entry["kind"], entry["sha256"], entry["size"]) == ("artifact", version.artifact_sha256,
                                                                   version.artifact_size)
        assert entry["ref"] == f"model backup-mlp version {version.number}"
    dataset = Dataset.objects.get(owner_id=member.pk)
    assert listed[dataset.storage_key]["sha256"] == dataset.sha256 == hashlib.sha256(CSV).hexdigest()

    target = empty_database()
    restored = manage("restore", prefix, env={**service_env, "DATABASE_URL": target})
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert f"{len(listed)} of {len(listed)} stored objects verified" in restored.stdout
    assert_serves({**service_env, "DATABASE_URL": target}, member, "backup-mlp", seed=5)


def test_restore_refuses_a_database_that_is_not_empty(service_env, make_user):
    from app.accounts.models import User

    account = make_user("member")
    prefix = backup(service_env)
    result = manage("restore", prefix.removeprefix("backups/"), env=service_env)
    assert result.returncode != 0
    assert "is not empty" in result.stderr, result.stderr
    assert User.objects.filter(pk=account.pk).exists()

    missing = manage("restore", "20000101T000000Z", env=service_env)
    assert missing.returncode != 0 and "no manifest.json under backups/20000101T000000Z" in missing.stderr


def test_corrupted_artifact_is_named_and_nothing_is_restored(publish_model, service_env, empty_database):
    from app.registry.models import ModelVersion

    publish_model("backup-corrupt")
    version = ModelVersion.objects.get(model__name="backup-corrupt")
    prefix = backup(service_env)
    path = local_root() / version.artifact_key
    original = path.read_bytes()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0x01
    path.write_bytes(bytes(flipped))
    try:
        target = empty_database()
        env = {**service_env, "DATABASE_URL": target}
        result = manage("restore", "latest", env=env)
        assert result.returncode != 0
        assert version.artifact_key in result.stderr and "model backup-corrupt version 1" in result.stderr
        assert "the database was not restored" in result.stderr, result.stderr
        assert table_count(target) == 0

        forced = manage("restore", prefix, "--ignore-mismatches", env=env)
        assert forced.returncode == 0, forced.stdout + forced.stderr
        assert version.artifact_key in forced.stderr and "sha256 is" in forced.stderr
        assert table_count(target) > 0
    finally:
        path.write_bytes(original)


def test_round_trip_on_s3(service_env, s3_server, s3_bucket, make_user, empty_database):
    env = {**service_env, **CREDENTIALS, "STORAGE_URL": f"s3://{s3_bucket}/tw",
           "AWS_ENDPOINT_URL": s3_server.endpoint_url}
    account = make_user("maintainer")
    source = start_uvicorn(env)
    try:
        with httpx.Client(base_url=source.url, timeout=30) as client:
            token = login(client, account)["access"]
            assert create_model(client, token, "backup-s3", visibility="public").status_code == 201
            response = publish(client, token, "backup-s3", mlp_bytes(seed=7), manifest())
            assert response.status_code == 201, response.text
            promoted = client.post("/api/v1/models/backup-s3/versions/1/promote", json={"stage": "production"},
                                   headers=bearer(token))
            assert promoted.status_code == 200, promoted.text
    finally:
        source.stop()

    prefix = backup(env)
    stored = s3_server.objects(s3_bucket, f"tw/{prefix}/")
    assert set(stored) == {f"tw/{prefix}/database.dump", f"tw/{prefix}/manifest.json"}

    target = empty_database()
    restored = manage("restore", "latest", env={**env, "DATABASE_URL": target})
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "1 of 1 stored objects verified" in restored.stdout
    assert_serves({**env, "DATABASE_URL": target}, account, "backup-s3", seed=7)
