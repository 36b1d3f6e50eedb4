"""Exactly once under crashes: a worker process killed with SIGKILL mid-training."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.jobs.conftest import classification_csv, wait_for_job
from tests.support import bearer, child_pids, login

pytestmark = pytest.mark.django_db(transaction=True)


def test_sigkill_during_training_still_ends_with_one_version(client, make_user, upload_csv, celery_worker_proc):
    token = login(client, make_user("member"))["access"]
    dataset_id = upload_csv(token, classification_csv(rows=2000))
    job = client.post("/api/v1/jobs/train", headers=bearer(token), json={
        "dataset_id": dataset_id, "target": "label", "task": "classification", "model_name": "crashy",
        "hyperparameters": {"epochs": 60, "patience": 60, "hidden": [64, 64], "batch_size": 16}}).json()

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = client.get(f"/api/v1/jobs/{job['id']}", headers=bearer(token)).json()
        if state["state"] == "running" and state["progress"].get("epoch", 0) >= 2:
            break
        assert state["state"] in ("queued", "running"), state
        time.sleep(0.1)
    else:
        raise AssertionError("training never reached epoch 2")
    children = child_pids(celery_worker_proc.pid)
    assert children, "the prefork worker has no pool process"
    for pid in children:
        os.kill(pid, signal.SIGKILL)

    done = wait_for_job(client, token, job["id"], timeout=240)
    assert done["state"] == "succeeded", done
    assert done["attempts"] == 2, done
    versions = client.get("/api/v1/models/crashy/versions", headers=bearer(token)).json()
    assert [v["version"] for v in versions] == [1]
    assert celery_worker_proc.poll() is None, "the worker itself survives the loss of a pool process"
