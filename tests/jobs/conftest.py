from __future__ import annotations

import io
import time

import httpx
import numpy as np
import pytest

from tests.support import bearer


def classification_csv(rows: int = 400, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    cities = ["Oslo", "Bergen", "Paris"]
    lines = ["x1,x2,city,flag,label"]
    for _ in range(rows):
        x1, x2 = rng.normal(), rng.normal()
        city = cities[int(rng.integers(0, 3))]
        flag = bool(rng.integers(0, 2))
        score = x1 + 0.5 * x2 + (1.0 if city == "Oslo" else 0.0) - 0.5
        lines.append(f"{x1:.4f},{x2:.4f},{city},{'yes' if flag else 'no'},{'high' if score > 0 else 'low'}")
    return ("\n".join(lines) + "\n").encode()


def regression_csv(rows: int = 300, seed: int = 1) -> bytes:
    rng = np.random.default_rng(seed)
    lines = ["a,b,y"]
    for _ in range(rows):
        a, b = rng.normal(), rng.normal()
        lines.append(f"{a:.4f},{b:.4f},{3 * a - 2 * b + 1 + rng.normal() * 0.05:.4f}")
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def upload_csv(client):
    def upload(token: str, content: bytes, name: str = "train.csv") -> int:
        response = client.post("/api/v1/datasets", headers=bearer(token),
                               files={"file": (name, io.BytesIO(content), "text/csv")})
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    return upload


def wait_for_job(client: httpx.Client, token: str, job_id: int, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/jobs/{job_id}", headers=bearer(token)).json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish: {job}")
