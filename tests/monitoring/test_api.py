"""The monitoring API's rules: feedback addressing and scoring, who may do what, bad windows."""

from __future__ import annotations

import uuid

import pytest

from tests.support import bearer, login

pytestmark = pytest.mark.django_db(transaction=True)

ROWS = [[0.5, -1.0, 2.0, 0.0], [1.0, 1.0, 1.0, 1.0], [-2.0, 0.0, 0.5, 3.0]]
SCALAR = {"in_features": 4, "hidden": [8], "out_features": 1}


def _feedback(client, token: str, model: str, body: dict):
    return client.post(f"/api/v1/models/{model}/feedback", json=body, headers=bearer(token))


def _accuracy(client, token: str, model: str) -> dict:
    response = client.get(f"/api/v1/models/{model}/monitoring?window=1h", headers=bearer(token))
    assert response.status_code == 200, response.text
    return response.json()["versions"][0]["accuracy"]


def test_feedback_rows_and_labels_of_a_classifier(client, publish_model):
    model = publish_model("api-classes")
    token = model.token
    response = client.post("/api/v1/models/api-classes/predict", json={"inputs": ROWS}, headers=bearer(token))
    prediction_id = response.json()["prediction_id"]
    winners = [max(range(3), key=row.__getitem__) for row in model.expected(ROWS)]

    cases = [
        ({"prediction_id": prediction_id, "label": "0"}, 422, "say which with 'row'"),
        ({"prediction_id": prediction_id, "row": 3, "label": "0"}, 422, "out of range"),
        ({"prediction_id": prediction_id, "row": 0, "label": [1]}, 422, "class label"),
        ({"prediction_id": prediction_id, "row": 0}, 422, "label"),
        ({"prediction_id": "not-a-uuid", "row": 0, "label": "1"}, 422, "prediction_id"),
        ({"items": [{"prediction_id": prediction_id, "row": 0, "label": "1"}], "label": "2"}, 422, "not both"),
        ({"items": []}, 422, "items"),
    ]
    for body, status, needle in cases:
        answer = _feedback(client, token, "api-classes", body)
        assert answer.status_code == status, (body, answer.text)
        assert needle in answer.text, (needle, answer.text)
    assert _accuracy(client, token, "api-classes")["labeled"] == 0

    # Rows 0 and 1 right (one as an integer label), row 2 wrong; a second label for a row replaces the first.
    wrong = (winners[2] + 1) % 3
    items = [{"prediction_id": prediction_id, "row": 0, "label": str(winners[0])},
             {"prediction_id": prediction_id, "row": 1, "label": winners[1]},
             {"prediction_id": prediction_id, "row": 2, "label": str(winners[2])},
             {"prediction_id": prediction_id, "row": 2, "label": str(wrong)}]
    answer = _feedback(client, token, "api-classes", {"items": items})
    assert answer.status_code == 200 and answer.json() == {"recorded": 3}, answer.text
    accuracy = _accuracy(client, token, "api-classes")
    assert accuracy["metric"] == "accuracy" and accuracy["labeled"] == 3
    assert accuracy["value"] == pytest.approx(2 / 3, abs=1e-6)


def test_feedback_of_a_regression_gives_rmse(client, publish_model):
    model = publish_model("api-values", config=SCALAR)
    response = client.post("/api/v1/models/api-values/predict", json={"inputs": [ROWS[0]]},
                           headers=bearer(model.token))
    prediction_id = response.json()["prediction_id"]
    predicted = model.expected([ROWS[0]])[0][0]
    assert _feedback(client, model.token, "api-values", {"prediction_id": prediction_id, "label": "high"}
                     ).status_code == 422
    answer = _feedback(client, model.token, "api-values", {"prediction_id": prediction_id, "label": predicted + 3})
    assert answer.status_code == 200, answer.text
    accuracy = _accuracy(client, model.token, "api-values")
    assert accuracy["metric"] == "rmse" and accuracy["labeled"] == 1
    assert accuracy["value"] == pytest.approx(3.0, abs=1e-4) and accuracy["mae"] == pytest.approx(3.0, abs=1e-4)


