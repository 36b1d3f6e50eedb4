"""Batch prediction through the live server and a real Celery worker: refused at creation when the model
cannot run one, and its CSV never carries a formula, even to another user of a public model."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from tests.jobs.conftest import classification_csv, regression_csv, wait_for_job
from tests.registry.test_api import mlp_bytes, publish
from tests.serverlog import no_traceback
from tests.support import bearer, login

pytestmark = pytest.mark.django_db(transaction=True)

QUICK = {"epochs": 30, "patience": 5, "hidden": [16]}
# Class labels an attacker puts in training data, as seen in the wild (OWASP CSV injection).
LABELS = ["=cmd|' /C calc'!A0", "+SUM(1;2)", "@HYPERLINK(\"http://evil.example/?x\",\"open\")"]


def formula_labels_csv(rows: int = 300, seed: int = 3) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["x1", "x2", "label"])
    for _ in range(rows):
        x1, x2 = rng.normal(), rng.normal()
        writer.writerow([f"{x1:.4f}", f"{x2:.4f}", LABELS[0 if x1 > 0.5 else 1 if x2 > 0 else 2]])
    return buffer.getvalue().encode()


def features_csv(rows: int = 50, seed: int = 4) -> bytes:
    rng = np.random.default_rng(seed)
    return ("x1,x2\n" + "".join(f"{rng.normal():.4f},{rng.normal():.4f}\n" for _ in range(rows))).encode()


def train(client, token: str, dataset_id: int, name: str, target: str, task: str) -> None:
    response = client.post("/api/v1/jobs/train", headers=bearer(token), json={
        "dataset_id": dataset_id, "target": target, "task": task, "model_name": name, "hyperparameters": QUICK,
        "promote": True})
    assert response.status_code == 201, response.text
    done = wait_for_job(client, token, response.json()["id"])
    assert done["state"] == "succeeded", done


def batch_csv(client, token: str, model: str, dataset_id: int) -> list[list[str]]:
    response = client.post("/api/v1/jobs/batch-predict", headers=bearer(token),
                           json={"model": model, "dataset_id": dataset_id})
    assert response.status_code == 201, response.text
    job = wait_for_job(client, token, response.json()["id"])
    assert job["state"] == "succeeded", job
    download = client.get(f"/api/v1/jobs/{job['id']}/output", headers=bearer(token))
    assert download.status_code == 200, download.text
    return list(csv.reader(io.StringIO(download.text, newline="")))


def test_formula_labels_reach_no_csv_cell(client, make_user, upload_csv, celery_worker_proc):
    owner = login(client, make_user("maintainer"))["access"]
    train(client, owner, upload_csv(owner, formula_labels_csv()), "formulas", "label", "classification")
    assert client.patch("/api/v1/models/formulas", json={"visibility": "public"},
                        headers=bearer(owner)).status_code == 200

    # Another user calls the public model on their own rows and downloads the result.
    victim = login(client, make_user("member"))["access"]
    rows = batch_csv(client, victim, "formulas", upload_csv(victim, features_csv()))
    header, body = rows[0], rows[1:]
    assert header[:2] == ["row", "label"] and sorted(header[2:]) == sorted(f"p_{label}" for label in LABELS)
    assert len(body) == 50
    assert {row[1] for row in body} <= {"'" + label for label in LABELS}
    for row in rows:
        for cell in row:
            assert not cell or cell[0] not in "=+-@\t\r" or float(cell) <= 0, row
    assert all(0 <= float(p) <= 1 for row in body for p in row[2:])


def test_negative_predictions_stay_numbers(client, make_user, upload_csv, celery_worker_proc):
    token = login(client, make_user("member"))["access"]
    dataset_id = upload_csv(token, regression_csv(rows=200))
    train(client, token, dataset_id, "signed", "y", "regression")
    rows = batch_csv(client, token, "signed", dataset_id)
    values = [row[1] for row in rows[1:]]
    assert rows[0] == ["row", "value"] and len(values) == 200
    assert any(v.startswith("-") for v in values)
    assert all(float(v) == float(v) for v in values)  # numbers, never "'-1.5"


def test_models_that_cannot_batch_predict_are_refused_at_creation(client, make_user, upload_csv, server):
    maintainer = login(client, make_user("maintainer"))["access"]
    member = login(client, make_user("member"))["access"]
    dataset_id = upload_csv(member, features_csv(rows=5))
    mlp = {"in_features": 4, "hidden": [8], "out_features": 3}
    manifest = json.dumps({"format": "safetensors", "architecture": "mlp", "config": mlp})
    for name in ("tensors-only", "unpromoted"):
        assert client.post("/api/v1/models", json={"name": name, "visibility": "public"},
                           headers=bearer(maintainer)).status_code == 201
        assert publish(client, maintainer, name, mlp_bytes(mlp), manifest).status_code == 201
    assert client.post("/api/v1/models/tensors-only/versions/1/promote", json={"stage": "production"},
                       headers=bearer(maintainer)).status_code == 200

    cases: list[tuple[dict[str, object], int, str | None]] = [
        ({"model": "tensors-only"}, 422, "model"),  # no feature pipeline: tensors in, not CSV rows
        ({"model": "tensors-only", "version": 1}, 422, "model"),
        ({"model": "unpromoted"}, 422, "version"),  # no production version
        ({"model": "unpromoted", "version": 9}, 404, None),
        ({"model": "no-such-model"}, 404, None),
    ]
    with no_traceback(server.log):
        for body, status, field in cases:
            response = client.post("/api/v1/jobs/batch-predict", headers=bearer(member),
                                   json={**body, "dataset_id": dataset_id})
            assert response.status_code == status, (body, response.text)
            if field:
                assert response.json()["error"]["details"][0]["field"] == field, response.text
    assert client.get("/api/v1/jobs", headers=bearer(member)).json() == []


def test_dataset_without_the_model_columns_is_refused(client, make_user, upload_csv, celery_worker_proc, server):
    token = login(client, make_user("member"))["access"]
    train(client, token, upload_csv(token, classification_csv(rows=120)), "needs-city", "label", "classification")
    other_columns = upload_csv(token, features_csv(rows=5))  # x1, x2: no city, no flag
    with no_traceback(server.log):
        response = client.post("/api/v1/jobs/batch-predict", headers=bearer(token),
                               json={"model": "needs-city", "dataset_id": other_columns})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["details"][0]["field"] == "dataset_id" and "city" in error["message"], error
    assert [j["kind"] for j in client.get("/api/v1/jobs", headers=bearer(token)).json()] == ["train"]
