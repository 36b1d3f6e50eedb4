"""Prediction ids on every protocol, sampled recording off the request path, and what it counts."""

from __future__ import annotations

import asyncio
import json
import struct
import time
import uuid

import numpy as np
import pytest
import websockets
from prometheus_client import REGISTRY

from app.monitoring.recording import Pending, Recorder, with_prediction_id
from tests.support import bearer

pytestmark = pytest.mark.django_db(transaction=True)

ROW = [1.0, 2.0, 3.0, 4.0]


def _v2_body(rows: list[list[float]], **parameters: object) -> dict:
    body: dict = {"inputs": [{"name": "input", "shape": [len(rows), 4], "datatype": "FP32",
                              "data": [x for row in rows for x in row]}]}
    if parameters:
        body["parameters"] = parameters
    return body


def _monitoring(client, token: str, model: str) -> dict:
    response = client.get(f"/api/v1/models/{model}/monitoring?window=15m", headers=bearer(token))
    assert response.status_code == 200, response.text
    return response.json()


async def test_every_protocol_answers_a_prediction_id_and_is_recorded(client, server, publish_model):
    model = publish_model("rec-protocols")
    headers = bearer(model.token)
    rest = client.post("/api/v1/models/rec-protocols/predict", json={"inputs": [ROW, ROW]}, headers=headers)
    assert rest.status_code == 200, rest.text
    ids = [rest.json()["prediction_id"]]

    v2 = client.post("/v2/models/rec-protocols/infer", json=_v2_body([ROW], ), headers=headers)
    assert v2.status_code == 200, v2.text
    assert v2.json()["model_name"] == "rec-protocols" and v2.json()["outputs"][0]["shape"] == [1, 3]
    ids.append(v2.json()["parameters"]["prediction_id"])

    # Binary outputs: the JSON part grows by the parameters, and its length header says so.
    binary = client.post("/v2/models/rec-protocols/infer", json=_v2_body([ROW], binary_data_output=True),
                         headers=headers)
    assert binary.status_code == 200, binary.text
    length = int(binary.headers["Inference-Header-Content-Length"])
    header = json.loads(binary.content[:length])
    ids.append(header["parameters"]["prediction_id"])
    values = struct.unpack("<3f", binary.content[length:])
    assert np.allclose(values, model.expected([ROW])[0], atol=1e-5)

    async with websockets.connect(f"{server.ws_url}/ws/v1/infer", subprotocols=["bearer", model.token]) as ws:
        await ws.send(json.dumps({"id": "w1", "model": "rec-protocols", **_v2_body([ROW, ROW, ROW])}))
        answer = json.loads(await asyncio.wait_for(ws.recv(), 30))
    assert answer["id"] == "w1" and answer["outputs"][0]["shape"] == [3, 3], answer
    ids.append(answer["parameters"]["prediction_id"])
    assert len({str(uuid.UUID(i)) for i in ids}) == 4

    summary = _monitoring(client, model.token, "rec-protocols")
    assert summary["requests"]["count"] == 4 and summary["requests"]["rows"] == 7
    assert summary["requests"]["by_protocol"] == {"rest": 1, "v2": 2, "ws": 1}
    [version] = summary["versions"]
    assert version["recorded"] == 7 and version["drift"] is None
    # A model without labels counts as classification by the index of its largest output.
    expected = np.argmax(model.expected([ROW]), axis=1)[0]
    assert version["predictions"]["task"] == "classification"
    assert version["predictions"]["fractions"] == {str(expected): 1.0}


