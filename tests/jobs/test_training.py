"""From a CSV to a served model through the live server and a real Celery worker."""

from __future__ import annotations

import csv
import io

import pytest

from tests.jobs.conftest import classification_csv, regression_csv, wait_for_job
from tests.support import bearer, login

pytestmark = pytest.mark.django_db(transaction=True)

QUICK = {"epochs": 40, "patience": 8, "hidden": [16]}


def test_train_classification_then_predict_records(client, make_user, upload_csv, celery_worker_proc):
    token = login(client, make_user("member"))["access"]
    dataset_id = upload_csv(token, classification_csv())
    response = client.post("/api/v1/jobs/train", headers=bearer(token), json={
        "dataset_id": dataset_id, "target": "label", "task": "classification", "model_name": "churn",
        "hyperparameters": QUICK, "promote": True})
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["state"] == "queued" and job["model"] == "churn"
    done = wait_for_job(client, token, job["id"])
    assert done["state"] == "succeeded", done
    assert done["result"]["version"] == 1 and done["result"]["metrics"]["accuracy"] > 0.8
    assert done["attempts"] == 1 and done["progress"]["epoch"] >= 1

    versions = client.get("/api/v1/models/churn/versions", headers=bearer(token)).json()
    assert [(v["version"], v["stage"]) for v in versions] == [(1, "production")]
    records = [{"x1": 2.0, "x2": 1.0, "city": "Oslo", "flag": True},
               {"x1": -2.0, "x2": -1.0, "city": "Paris", "flag": "no"},
               {"x1": None, "x2": 0.0, "city": "Tromsø", "flag": False}]
    response = client.post("/api/v1/models/churn/predict", json={"inputs": records}, headers=bearer(token))
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    assert [o["label"] for o in outputs[:2]] == ["high", "low"]
    assert all(abs(sum(o["probabilities"].values()) - 1) < 1e-6 for o in outputs)
    for bad, needle in (({"x1": 1, "x2": 1, "city": "Oslo", "flag": True, "extra": 1}, "extra"),
                        ({"x1": 1, "city": "Oslo", "flag": True}, "x2"),
                        ({"x1": "many", "x2": 1, "city": "Oslo", "flag": True}, "x1")):
        response = client.post("/api/v1/models/churn/predict", json={"inputs": [bad]}, headers=bearer(token))
        assert response.status_code == 422, response.text
        assert needle in response.json()["error"]["message"]

    # The same model through batch prediction, written to storage and downloadable.
    response = client.post("/api/v1/jobs/batch-predict", headers=bearer(token),
                           json={"model": "churn", "dataset_id": dataset_id})
    assert response.status_code == 201, response.text
    batch = wait_for_job(client, token, response.json()["id"])
    assert batch["state"] == "succeeded", batch
    download = client.get(f"/api/v1/jobs/{batch['id']}/output", headers=bearer(token))
    assert download.status_code == 200
    rows = list(csv.reader(io.StringIO(download.text)))
    assert rows[0] == ["row", "label", "p_high", "p_low"] and len(rows) == 401


def test_train_regression(client, make_user, upload_csv, celery_worker_proc):
    token = login(client, make_user("member"))["access"]
    dataset_id = upload_csv(token, regression_csv())
    response = client.post("/api/v1/jobs/train", headers=bearer(token), json={
        "dataset_id": dataset_id, "target": "y", "task": "regression", "model_name": "linear",
        "hyperparameters": {"epochs": 80, "patience": 10, "hidden": [16], "lr": 0.01}})
    done = wait_for_job(client, token, response.json()["id"])
    assert done["state"] == "succeeded", done
    assert done["result"]["metrics"]["r2"] > 0.9 and done["result"]["stage"] == "staging"
    response = client.post("/api/v1/models/linear/predict?version=1", json={"inputs": [{"a": 1.0, "b": 0.0}]},
                           headers=bearer(token))
    assert response.status_code == 200, response.text
    assert abs(response.json()["outputs"][0]["value"] - 4.0) < 0.6


def test_bad_job_requests_change_nothing(client, make_user, upload_csv):
    token = login(client, make_user("member"))["access"]
    dataset_id = upload_csv(token, classification_csv(rows=50))
    other = login(client, make_user("member"))["access"]
    base = {"dataset_id": dataset_id, "target": "label", "task": "classification", "model_name": "bad-job"}
    cases = [
        ({**base, "target": "nope"}, 422), ({**base, "task": "regression"}, 422),
        ({**base, "task": "clustering"}, 422), ({**base, "features": ["x1", "ghost"]}, 422),
        ({**base, "features": ["label"]}, 422), ({**base, "hyperparameters": {"epochs": 0}}, 422),
        ({**base, "hyperparameters": {"momentum": 1}}, 422), ({**base, "model_name": "Bad Name"}, 422),
        ({**base, "dataset_id": 999999}, 404),
    ]
    for body, status in cases:
        response = client.post("/api/v1/jobs/train", headers=bearer(token), json=body)
        assert response.status_code == status, (body, response.text)
    assert client.post("/api/v1/jobs/train", headers=bearer(other), json=base).status_code == 404
    viewer = login(client, make_user("viewer"))["access"]
    assert client.post("/api/v1/jobs/train", headers=bearer(viewer), json=base).status_code == 403
    assert client.get("/api/v1/jobs", headers=bearer(token)).json() == []
    assert client.get("/api/v1/models/bad-job", headers=bearer(token)).status_code == 404


def test_cancel_registers_nothing(client, make_user, upload_csv):
    """Cancelled while queued (at once) or while running (at the next epoch): either way it ends
    cancelled and registers no version. Whether a worker is already up depends on test order."""
    token = login(client, make_user("member"))["access"]
    dataset_id = upload_csv(token, classification_csv(rows=2000))
    job = client.post("/api/v1/jobs/train", headers=bearer(token), json={
        "dataset_id": dataset_id, "target": "label", "task": "classification", "model_name": "never",
        "hyperparameters": {"epochs": 200, "patience": 200, "batch_size": 16}}).json()
    response = client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=bearer(token))
    assert response.status_code == 200, response.text
    assert response.json()["state"] in ("cancelled", "running") and response.json()["cancel_requested"]
    done = wait_for_job(client, token, job["id"], timeout=120)
    assert done["state"] == "cancelled", done
    assert client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=bearer(token)).status_code == 409
    assert client.get("/api/v1/models/never/versions", headers=bearer(token)).json() == []
    other = login(client, make_user("member"))["access"]
    assert client.get(f"/api/v1/jobs/{job['id']}", headers=bearer(other)).status_code == 404
    assert client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=bearer(other)).status_code == 404


def test_running_job_is_cancelled_at_an_epoch(client, make_user, upload_csv, celery_worker_proc):
    import time

    token = login(client, make_user("member"))["access"]
    dataset_id = upload_csv(token, classification_csv(rows=2000))
    job = client.post("/api/v1/jobs/train", headers=bearer(token), json={
        "dataset_id": dataset_id, "target": "label", "task": "classification", "model_name": "stopped",
        "hyperparameters": {"epochs": 200, "patience": 200, "batch_size": 16}}).json()
    deadline = time.monotonic() + 60
    while client.get(f"/api/v1/jobs/{job['id']}", headers=bearer(token)).json()["progress"].get("epoch", 0) < 1:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=bearer(token)).json()["state"] == "running"
    done = wait_for_job(client, token, job["id"], timeout=60)
    assert done["state"] == "cancelled" and done["progress"]["epoch"] < 200
    assert client.get("/api/v1/models/stopped/versions", headers=bearer(token)).json() == []
