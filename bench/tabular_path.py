"""For bench/run.py: the real users' path. A tabular model trained by Torchwire, called with raw records.

A synthetic churn table (seed 0; numeric, integer and categorical columns, a yes/no target) is trained by
`manage.py train` against the bench's service, the same job `POST /api/v1/jobs/train` runs. The bench
then calls the model with raw records (``{"inputs": [{"age": ..., "city": ...}]}``: the server runs the
feature pipeline) and with the same rows already encoded (a tensor body: no pipeline), so the cost of
the pipeline shows as the difference. The trained version's pipeline and weights are read back from the
service's database and storage to time the pipeline and the forward pass alone, in this process.
"""

from __future__ import annotations

import csv
import json
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch

from inference import architectures
from tabular.features import FeaturePipeline

NAME = "tabular"
CITIES = ("Oslo", "Bergen", "Lima", "Pune", "Kyoto", "Accra")
PLANS = ("basic", "pro", "team")
ROWS = 3000
HYPERPARAMETERS = {"epochs": 20, "seed": 0}


def churn_table(path: Path, rows: int = ROWS) -> None:
    """A churn table whose label depends on every column, with noise, so the model has something to learn."""
    rng = np.random.default_rng(0)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["age", "income", "city", "plan", "tenure_months", "churn"])
        for _ in range(rows):
            age = int(rng.integers(18, 81))
            income = round(float(rng.lognormal(10.6, 0.5)), 2)
            city = CITIES[int(rng.integers(len(CITIES)))]
            plan = PLANS[int(rng.integers(len(PLANS)))]
            tenure = int(rng.integers(0, 121))
            logit = (0.04 * (40 - age) - 0.02 * tenure + (0.8 if plan == "basic" else -0.3)
                     + (0.5 if city in ("Lima", "Accra") else 0.0) - 0.3 * (income / 50_000) + rng.normal(0, 0.7))
            writer.writerow([age, income, city, plan, tenure, "yes" if logit > 0 else "no"])


def example_record() -> dict[str, Any]:
    return {"age": 31, "income": 52_000.0, "city": "Oslo", "plan": "pro", "tenure_months": 14}


def train(env: dict[str, str], root: Path, workdir: Path) -> str:
    """Trains and promotes ``tabular`` in the service's database and storage; returns the command's summary."""
    path = workdir / "churn.csv"
    churn_table(path)
    result = subprocess.run(
        [sys.executable, "manage.py", "train", "--dataset", str(path), "--target", "churn", "--task", "classification",
         "--model", NAME, "--user", "admin", "--hyperparameters", json.dumps(HYPERPARAMETERS), "--promote"],
        cwd=root, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py train failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result.stdout.strip().splitlines()[-1]


class Trained:
    """The production version of ``tabular`` as the service stored it."""

    def __init__(self, database: Path, storage: Path) -> None:
        with sqlite3.connect(database) as db:
            row = db.execute(
                "SELECT v.architecture, v.config, v.extras, v.artifact_key FROM registry_modelversion v "
                "JOIN registry_mlmodel m ON v.model_id = m.id WHERE m.name = ? AND v.stage = 'production'",
                (NAME,),
            ).fetchone()
        if row is None:
            raise RuntimeError(f"no production version of {NAME!r} in {database}")
        self.architecture: str = row[0]  # the one the version was trained as (tabular-mlp), as serving builds it
        self.config: dict[str, Any] = json.loads(row[1])
        self.pipeline = FeaturePipeline.from_dict(json.loads(row[2])["pipeline"])
        module = architectures.build(self.architecture, self.config).eval()
        module.load_state_dict(safetensors.torch.load_file(str(storage / row[3])))
        self.module = module

    def features(self, record: dict[str, Any]) -> list[float]:
        return [float(x) for x in self.pipeline.transform_records([record])[0]]

    def measure(self, seconds: float) -> dict[str, float]:
        """The pipeline and the forward pass alone: µs per one-record transform, rows/s at batch 1 and 64."""
        record = example_record()
        timings = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            self.pipeline.transform_records([record])
            timings.append(time.perf_counter() - t0)
        out: dict[str, float] = {"pipeline_us_per_record": 1e6 * statistics.median(timings)}
        width = self.pipeline.n_features
        torch.set_num_threads(1)
        with torch.inference_mode():
            for batch in (1, 64):
                x = torch.randn(batch, width)
                for _ in range(20):
                    self.module(x)
                passes, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < seconds / 2:
                    self.module(x)
                    passes += 1
                out[f"rows_per_s_batch{batch}"] = batch * passes / (time.perf_counter() - t0)
        return out


def records_body() -> bytes:
    return json.dumps({"inputs": [example_record()]}, separators=(",", ":")).encode()


def tensor_body(trained: Trained) -> bytes:
    return json.dumps({"inputs": [trained.features(example_record())]}, separators=(",", ":")).encode()