def test_who_may_read_send_feedback_and_check(client, make_user, publish_model):
    model = publish_model("api-access")  # public, owned by a maintainer
    response = client.post("/api/v1/models/api-access/predict", json={"inputs": [ROWS[0]]},
                           headers=bearer(model.token))
    body = {"prediction_id": response.json()["prediction_id"], "label": "1"}
    viewer = login(client, make_user("viewer"))["access"]
    member = login(client, make_user("member"))["access"]
    admin = login(client, make_user("admin"))["access"]

    assert client.get("/api/v1/models/api-access/monitoring", headers=bearer(viewer)).status_code == 200
    assert _feedback(client, viewer, "api-access", body).status_code == 403
    assert _feedback(client, member, "api-access", body).status_code == 200
    for token, status in ((viewer, 403), (member, 403), (admin, 200), (model.token, 200)):
        check = client.post("/api/v1/models/api-access/monitoring/check", headers=bearer(token))
        assert check.status_code == status, check.text
    for token, status in ((member, 403), (admin, 200)):
        patched = client.patch("/api/v1/models/api-access/monitoring/config", json={"drift_threshold": 0.3},
                               headers=bearer(token))
        assert patched.status_code == status, patched.text
    assert client.get("/api/v1/models/api-access/monitoring").status_code == 401

    client.patch("/api/v1/models/api-access", json={"visibility": "private"}, headers=bearer(model.token))
    for method, path in (("GET", "monitoring"), ("POST", "monitoring/check"), ("GET", "monitoring/config"),
                         ("POST", "feedback")):
        response = client.request(method, f"/api/v1/models/api-access/{path}", headers=bearer(member),
                                  json=body if path == "feedback" else None)
        assert response.status_code == 404, (path, response.text)


def test_check_needs_a_training_reference_and_windows_are_checked(client, publish_model):
    model = publish_model("api-tensors")
    headers = bearer(model.token)
    client.post("/api/v1/models/api-tensors/predict", json={"inputs": ROWS}, headers=headers)
    check = client.post("/api/v1/models/api-tensors/monitoring/check", headers=headers)
    assert check.status_code == 200, check.text
    assert check.json()["reports"] == [] and [s["version"] for s in check.json()["skipped"]] == [1]
    assert client.post("/api/v1/models/api-tensors/monitoring/check?version=1", headers=headers).status_code == 422
    assert client.post("/api/v1/models/api-tensors/monitoring/check?version=9", headers=headers).status_code == 404
    assert client.get("/api/v1/models/api-tensors/monitoring?version=9", headers=headers).status_code == 404
    for window in ("15m", "36h", "7d", "90s"):
        assert client.get(f"/api/v1/models/api-tensors/monitoring?window={window}", headers=headers).status_code == 200
    for window in ("1w", "0m", "30s", "90d", "h", "-1h"):
        response = client.get(f"/api/v1/models/api-tensors/monitoring?window={window}", headers=headers)
        assert response.status_code == 422 and response.json()["error"]["details"][0]["field"] == "window", window
    for bad in ({"sample_rate": 1.5}, {"sample_rate": -0.1}, {"drift_threshold": 0}, {"unknown": 1}):
        response = client.patch("/api/v1/models/api-tensors/monitoring/config", json=bad, headers=headers)
        assert response.status_code == 422, (bad, response.text)
    config = client.get("/api/v1/models/api-tensors/monitoring/config", headers=headers).json()
    assert config == {"sample_rate": 1.0, "drift_threshold": 0.2,
                      "overrides": {"sample_rate": None, "drift_threshold": None}}
    assert str(uuid.UUID(client.post("/api/v1/models/api-tensors/predict", json={"inputs": ROWS},
                                     headers=headers).json()["prediction_id"]))
