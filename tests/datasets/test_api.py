"""Dataset uploads: profiles for good files, 422 naming the problem and line for bad ones, owner-only."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from tests.support import bearer, login

pytestmark = pytest.mark.django_db(transaction=True)

GOOD = b"age,city,member,income\n31,Oslo,yes,52000\n45,Bergen,no,61000\n,Oslo,yes,nan\n28,Paris,no,40000\n"


def upload(client, token, content: bytes, name: str = "data.csv"):
    return client.post("/api/v1/datasets", headers=bearer(token),
                       files={"file": (name, io.BytesIO(content), "text/csv")})


def _stored_files() -> list[Path]:
    root = Path(os.environ["STORAGE_URL"].removeprefix("file://")) / "datasets"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_upload_profile_preview_delete(client, make_user):
    token = login(client, make_user())["access"]
    response = upload(client, token, GOOD)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["row_count"] == 4 and body["name"] == "data.csv"
    columns = {c["name"]: c for c in body["columns"]}
    assert [c["name"] for c in body["columns"]] == ["age", "city", "member", "income"]
    assert columns["age"]["type"] == "numeric" and columns["age"]["missing"] == 1
    assert columns["city"]["type"] == "categorical"
    assert columns["member"]["type"] == "boolean"
    assert columns["income"]["missing"] == 1  # "nan" counts as missing
    dataset_id = body["id"]
    assert client.get(f"/api/v1/datasets/{dataset_id}", headers=bearer(token)).json()["row_count"] == 4
    preview = client.get(f"/api/v1/datasets/{dataset_id}/preview?rows=2", headers=bearer(token)).json()
    assert len(preview["rows"]) == 2 and preview["columns"] == ["age", "city", "member", "income"]
    assert client.get(f"/api/v1/datasets/{dataset_id}/preview?rows=0", headers=bearer(token)).status_code == 422
    assert [d["id"] for d in client.get("/api/v1/datasets", headers=bearer(token)).json()] == [dataset_id]
    other = login(client, make_user())["access"]
    assert client.get(f"/api/v1/datasets/{dataset_id}", headers=bearer(other)).status_code == 404
    assert client.delete(f"/api/v1/datasets/{dataset_id}", headers=bearer(other)).status_code == 404
    before = len(_stored_files())
    assert client.delete(f"/api/v1/datasets/{dataset_id}", headers=bearer(token)).status_code == 204
    assert client.get(f"/api/v1/datasets/{dataset_id}", headers=bearer(token)).status_code == 404
    assert len(_stored_files()) == before - 1


@pytest.mark.parametrize(
    ("content", "needle", "line"),
    [
        (b"", "name the columns", 1),
        (b"\n\n", "name the columns", 1),
        (b"a,b\n1,2\n3\n", "fields", 3),
        (b"a,a\n1,2\n", "duplicate", 1),
        (b"a,b\n1,2\n\xff\xfe,3\n", "UTF-8", 3),
        (b"a,b\n1,\x002\n", "binary", 2),
        (b"a,b\n", "no data rows", None),
    ],
)
def test_bad_files_are_refused_and_store_nothing(client, make_user, content, needle, line):
    token = login(client, make_user())["access"]
    before = len(_stored_files())
    response = upload(client, token, content)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert needle.lower() in error["message"].lower(), error
    if line is not None:
        assert f"line {line}" in error["message"] or (error.get("details") or {}).get("line") == line, error
    assert client.get("/api/v1/datasets", headers=bearer(token)).json() == []
    assert len(_stored_files()) == before


def test_viewer_cannot_upload(client, make_user):
    token = login(client, make_user("viewer"))["access"]
    assert upload(client, token, GOOD).status_code == 403


def test_missing_file_field(client, make_user):
    token = login(client, make_user())["access"]
    response = client.post("/api/v1/datasets", headers=bearer(token), files={"other": ("x.csv", b"a\n1\n")})
    assert response.status_code == 422
