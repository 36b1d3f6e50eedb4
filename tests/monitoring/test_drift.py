"""Model monitoring end to end, through the live server and a real Celery worker: a trained model gets
traffic from its training distribution (no drift), then with one feature shifted (drift for that feature
and only that one), then feedback that makes its accuracy fall."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import redis

from app.core.tasks import celery_client
from realtime import bus
from tests.jobs.conftest import classification_csv, wait_for_job
from tests.support import Server, bearer, login, start_uvicorn

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def unbudgeted_server(service_env: dict[str, str]) -> Iterator[Server]:
    """This test sends 800 rows in a second or two and checks every one is recorded (and labels them all
    with feedback): more than the default row budget, which a server process sets from its environment."""
    srv = start_uvicorn({**service_env, "TORCHWIRE_PREDICTION_MAX_ROWS_PER_SECOND": "0"})
    yield srv
    srv.stop()


@pytest.fixture
def client(unbudgeted_server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=unbudgeted_server.url, timeout=30) as c:
        yield c

QUICK = {"epochs": 40, "patience": 8, "hidden": [16]}
CITIES = ["Oslo", "Bergen", "Paris"]
FEATURES = {"x1", "x2", "city", "flag"}


def traffic(rows: int, seed: int, x1_shift: float = 0.0) -> tuple[list[dict], list[str]]:
    """Records drawn as `classification_csv` draws its rows, and their true labels under that rule."""
    rng = np.random.default_rng(seed)
    records, truth = [], []
    for _ in range(rows):
        x1, x2 = rng.normal(), rng.normal()
        city = CITIES[int(rng.integers(0, 3))]
        flag = bool(rng.integers(0, 2))
        score = x1 + 0.5 * x2 + (1.0 if city == "Oslo" else 0.0) - 0.5
        records.append({"x1": round(x1 + x1_shift, 4), "x2": round(x2, 4), "city": city, "flag": flag})
        truth.append("high" if score > 0 else "low")
    return records, truth


def predict(client, token: str, model: str, records: list[dict], batch: int = 50) -> list[tuple[str, int, str]]:
    """Sends the records in batches; (prediction_id, row, predicted label) per record, in order."""
    answered = []
    for start in range(0, len(records), batch):
        response = client.post(f"/api/v1/models/{model}/predict", json={"inputs": records[start:start + batch]},
                               headers=bearer(token))
        assert response.status_code == 200, response.text
        body = response.json()
        prediction_id = str(uuid.UUID(body["prediction_id"]))
        answered += [(prediction_id, row, output["label"]) for row, output in enumerate(body["outputs"])]
    return answered


def drift_events(model: str, topic: str | None = None) -> list[dict]:
    """The ``drift`` events in the replay log of ``model:<name>`` (or of ``topic``)."""
    key = bus._keys(topic or f"model:{model}")[2]
    log: list = redis.Redis.from_url(os.environ["REDIS_URL"]).xrange(key)  # type: ignore[assignment]
    return [json.loads(fields[b"d"]) for _, fields in log if fields[b"t"] == b"drift"]


def check(client, token: str, model: str) -> dict:
    response = client.post(f"/api/v1/models/{model}/monitoring/check", headers=bearer(token))
    assert response.status_code == 200, response.text
    reports = response.json()["reports"]
    assert [r["version"] for r in reports] == [1], reports
    return reports[0]


def monitoring(client, token: str, model: str) -> dict:
    response = client.get(f"/api/v1/models/{model}/monitoring?window=1h", headers=bearer(token))
    assert response.status_code == 200, response.text
    return response.json()


def test_drift_of_one_feature_and_falling_accuracy(client, make_user, upload_csv, celery_worker_proc):
    member = make_user("member")
    token = login(client, member)["access"]
    name = f"monitored-{uuid.uuid4().hex[:6]}"
    dataset_id = upload_csv(token, classification_csv())
    response = client.post("/api/v1/jobs/train", headers=bearer(token), json={
        "dataset_id": dataset_id, "target": "label", "task": "classification", "model_name": name,
        "hyperparameters": QUICK, "promote": True})
    assert response.status_code == 201, response.text
    done = wait_for_job(client, token, response.json()["id"])
    assert done["state"] == "succeeded", done
    threshold = client.get(f"/api/v1/models/{name}/monitoring/config", headers=bearer(token)).json()["drift_threshold"]
    assert threshold == 0.2

    # Traffic like the training data: nothing drifts.
    usual, usual_truth = traffic(400, seed=101)
    usual_answers = predict(client, token, name, usual)
    bad = client.post(f"/api/v1/models/{name}/predict", json={"inputs": [{**usual[0], "x1": "many"}]},
                      headers=bearer(token))
    assert bad.status_code == 422
    report = check(client, token, name)
    assert report["status"] == "ok" and report["drifted_features"] == [], report
    assert report["sample_count"] == 400
    assert {f["feature"] for f in report["features"]} == FEATURES
    assert all(f["psi"] < threshold for f in report["features"]), report["features"]
    assert sum(report["predictions"]["fractions"].values()) == pytest.approx(1.0, abs=1e-4)
    assert drift_events(name) == []

    # x1 moves four standard deviations: x1 drifts, and nothing else does.
    shifted, _ = traffic(400, seed=202, x1_shift=4.0)
    shifted_answers = predict(client, token, name, shifted)
    report = check(client, token, name)
    assert report["status"] == "drift" and report["drifted"], report
    assert report["drifted_features"] == ["x1"]
    psi = {f["feature"]: f["psi"] for f in report["features"]}
    assert psi["x1"] > 5 * threshold, psi
    assert all(value < threshold for feature, value in psi.items() if feature != "x1"), psi
    assert report["sample_count"] == 800
    events = drift_events(name)
    assert len(events) == 1, events
    assert events[0]["report_id"] == report["id"] and list(events[0]["features"]) == ["x1"]
    # The owner hears of it on their own topic too, and the console's alert list shows it.
    assert [e["report_id"] for e in drift_events(name, f"user:{member.username}")] == [report["id"]]
    alerts = client.get("/api/v1/monitoring/alerts", headers=bearer(token)).json()
    assert [(a["model"], a["id"], a["drifted_features"]) for a in alerts] == [(name, report["id"], ["x1"])]
    # Drift over time: both checks, oldest first, with PSI per feature.
    history = client.get(f"/api/v1/models/{name}/monitoring/reports", headers=bearer(token))
    assert history.status_code == 200, history.text
    assert [(r["status"], r["version"]) for r in history.json()] == [("ok", 1), ("drift", 1)]
    assert history.json()[0]["psi"]["x1"] < threshold < history.json()[1]["psi"]["x1"] == psi["x1"]
    assert client.get(f"/api/v1/models/{name}/monitoring/reports?limit=1", headers=bearer(token)).json()[0]["id"] \
        == report["id"]
    assert client.get(f"/api/v1/models/{name}/monitoring/reports?limit=0", headers=bearer(token)).status_code == 422

    # The monitoring answer shows the same drift, the traffic and no accuracy yet.
    summary = monitoring(client, token, name)
    assert summary["requests"]["count"] == 17 and summary["requests"]["errors"] == 1
    assert summary["requests"]["by_status"]["invalid_input"] == 1
    assert summary["requests"]["rate_per_second"] > 0
    assert 0 < summary["requests"]["latency_ms"]["p50"] <= summary["requests"]["latency_ms"]["p99"]
    [version] = summary["versions"]
    assert version["version"] == 1 and version["recorded"] == 800
    assert version["drift"]["drifted_features"] == ["x1"]
    assert version["last_check"]["id"] == report["id"]
    assert version["predictions"]["count"] == 800
    assert version["accuracy"]["labeled"] == 0 and version["accuracy"]["value"] is None

    # Feedback is all or nothing: one unknown id, and none of the batch is recorded.
    items = [{"prediction_id": pid, "row": row, "label": truth}
             for (pid, row, _), truth in zip(usual_answers, usual_truth, strict=True)]
    unknown = {"prediction_id": str(uuid.uuid4()), "row": 0, "label": "high"}
    response = client.post(f"/api/v1/models/{name}/feedback", json={"items": [*items[:5], unknown]},
                           headers=bearer(token))
    assert response.status_code == 422 and response.json()["error"]["code"] == "unknown_prediction", response.text
    assert [d["field"] for d in response.json()["error"]["details"]] == ["items.5"]
    assert monitoring(client, token, name)["versions"][0]["accuracy"]["labeled"] == 0

    # The true labels of the usual traffic: the model is as good as it was in training.
    response = client.post(f"/api/v1/models/{name}/feedback", json={"items": items}, headers=bearer(token))
    assert response.status_code == 200 and response.json() == {"recorded": 400}, response.text
    before = monitoring(client, token, name)["versions"][0]["accuracy"]
    assert before["metric"] == "accuracy" and before["labeled"] == 400
    expected = np.mean([p == t for (_, _, p), t in zip(usual_answers, usual_truth, strict=True)])
    assert before["value"] == pytest.approx(expected, abs=1e-6) and before["value"] > 0.8
    assert sum(b["labeled"] for b in before["series"]) == 400

    # The shifted population turns out to be "low" whatever the model says: accuracy falls.
    items = [{"prediction_id": pid, "row": row, "label": "low"} for pid, row, _ in shifted_answers]
    response = client.post(f"/api/v1/models/{name}/feedback", json={"items": items}, headers=bearer(token))
    assert response.status_code == 200 and response.json() == {"recorded": 400}, response.text
    after = monitoring(client, token, name)["versions"][0]["accuracy"]
    assert after["labeled"] == 800
    assert after["value"] < before["value"] - 0.25, (before["value"], after["value"])
    assert sum(b["labeled"] for b in after["series"]) == 800

    # The hourly check, run by the worker: it reports the drift too, once even if delivered twice.
    for _ in range(2):
        celery_client().send_task("workers.tasks.monitoring_drift_check_task").get(timeout=60)
    last = monitoring(client, token, name)["versions"][0]["last_check"]
    assert last["trigger"] == "schedule" and last["drifted_features"] == ["x1"], last
    events = drift_events(name)
    assert [e["trigger"] for e in events] == ["api", "schedule"] and events[1]["report_id"] == last["id"]
