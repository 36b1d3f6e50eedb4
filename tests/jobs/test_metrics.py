"""GET /api/v1/jobs/{id}/metrics: a finished job's curves from its rows, with the event log gone."""

from __future__ import annotations

import os

import pytest
import redis

from realtime import bus
from tests.jobs.conftest import regression_csv, wait_for_job
from tests.support import bearer, login

pytestmark = pytest.mark.django_db(transaction=True)


def test_finished_job_curves_load_without_the_event_log(client, make_user, upload_csv, celery_worker_proc):
    token = login(client, make_user("member"))["access"]
    dataset_id = upload_csv(token, regression_csv())
    response = client.post("/api/v1/jobs/train", headers=bearer(token), json={
        "dataset_id": dataset_id, "target": "y", "task": "regression", "model_name": "curves",
        "hyperparameters": {"epochs": 12, "patience": 50, "hidden": [8], "lr": 0.01}})
    assert response.status_code == 201, response.text
    job = wait_for_job(client, token, response.json()["id"])
    assert job["state"] == "succeeded", job
    redis.Redis.from_url(os.environ["REDIS_URL"]).delete(*bus._keys_with_ids(f"job:{job['id']}"))

    response = client.get(f"/api/v1/jobs/{job['id']}/metrics", headers=bearer(token))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["job_id"] == job["id"] and body["state"] == "succeeded"
    epochs = body["epochs"]
    assert [e["epoch"] for e in epochs] == list(range(1, 13))
    assert all(e["metric_name"] == "rmse" and e["train_loss"] > 0 and e["val_loss"] > 0 for e in epochs)
    assert epochs[-1]["val_loss"] < epochs[0]["val_loss"]
    assert [e["elapsed_s"] for e in epochs] == sorted(e["elapsed_s"] for e in epochs)
    last = job["progress"]
    assert (epochs[-1]["train_loss"], epochs[-1]["metric"]) == (last["train_loss"], last["metric"])

    other = login(client, make_user("member"))["access"]
    assert client.get(f"/api/v1/jobs/{job['id']}/metrics", headers=bearer(other)).status_code == 404
    assert client.get("/api/v1/jobs/999999999/metrics", headers=bearer(token)).status_code == 404
    assert client.get(f"/api/v1/jobs/{job['id']}/metrics").status_code == 401
