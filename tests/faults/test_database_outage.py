"""A PostgreSQL restart under a steady predict load: cached callers keep getting answers, the rest get
503 with Retry-After, nothing gets a 500, and the log says what happened in two lines.

The service runs against a private PostgreSQL (tests/private_services.py) that this test stops and
starts, then kills and starts with no traffic (pooled connections the server dropped must be replaced
without a request noticing)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
import websockets

from tests.envsetup import ROOT, RUN_DIR
from tests.private_services import migrate, private_postgres
from tests.registry.test_api import manifest, mlp_bytes, publish
from tests.support import Server, bearer, child_env, start_uvicorn

pytestmark = [pytest.mark.faults, pytest.mark.slow]

ROW = [0.5, -1.0, 2.0, 0.25]
REST_BODY = {"inputs": [ROW]}
V2_BODY = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}
DOWN_SECONDS = 7.0  # longer than the credential (5 s) and model (1 s) cache lifetimes


@dataclass
class Answer:
    kind: str
    started: float
    ended: float
    status: int
    retry_after: str | None
    body: object


def _setup(server: Server, admin_password: str) -> tuple[str, str]:
    """Two models (m-hot, m-cold) and two API keys of the admin: one to warm the caches, one kept cold."""
    with httpx.Client(base_url=server.url, timeout=60) as client:
        tokens = client.post("/api/v1/auth/token", json={"username": "admin", "password": admin_password})
        assert tokens.status_code == 200, tokens.text
        token = tokens.json()["access"]
        for name in ("m-hot", "m-cold"):
            assert client.post("/api/v1/models", json={"name": name, "visibility": "private"},
                               headers=bearer(token)).status_code == 201
            assert publish(client, token, name, mlp_bytes(), manifest()).status_code == 201
            assert client.post(f"/api/v1/models/{name}/versions/1/promote", json={"stage": "production"},
                               headers=bearer(token)).status_code == 200
        keys = []
        for label in ("hot", "cold"):
            created = client.post("/api/v1/auth/api-keys", json={"name": label}, headers=bearer(token))
            assert created.status_code == 201, created.text
            keys.append(created.json()["key"])
    return keys[0], keys[1]


async def _call(client: httpx.AsyncClient, kind: str, key: str, method: str, path: str,
                body: object | None, out: list[Answer]) -> Answer:
    started = time.monotonic()
    try:
        response = await client.request(method, path, json=body, headers=bearer(key))
    except httpx.TransportError as exc:  # recorded: a dropped connection is a failure too
        answer = Answer(kind, started, time.monotonic(), 0, None, repr(exc))
    else:
        try:
            parsed: object = response.json()
        except ValueError:
            parsed = response.text
        answer = Answer(kind, started, time.monotonic(), response.status_code, response.headers.get("retry-after"),
                        parsed)
    out.append(answer)
    return answer


def _hot_calls() -> list[tuple[str, str, str, object]]:
    return [("hot-rest", "POST", "/api/v1/models/m-hot/predict", REST_BODY),
            ("hot-v2", "POST", "/v2/models/m-hot/infer", V2_BODY)]


def _cold_calls(hot_key: str, cold_key: str) -> list[tuple[str, str, str, str, object]]:
    """Calls this process cannot answer without the database: an uncached credential, an uncached model,
    and an API route that reads rows."""
    return [("cold-key-rest", cold_key, "POST", "/api/v1/models/m-hot/predict", REST_BODY),
            ("cold-key-v2", cold_key, "POST", "/v2/models/m-hot/infer", V2_BODY),
            ("cold-model", hot_key, "POST", "/api/v1/models/m-cold/predict", REST_BODY),
            ("api-route", hot_key, "GET", "/api/v1/models/m-hot", None)]


def _report(answers: list[Answer], marks: dict[str, float]) -> None:
    """The figures for docs/reliability.md (shown with ``pytest -s``)."""
    hot = [a for a in answers if a.kind.startswith("hot")]
    outage = [a for a in hot if marks["down"] <= a.started < marks["up"]]
    span = max(a.ended for a in hot) - min(a.started for a in hot)
    counts: dict[str, int] = {}
    for a in answers:
        counts[f"{a.kind} {a.status}"] = counts.get(f"{a.kind} {a.status}", 0) + 1
    print(json.dumps({
        "hot_predict_per_second": round(len(hot) / span, 1),
        "hot_during_outage": len(outage),
        "hot_max_ms_during_outage": round(max((a.ended - a.started) * 1000 for a in outage), 1) if outage else None,
        "server_errors": sum(1 for a in answers if a.status >= 500 and a.status != 503),
        "by_kind_and_status": counts,
    }))


def test_predict_through_a_database_restart():
    with private_postgres() as pg:
        url = pg.create_database("outage")
        migrate(url)
        var = RUN_DIR / f"outage-{pg.port}"
        env = {"DATABASE_URL": url, "TORCHWIRE_VAR_DIR": str(var)}
        subprocess.run([sys.executable, "manage.py", "ensure_admin"], cwd=ROOT, env=child_env(env), check=True,
                       capture_output=True, timeout=120)
        admin_password = (Path(var) / "admin-password.txt").read_text().strip()
        server = start_uvicorn(env)
        try:
            hot_key, cold_key = _setup(server, admin_password)
            answers: list[Answer] = []
            marks: dict[str, float] = {}

            async def scenario() -> None:
                limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
                async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
                    stop = asyncio.Event()

                    async def hot_loop(kind: str, method: str, path: str, body: object) -> None:
                        while not stop.is_set():
                            await _call(client, kind, hot_key, method, path, body, answers)

                    async def cold_loop() -> None:
                        while not stop.is_set():
                            for kind, key, method, path, body in _cold_calls(hot_key, cold_key):
                                await _call(client, kind, key, method, path, body, answers)
                            await asyncio.sleep(0.2)

                    loops = [asyncio.create_task(hot_loop(*call)) for call in _hot_calls() for _ in range(6)]
                    await asyncio.sleep(3)
                    await asyncio.to_thread(pg.stop)
                    marks["down"] = time.monotonic()
                    # Only now: the cold calls must find nothing cached.
                    loops.append(asyncio.create_task(cold_loop()))
                    await asyncio.sleep(DOWN_SECONDS / 2)
                    # A websocket with a credential the process cannot check: closed with 1013, try again later.
                    async with websockets.connect(f"{server.ws_url}/ws/v1/events",
                                                  subprotocols=["bearer", cold_key]) as ws:
                        with pytest.raises(websockets.ConnectionClosed) as closed:
                            await ws.recv()
                    assert closed.value.rcvd is not None
                    marks["ws_close"] = closed.value.rcvd.code
                    await asyncio.sleep(DOWN_SECONDS / 2)
                    marks["starting"] = time.monotonic()
                    await asyncio.to_thread(pg.start)
                    marks["up"] = time.monotonic()
                    deadline = time.monotonic() + 60
                    while time.monotonic() < deadline:
                        await asyncio.sleep(0.5)
                        latest = {a.kind: a.status for a in answers if a.started > marks["up"]}
                        if len(latest) == 6 and set(latest.values()) == {200}:
                            break
                    await asyncio.sleep(2)
                    stop.set()
                    await asyncio.gather(*loops)

            asyncio.run(scenario())

            _report(answers, marks)
            assert marks["ws_close"] == 1013
            failures = [a for a in answers if a.status not in (200, 503)]
            assert not failures, failures[:5]
            hot = [a for a in answers if a.kind.startswith("hot")]
            assert {a.status for a in hot} == {200}, [a for a in hot if a.status != 200][:5]
            # Predict did not stall for the outage: answers started and finished while the database was down.
            during = [a for a in hot if a.started > marks["down"] and a.ended < marks["starting"]]
            assert len(during) > 50, len(during)
            for kind in ("cold-key-rest", "cold-key-v2", "cold-model", "api-route"):
                mine = [a for a in answers if a.kind == kind]
                down = [a for a in mine if a.ended < marks["starting"]]
                assert down, f"{kind}: no answer while the database was down"
                assert {a.status for a in down} == {503}, [(a.status, a.body) for a in down][:3]
                assert all(a.retry_after and int(a.retry_after) >= 1 for a in down)
                if kind == "cold-key-v2":
                    assert all(isinstance(a.body, dict) and isinstance(a.body["error"], str) for a in down)
                else:
                    assert all(isinstance(a.body, dict) and a.body["error"]["code"] == "database_unavailable"
                               for a in down), down[0].body
                assert mine[-1].status == 200, f"{kind} did not recover: {mine[-1]}"

            # The server ends every connection of the service while nobody calls (as a restart between two
            # requests would): the pool replaces the dead ones on checkout, so the next requests all succeed.
            with psycopg.connect(pg.url.replace("postgres://", "postgresql://", 1), autocommit=True) as admin:
                ended = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                      "WHERE datname = 'outage'").fetchone()
            assert ended is not None and ended[0] >= 2, ended
            with httpx.Client(base_url=server.url, timeout=30, headers=bearer(hot_key)) as client:
                statuses = [client.get("/api/v1/models/m-hot").status_code for _ in range(30)]
                statuses += [client.post("/api/v1/models/m-cold/predict", json=REST_BODY).status_code
                             for _ in range(5)]
            assert set(statuses) == {200}, statuses

            log = server.log.read_text(errors="replace")
            assert "Traceback" not in log, server.log_tail(80)
            assert log.count("database unreachable") == 1, server.log_tail(80)
            assert log.count("database reachable again") == 1, server.log_tail(80)
            assert "Service Unavailable" not in log  # Django's per-request 5xx line
        finally:
            server.stop()


def test_readyz_stays_ready_without_the_database():
    """A database outage is not a reason to take every instance out of the load balancer: inference
    still answers. /readyz says ``degraded`` with 200, and the database line says why."""
    with private_postgres() as pg:
        url = pg.create_database("ready")
        migrate(url)
        server = start_uvicorn({"DATABASE_URL": url, "TORCHWIRE_READINESS_TIMEOUT": "1"})
        try:
            assert httpx.get(server.url + "/readyz", timeout=10).json()["status"] == "ready"
            pg.stop()
            body = httpx.get(server.url + "/readyz", timeout=10)
            assert body.status_code == 200 and body.json()["status"] == "degraded", body.text
            assert body.json()["database"] != "ok" and body.json()["redis"] == "ok"
            pg.start()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and httpx.get(server.url + "/readyz").json()["status"] != "ready":
                time.sleep(0.3)
            assert httpx.get(server.url + "/readyz").json()["status"] == "ready"
            assert "Traceback" not in server.log.read_text(errors="replace")
        finally:
            server.stop()