def test_sample_rate_zero_records_nothing_but_counts_requests(client, publish_model):
    model = publish_model("rec-unsampled")
    headers = bearer(model.token)
    response = client.patch("/api/v1/models/rec-unsampled/monitoring/config", json={"sample_rate": 0},
                            headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["sample_rate"] == 0 and response.json()["overrides"]["sample_rate"] == 0
    predicted = client.post("/api/v1/models/rec-unsampled/predict", json={"inputs": [ROW]}, headers=headers)
    assert predicted.status_code == 200
    prediction_id = predicted.json()["prediction_id"]
    feedback = client.post("/api/v1/models/rec-unsampled/feedback",
                           json={"prediction_id": prediction_id, "label": "0"}, headers=headers)
    assert feedback.status_code == 422 and feedback.json()["error"]["code"] == "unknown_prediction", feedback.text
    summary = _monitoring(client, model.token, "rec-unsampled")
    assert summary["requests"]["count"] == 1
    assert [v["recorded"] for v in summary["versions"]] == [0]

    reset = client.patch("/api/v1/models/rec-unsampled/monitoring/config", json={"sample_rate": None},
                         headers=headers)
    assert reset.json()["sample_rate"] == 1.0 and reset.json()["overrides"]["sample_rate"] is None
    client.post("/api/v1/models/rec-unsampled/predict", json={"inputs": [ROW]}, headers=headers)
    assert [v["recorded"] for v in _monitoring(client, model.token, "rec-unsampled")["versions"]] == [1]


def _dropped(model: str, reason: str = "buffer_full") -> float:
    value = REGISTRY.get_sample_value("torchwire_prediction_rows_dropped_total", {"model": model, "reason": reason})
    return value or 0.0


async def test_a_full_buffer_drops_and_counts_instead_of_growing(settings):
    settings.PREDICTION_BUFFER_ROWS = 5
    recorder = Recorder()

    def pending(rows: int) -> Pending:
        return Pending(model_id=-1, model="rec-buffer", version=1, protocol="rest", prediction_id=str(uuid.uuid4()),
                       at=0.0, latency_ms=1.0, rows=rows, task="", labels=[], inputs={"x": np.zeros((rows, 2))},
                       outputs={"y": np.zeros((rows, 1))}, output_name="y")

    before = _dropped("rec-buffer")
    recorder.add(pending(3))
    recorder.add(pending(3))  # would make 6 > 5
    recorder.add(pending(2))
    assert _dropped("rec-buffer") - before == 3
    await recorder.close()  # writes the 5 rows it kept; a model that does not exist keeps none


async def test_under_the_row_budget_every_request_is_recorded(settings):
    settings.PREDICTION_MAX_ROWS_PER_SECOND = 100
    recorder = Recorder()
    assert all([recorder.sampled(-2, "rec-under", 2) for _ in range(45)])
    await recorder.flush()
    assert _dropped("rec-under", "budget") == 0
    await recorder.close()


async def test_a_burst_over_the_row_budget_records_about_the_budget_and_counts_the_rest(settings):
    settings.PREDICTION_MAX_ROWS_PER_SECOND = 100
    recorder = Recorder()
    before = _dropped("rec-burst", "budget")
    started = time.monotonic()
    kept = sum(recorder.sampled(-3, "rec-burst", 1) for _ in range(1000))
    refilled = (time.monotonic() - started) * 100
    assert 100 <= kept <= 100 + refilled + 1, (kept, refilled)
    assert _dropped("rec-burst", "budget") == before  # counted in the bucket; the flusher reports it
    await recorder.flush()
    assert _dropped("rec-burst", "budget") - before == 1000 - kept
    # Another model has a budget of its own.
    assert recorder.sampled(-4, "rec-burst-other", 1)
    # The bucket refills at the budget's rate.
    await asyncio.sleep(0.1)
    refilled = sum(recorder.sampled(-3, "rec-burst", 1) for _ in range(100))
    assert 9 <= refilled <= (time.monotonic() - started) * 100 + 1, refilled
    await recorder.close()


async def test_a_request_larger_than_the_budget_is_recorded_whole_then_paid_back(settings):
    settings.PREDICTION_MAX_ROWS_PER_SECOND = 100
    recorder = Recorder()
    assert recorder.sampled(-5, "rec-large", 250)
    assert not recorder.sampled(-5, "rec-large", 1)  # 150 rows in debt: about 1.5 s
    await recorder.close()


async def test_the_sample_rate_draw_comes_first_and_zero_disables_the_budget(settings):
    settings.PREDICTION_MAX_ROWS_PER_SECOND = 100
    settings.PREDICTION_SAMPLE_RATE = 0.0
    recorder = Recorder()
    before = _dropped("rec-nobudget", "budget")
    assert not any(recorder.sampled(-6, "rec-nobudget", 1) for _ in range(500))
    await recorder.flush()
    assert _dropped("rec-nobudget", "budget") == before  # unsampled requests are not budget drops
    settings.PREDICTION_SAMPLE_RATE = 1.0
    settings.PREDICTION_MAX_ROWS_PER_SECOND = 0
    assert all(recorder.sampled(-6, "rec-nobudget", 1) for _ in range(1000))
    await recorder.flush()
    assert _dropped("rec-nobudget", "budget") == before
    await recorder.close()


def test_v2_prediction_id_splice_keeps_json_and_binary_parts():
    from inference import v2

    outputs = {"y": np.arange(6, dtype=np.float32).reshape(2, 3)}
    body, length = v2.encode_infer_response("m", "1", "r", outputs, binary=True)
    spliced, new_length = with_prediction_id(body, length, "abc")
    assert new_length is not None and length is not None
    header = json.loads(spliced[:new_length])
    assert header["parameters"] == {"prediction_id": "abc"} and header["id"] == "r"
    assert spliced[new_length:] == body[length:]
    plain, none = v2.encode_infer_response("m", "1", None, outputs, binary=False)
    spliced, stays_none = with_prediction_id(plain, none, "abc")
    assert stays_none is None and json.loads(spliced)["outputs"] == json.loads(plain)["outputs"]


async def test_rows_wait_in_the_buffer_through_a_database_outage(make_user, settings):
    from app.core.db import db_async, outage
    from app.monitoring.models import PredictionRecord
    from app.registry.models import MlModel

    settings.PREDICTION_FLUSH_SECONDS = 3600  # only the flushes this test asks for
    owner = make_user("maintainer")
    model = await db_async(MlModel.objects.create)(name=f"rec-outage-{uuid.uuid4().hex[:6]}", owner_id=owner.pk)
    recorder = Recorder()
    recorder.add(Pending(model_id=model.pk, model=model.name, version=1, protocol="rest",
                         prediction_id=str(uuid.uuid4()), at=time.time(), latency_ms=1.0, rows=3, task="", labels=[],
                         inputs={"x": np.zeros((3, 2))}, outputs={"y": np.zeros((3, 1))}, output_name="y"))
    written = db_async(lambda: PredictionRecord.objects.filter(model_id=model.pk).count())
    dropped = sum(_dropped(model.name, reason) for reason in ("write_failed", "database_unavailable"))
    outage.enabled, outage.down_since = True, time.monotonic()
    try:
        await recorder.flush()  # refused at once: the rows stay for later
    finally:
        outage.enabled, outage.down_since = False, None
    assert await written() == 0
    await recorder.flush()
    assert await written() == 3
    assert sum(_dropped(model.name, reason) for reason in ("write_failed", "database_unavailable")) == dropped
    await recorder.close()
