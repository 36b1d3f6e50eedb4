"""Through a real nginx over TLS: REST, V2 with tritonclient, websockets and SSE; the edge's own answers
(redirects, 413, 429, static files, headers) and what it tells Django about the client."""

from __future__ import annotations

import asyncio
import io
import json
import re
import time

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
import websockets

from app.core.headers import API_POLICY, PAGE_POLICY
from tests.jobs.conftest import classification_csv
from tests.nginx.conftest import (
    AUTH_BURST,
    JSON_BODY_BYTES,
    LOGIN_FAILURES_ALLOWED,
    STREAM_TIMEOUT,
    Proxy,
    loopback_alias_client,
)
from tests.support import bearer, login

pytestmark = pytest.mark.django_db(transaction=True)

SECURITY_HEADERS = {
    "strict-transport-security": "max-age=31536000; includeSubDomains",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    # The app's on what it answers, nginx's (the same) on its own errors and static files.
    "content-security-policy": API_POLICY,
}


def _assert_security_headers(response: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        # Exactly once: Django's copies are hidden so a browser never sees two.
        assert response.headers.get_list(name) == [value], (name, response.headers.get_list(name))


def test_plain_http_redirects_to_https_but_health_probes_pass(proxy: Proxy):
    with httpx.Client(timeout=10) as plain:
        response = plain.post(f"{proxy.http_url}/api/v1/auth/token?next=1", json={})
        assert response.status_code == 308
        assert response.headers["location"] == f"{proxy.url}/api/v1/auth/token?next=1"
        assert plain.get(f"{proxy.http_url}/healthz").json() == {"status": "ok"}


def test_rest_over_tls(client, make_user):
    account = make_user("member")
    token = login(client, account)["access"]
    me = client.get("/api/v1/me", headers=bearer(token))
    assert me.status_code == 200 and me.json()["username"] == account.username
    assert me.url.scheme == "https"
    _assert_security_headers(me)
    # Django saw X-Forwarded-Proto https: with production settings it would otherwise redirect to https.
    assert not me.history


def test_a_pages_policy_passes_through_alone(client):
    docs = client.get("/api/v1/docs")
    assert docs.status_code == 200
    assert docs.headers.get_list("content-security-policy") == [PAGE_POLICY]
    assert docs.headers.get_list("x-frame-options") == ["DENY"]


def test_request_id_passes_through_both_ways(proxy: Proxy, client):
    mine = client.get("/healthz", headers={"X-Request-ID": "edge-test:42"})
    assert mine.headers.get_list("x-request-id") == ["edge-test:42"]
    made = client.get("/healthz").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    # The id Django answered with is the one nginx made and logged.
    deadline = time.monotonic() + 5
    while f'"request_id":"{made}"' not in proxy.access_log():
        assert time.monotonic() < deadline, proxy.access_log()[-2000:]
        time.sleep(0.1)


def test_static_files_come_from_nginx(client):
    # The workers run with TORCHWIRE_SERVE_STATIC=false, so only nginx can answer this.
    response = client.get("/static/probe/hello.txt")
    assert response.status_code == 200 and response.text == "served by nginx\n"
    assert response.headers["cache-control"] == "max-age=604800"
    _assert_security_headers(response)


def test_metrics_need_credentials_through_the_proxy(client):
    # Django sees the X-Forwarded-For nginx sets, so /metrics is not "from loopback".
    assert client.get("/metrics").status_code == 401


def test_django_sees_the_real_client_address(proxy: Proxy, client, make_user):
    """The login limiter counts failures per (client address, username): a forged X-Forwarded-For does
    not give a client a fresh count, and another address has its own."""
    account = make_user("member")
    wrong = {"username": account.username, "password": "wrong"}
    for attempt in range(LOGIN_FAILURES_ALLOWED):
        forged = {"X-Forwarded-For": f"203.0.113.{attempt}", "X-Real-IP": f"203.0.113.{attempt}"}
        assert client.post("/api/v1/auth/token", json=wrong, headers=forged).status_code == 401
    limited = client.post("/api/v1/auth/token", json=wrong, headers={"X-Forwarded-For": "198.51.100.7"})
    assert limited.status_code == 429, limited.text
    assert "Retry-After" in limited.headers and "login" in limited.json()["error"]["message"]
    with loopback_alias_client(proxy, "127.0.0.2") as other:
        assert other.post("/api/v1/auth/token", json=wrong).status_code == 401


def test_tritonclient_over_tls(proxy: Proxy, publish_model):
    model = publish_model("edge-mlp")  # the artifact upload went through nginx too
    client = triton.InferenceServerClient(proxy.netloc, ssl=True, ssl_options={"ca_certs": str(proxy.site.tls_cert)},
                                          network_timeout=30, connection_timeout=10)
    try:
        assert client.is_server_live() and client.is_server_ready()
        rows = np.array([[0.1, 0.2, 0.3, 0.4], [1.0, -1.0, 0.5, 2.0]], dtype=np.float32)
        expected = np.array(model.expected(rows.tolist()), dtype=np.float32)
        for binary in (True, False):
            tensor = triton.InferInput("input", list(rows.shape), "FP32")
            tensor.set_data_from_numpy(rows, binary_data=binary)
            output = triton.InferRequestedOutput("output", binary_data=binary)
            result = client.infer("edge-mlp", [tensor], outputs=[output], headers=bearer(model.token))
            np.testing.assert_allclose(result.as_numpy("output"), expected, rtol=1e-5, atol=1e-5)
    finally:
        client.close()


def test_oversized_bodies_get_413_in_each_protocol_shape(client, make_user):
    token = login(client, make_user("member"))["access"]
    big = json.dumps({"name": "x", "description": "y" * (JSON_BODY_BYTES + 1000)})
    response = client.post("/api/v1/models", content=big, headers={**bearer(token), "Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert response.headers["content-type"] == "application/json"
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])
    _assert_security_headers(response)

    v2 = client.post("/v2/models/anything/infer", content=big, headers=bearer(token))
    assert v2.status_code == 413 and isinstance(v2.json()["error"], str)


def test_uploads_pass_the_json_limit_and_json_comes_gzipped(client, make_user):
    token = login(client, make_user("member"))["access"]
    csv = classification_csv(rows=45_000)
    assert len(csv) > JSON_BODY_BYTES
    upload = client.post("/api/v1/datasets", headers=bearer(token),
                         files={"file": ("big.csv", io.BytesIO(csv), "text/csv")})
    assert upload.status_code == 201, upload.text
    preview = client.get(f"/api/v1/datasets/{upload.json()['id']}/preview?rows=200",
                         headers={**bearer(token), "Accept-Encoding": "gzip"})
    assert preview.status_code == 200
    assert preview.headers["content-encoding"] == "gzip"
    assert len(preview.json()["rows"]) == 200


async def _echo(ws, payload: dict) -> dict:
    await ws.send(json.dumps(payload))
    return json.loads(await asyncio.wait_for(ws.recv(), 10))


def test_websocket_stays_open_while_idle(proxy: Proxy, client, make_user):
    account = make_user("member")
    token = login(client, account)["access"]
    idle = 2 * STREAM_TIMEOUT + 2

    async def session() -> None:
        # No client pings: only uvicorn's (every second here) cross nginx while the socket is idle.
        async with websockets.connect(f"{proxy.ws_url}/ws/v1/echo", ssl=proxy.tls(), ping_interval=None,
                                      subprotocols=["bearer", token], origin=proxy.url) as ws:
            assert (await _echo(ws, {"n": 1}))["user"] == account.username
            await asyncio.sleep(idle)
            assert (await _echo(ws, {"n": 2}))["data"] == {"n": 2}

    asyncio.run(session())


def test_sse_streams_through_nginx(client, make_user, celery_worker_proc):
    token = login(client, make_user("member"))["access"]
    upload = client.post("/api/v1/datasets", headers=bearer(token),
                         files={"file": ("sse.csv", io.BytesIO(classification_csv(rows=300)), "text/csv")})
    assert upload.status_code == 201, upload.text
    started = client.post("/api/v1/jobs/train", headers=bearer(token), json={
        "dataset_id": upload.json()["id"], "target": "label", "task": "classification", "model_name": "edge-sse",
        "hyperparameters": {"epochs": 4, "patience": 4, "hidden": [16]}})
    assert started.status_code == 201, started.text
    job_id = started.json()["id"]

    frames: list[tuple[str, dict]] = []
    pings_after_end = 0
    with client.stream("GET", f"/api/v1/jobs/{job_id}/events?last_event_id=0", headers=bearer(token),
                       timeout=10) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert "content-encoding" not in response.headers
        frame: dict[str, str] = {}
        ended_at = None
        for line in response.iter_lines():
            if ended_at is not None:
                # The stream stays open after the job ends. Each ping is a few bytes that nginx would hold
                # back if it buffered, and they keep the stream alive past the read timeout.
                pings_after_end += line == ": ping"
                if time.monotonic() - ended_at > STREAM_TIMEOUT + 2:
                    break
            elif line.startswith(("event:", "data:")):
                key, _, value = line.partition(":")
                frame[key] = value.strip()
            elif line == "" and "data" in frame:
                frames.append((frame.get("event", ""), json.loads(frame["data"])))
                frame = {}
                if frames[-1][1].get("type") in ("succeeded", "failed", "cancelled"):
                    ended_at = time.monotonic()
    assert frames[0][0] == "subscribed"
    events = [data for name, data in frames if name != "subscribed"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "succeeded", events[-1]
    assert pings_after_end >= STREAM_TIMEOUT, pings_after_end


def test_auth_burst_gets_429_from_nginx(proxy: Proxy):
    """From an address of its own (127.0.0.3), so the other tests' logins keep their allowance."""
    loopback_alias_client(proxy, "127.0.0.3").close()  # skips where the alias cannot be bound
    requests = 6 * AUTH_BURST

    async def burst() -> list[httpx.Response]:
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.3", verify=proxy.tls())
        async with httpx.AsyncClient(base_url=proxy.url, transport=transport, timeout=30) as client:
            return await asyncio.gather(*(client.post("/api/v1/auth/token", json={}) for _ in range(requests)))

    responses = asyncio.run(burst())
    statuses = [r.status_code for r in responses]
    # An empty body is a validation error: the requests that got through reached Django, cheaply.
    assert set(statuses) == {422, 429}, statuses
    assert statuses.count(422) <= AUTH_BURST + 2, statuses
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["error"]["code"] == "rate_limited"
    assert refused.headers["retry-after"] == "1"
    _assert_security_headers(refused)
