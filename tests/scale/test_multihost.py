"""Torchwire on several hosts (network namespaces on one machine, tests/scale/netns.py): a data host
(PostgreSQL, Redis), web hosts A and B (uvicorn), a worker host (Celery worker and beat) and an edge host
(nginx rendered as `make run-prod` renders it, A and B as upstreams). The drill, with its numbers written
to var/test-run/scale-results.json and printed (docs/deployment.md keeps them):

1. a promotion made through A is served by B within the catalog's TTL (plus the hot swap), no request failing;
2. a job on the worker host: a client on A and a client on B see all its events;
3. SIGKILL of web host A under predict load through the edge: no request of the load fails (nginx
   retries inference on B), and A's websocket clients reconnect through the edge and resume from their
   `since` with no gap;
4. web host C joins (nginx reloads with a third upstream) while the load runs, and takes traffic; B and
   the edge's master keep running.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import websockets

from app.config import default
from app.launcher import NginxSite, certificate_ensure, nginx_binary, nginx_version
from tests.envsetup import ROOT, RUN_DIR
from tests.jobs.conftest import classification_csv
from tests.private_services import PrivatePostgres, migrate
from tests.registry.test_api import MLP, mlp_bytes
from tests.scale.netns import Host, Topology, netns_refusal
from tests.support import bearer, child_env

CATALOG_TTL = default("catalog_ttl_seconds")  # the hosts run with the default

pytestmark = [pytest.mark.scale, pytest.mark.timeout(900)]

WEB_PORT = 8000
HTTPS_PORT = 8443
RESULTS = RUN_DIR / "scale-results.json"
ROW = [[0.1, -0.2, 0.3, 0.4]]


class NsPostgres(PrivatePostgres):
    """The private PostgreSQL of tests/private_services.py, run inside a host and listening on its address."""

    def __init__(self, host: Host) -> None:
        self.host = host
        super().__init__("scale-pg")
        with (self.data / "postgresql.conf").open("a") as fh:
            fh.write(f"listen_addresses = '{host.ip}'\n")
        subnet = host.ip.rsplit(".", 1)[0]
        with (self.data / "pg_hba.conf").open("a") as fh:
            fh.write(f"host all all {subnet}.0/24 trust\n")

    @property
    def url(self) -> str:
        return f"postgres://postgres@{self.host.ip}:{self.port}/postgres"

    def database_url(self, name: str) -> str:
        return f"postgres://postgres@{self.host.ip}:{self.port}/{name}"

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        command = [str(self.bindir / tool), *args]
        if self._user:
            command = ["runuser", "-u", self._user, "--", *command]
        if getattr(self, "host", None) is not None and tool == "pg_ctl":
            command = ["ip", "netns", "exec", self.host.ns, *command]
        return subprocess.run(command, check=check, capture_output=True, timeout=120)


@dataclass
class Cluster:
    topo: Topology
    env: dict[str, str]
    work: Path
    data: Host
    edge: Host
    webs: dict[str, Host] = field(default_factory=dict)
    site: NginxSite | None = None
    nginx: subprocess.Popen[bytes] | None = None

    @property
    def edge_url(self) -> str:
        return f"https://{self.edge.ip}:{HTTPS_PORT}"

    def web_url(self, name: str) -> str:
        return f"http://{self.webs[name].ip}:{WEB_PORT}"

    def log(self, name: str) -> Path:
        return self.work / f"{name}.log"

    def start_web(self, name: str) -> Host:
        host = self.topo.add_host(f"web{name}")
        self.webs[name] = host
        env = {**self.env, "TORCHWIRE_VAR_DIR": str(self.work / f"var-{name}")}
        host.popen([sys.executable, "-m", "uvicorn", "asgi:application", "--host", host.ip, "--port", str(WEB_PORT),
                    "--lifespan", "on", "--no-server-header", "--proxy-headers", "--forwarded-allow-ips",
                    self.edge.ip, "--ws-ping-interval", "20", "--timeout-keep-alive", "75"],
                   env=env, log=self.log(f"web{name}"), cwd=ROOT)
        _wait_http(f"{self.web_url(name)}/readyz", self.log(f"web{name}"))
        return host

    def render_edge(self) -> None:
        cert, key = self.work / "certs" / "edge.crt", self.work / "certs" / "edge.key"
        certificate_ensure(cert, key, names=(self.edge.ip,))
        # As `make run-prod` renders it (app/launcher.py), with TCP upstreams on the web hosts; the infer
        # rate limit is per client address and every client here is one address.
        self.site = NginxSite(prefix=self.work / "nginx", upstreams=[f"{h.ip}:{WEB_PORT}" for h in self.webs.values()
                                                                      if h.pids()],
                              listen_hosts=[self.edge.ip], https_port=HTTPS_PORT, http_port=8080, tls_cert=cert,
                              tls_key=key, static_root=self.work / "static", infer_rate="100000r/s",
                              infer_burst=100000, auth_burst=100)
        self.site.render(nginx_version(nginx_binary()))

    def start_edge(self) -> None:
        self.render_edge()
        assert self.site is not None
        self.nginx = self.edge.popen(self.site.argv(nginx_binary(), "-g", "daemon off;"), env=child_env(),
                                     log=self.log("edge"), cwd=ROOT)
        _wait_http(f"{self.edge_url}/healthz", self.log("edge"))

    def nginx_master(self) -> int:
        assert self.site is not None
        return int((self.site.prefix / "nginx.pid").read_text())

    def reload_edge(self) -> None:
        """New upstream list, same nginx master: `nginx -s reload` (workers finish what they serve)."""
        self.render_edge()
        assert self.site is not None
        self.edge.run(self.site.argv(nginx_binary(), "-s", "reload"), check=True, capture_output=True, timeout=30)

    def upstream_counts(self) -> dict[str, int]:
        assert self.site is not None
        counts: dict[str, int] = {}
        for line in (self.site.prefix / "logs" / "access.log").read_text().splitlines():
            entry = json.loads(line)
            if "/predict" in entry["path"]:
                tried = entry["upstream"].split(", ")
                for upstream in tried:
                    counts[upstream] = counts.get(upstream, 0) + 1
                if len(tried) > 1:  # proxy_next_upstream: refused or reset by one, answered by the next
                    counts["retried"] = counts.get("retried", 0) + 1
        return counts


def _wait_http(url: str, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2, verify=False, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} not ready in {timeout}s:\n{log.read_text(errors='replace')[-3000:]}")


def _manage(env: dict[str, str], code: str) -> None:
    subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=120)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    refusal = netns_refusal()
    if refusal:
        message = f"tests/scale NOT RUN: {refusal} (run as root with iproute2)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        sys.stderr.write(f"\n{'!' * 100}\n{message}\n{'!' * 100}\n")
        pytest.skip(message)
    work = Path(tempfile.mkdtemp(prefix="tw-scale-", dir=RUN_DIR))
    topo = Topology()
    pg: NsPostgres | None = None
    try:
        data = topo.add_host("data")
        edge = topo.add_host("edge")
        pg = NsPostgres(data)
        pg.start()
        database_url = pg.create_database("torchwire")
        data.popen(["redis-server", "--bind", data.ip, "--port", "6379", "--save", "", "--appendonly", "no",
                    "--protected-mode", "no"], env=child_env(), log=work / "redis.log", cwd=ROOT)
        redis_url = f"redis://{data.ip}:6379/0"
        deadline = time.monotonic() + 20
        while True:
            try:
                redis.Redis.from_url(redis_url, socket_connect_timeout=1).ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis on the data host did not start"
                time.sleep(0.1)
        env = child_env({
            "DATABASE_URL": database_url, "REDIS_URL": redis_url, "TORCHWIRE_CHANNEL_LAYER_URLS": redis_url,
            "CELERY_BROKER_URL": redis_url, "CELERY_RESULT_BACKEND": redis_url,
            "STORAGE_URL": f"file://{work / 'storage'}", "ALLOWED_HOSTS": ",".join(
                f"{topo.subnet}.{i}" for i in range(1, 30)),
            "TORCHWIRE_WS_PING_SECONDS": "2", "TORCHWIRE_EVENT_RELAY_SECONDS": "0.5",
            # Training on a queue of its own (docs/scaling.md), served by the worker host.
            "TORCHWIRE_TASK_ROUTES": "workers.tasks.train_job_task=train",
        })
        migrate(database_url, env)
        cluster = Cluster(topo=topo, env=env, work=work, data=data, edge=edge)
        worker = topo.add_host("worker")
        worker_env = {**env, "TORCHWIRE_VAR_DIR": str(work / "var-worker")}
        celery = [sys.executable, "-m", "celery", "-A", "workers.celery"]
        worker.popen([*celery, "worker", "-l", "INFO", "-c", "1", "--hostname=scale@%h", "-Q", "train,default",
                      "--without-gossip", "--without-mingle"], env=worker_env, log=work / "worker.log", cwd=ROOT)
        worker.popen([*celery, "beat", "-l", "INFO", "-s", str(work / "celerybeat-schedule")], env=worker_env,
                     log=work / "beat.log", cwd=ROOT)
        cluster.start_web("A")
        cluster.start_web("B")
        cluster.start_edge()
        yield cluster
    finally:
        topo.destroy()
        if pg is not None:
            pg.destroy()


@dataclass
class Load:
    """Predictions through the edge from ``concurrency`` clients until stopped."""

    url: str
    token: str
    concurrency: int = 6
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    # Requests resent once because the edge closed the kept-alive connection they were written to (nginx
    # closes idle keep-alive connections when it reloads): what HTTP clients do for an idempotent call.
    resent: int = 0
    latencies: list[float] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        async with httpx.AsyncClient(verify=False, trust_env=False, timeout=30) as client:
            await asyncio.gather(*(self._loop(client) for _ in range(self.concurrency)))

    async def _loop(self, client: httpx.AsyncClient) -> None:
        while not self.stop.is_set():
            started = time.perf_counter()
            try:
                try:
                    response = await client.post(self.url, json={"inputs": ROW}, headers=bearer(self.token))
                except (httpx.ReadError, httpx.RemoteProtocolError):
                    self.resent += 1
                    response = await client.post(self.url, json={"inputs": ROW}, headers=bearer(self.token))
            except httpx.HTTPError as exc:
                self.failures.append(repr(exc))
                continue
            if response.status_code == 200:
                self.ok += 1
                self.latencies.append(time.perf_counter() - started)
            else:
                self.failures.append(f"{response.status_code} {response.text[:200]}")

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies) or [0.0]
        return {"ok": self.ok, "failed": len(self.failures), "resent": self.resent,
                "p50_ms": round(ordered[len(ordered) // 2] * 1000, 1),
                "p99_ms": round(ordered[int(len(ordered) * 0.99)] * 1000, 1), "failures": self.failures[:5]}


@dataclass
class Follower:
    """A /ws/v1/events client of one topic that reconnects (through ``fallback``) and resumes with since."""

    name: str
    url: str
    fallback: str
    token: str
    topic: str
    events: list[dict[str, Any]] = field(default_factory=list)
    connects: list[str] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)  # three events in

    async def follow(self) -> None:
        url = self.url
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        while True:
            try:
                kwargs: dict[str, Any] = {"ssl": context} if url.startswith("wss:") else {}
                async with websockets.connect(url, subprotocols=["bearer", self.token], open_timeout=10,
                                              **kwargs) as ws:  # type: ignore[arg-type]
                    self.connects.append(url)
                    last = self.events[-1] if self.events else None
                    await ws.send(json.dumps({"op": "subscribe", "topic": self.topic,
                                              "since": last["seq"] if last else 0,
                                              "epoch": last["epoch"] if last else None}))
                    while True:
                        message = json.loads(await asyncio.wait_for(ws.recv(), 30))
                        if "seq" in message:
                            self.events.append(message)
                            if len(self.events) >= 3:
                                self.started.set()
                            if message["type"] in ("succeeded", "failed", "cancelled"):
                                return
                        elif message["type"] in ("reset", "error"):
                            raise AssertionError(f"{self.name}: {message}")
            except (OSError, TimeoutError, websockets.WebSocketException):
                url = self.fallback
                await asyncio.sleep(0.3)

    def gaps(self) -> list[str]:
        seqs = [e["seq"] for e in self.events]
        return [] if seqs == list(range(1, len(seqs) + 1)) else [f"{self.name}: {seqs}"]


def _publish_model(client: httpx.Client, token: str, name: str) -> None:
    assert client.post("/api/v1/models", json={"name": name, "visibility": "public"},
                       headers=bearer(token)).status_code == 201
    for seed in (0, 1):
        manifest = json.dumps({"format": "safetensors", "architecture": "mlp", "config": MLP})
        artifact = ("m.safetensors", mlp_bytes(MLP, seed=seed), "application/octet-stream")
        response = client.post(f"/api/v1/models/{name}/versions", headers=bearer(token), data={"manifest": manifest},
                               files={"artifact": artifact})
        assert response.status_code == 201, response.text
    assert client.post(f"/api/v1/models/{name}/versions/1/promote", json={"stage": "production"},
                       headers=bearer(token)).status_code == 200


def test_several_hosts(cluster: Cluster) -> None:
    results: dict[str, Any] = {"load_average": os.getloadavg(), "cpus": os.cpu_count()}
    username, password = f"ops-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    _manage(cluster.env, "from app.accounts.services import user_create; "
                         f"user_create(username={username!r}, password={password!r}, role='maintainer')")
    with httpx.Client(base_url=cluster.edge_url, verify=False, trust_env=False, timeout=60) as edge:
        token = edge.post("/api/v1/auth/token", json={"username": username, "password": password}).json()["access"]
        model = "scale-mlp"
        _publish_model(edge, token, model)
        dataset = edge.post("/api/v1/datasets", headers=bearer(token),
                            files={"file": ("d.csv", classification_csv(rows=400), "text/csv")}).json()
    results["promotion"] = _promotion(cluster, token, model)
    results.update(asyncio.run(_failover(cluster, token, model, dataset["id"])))
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"\nscale results ({RESULTS}):\n{json.dumps(results, indent=2)}")

    promotion = results["promotion"]
    assert promotion["failed"] == 0, promotion
    # B's catalog entry is at most CATALOG_TTL old; then B loads the new version in the background.
    assert promotion["seconds_to_new_version_on_B"] <= CATALOG_TTL + 15, promotion
    for name in ("load_during_kill", "load_during_join"):
        assert results[name]["failed"] == 0, results[name]
    # Losing A costs the clients nothing at all: nginx retried on B, no connection to the edge broke.
    assert results["load_during_kill"]["resent"] == 0, results["load_during_kill"]
    events = results["events"]
    assert events["gaps"] == [], events
    assert events["seen_on_A_before_kill"] >= 1 and events["seen_on_B"] >= 1, events
    assert events["reconnected"] >= 1, events
    joined = results["join"]
    assert joined["predictions_served_by_C"] > 0, joined
    assert joined["upstreams"].get("retried", 0) >= 1, joined  # the edge did retry predictions A dropped
    assert joined["B_restarted"] is False and joined["edge_master_restarted"] is False, joined


def _promotion(cluster: Cluster, token: str, model: str) -> dict[str, Any]:
    """Promote v2 through A while B serves v1 to a steady prober; when does B answer with v2?"""
    b, a = cluster.web_url("B"), cluster.web_url("A")
    failed, probes = 0, 0
    with httpx.Client(trust_env=False, timeout=30) as client:
        for _ in range(20):  # B warm on v1
            response = client.post(f"{b}/api/v1/models/{model}/predict", json={"inputs": ROW}, headers=bearer(token))
            assert response.status_code == 200 and response.json()["version"] == 1, response.text
        promoted = client.post(f"{a}/api/v1/models/{model}/versions/2/promote", json={"stage": "production"},
                               headers=bearer(token))
        assert promoted.status_code == 200, promoted.text
        started = time.monotonic()
        while time.monotonic() - started < 60:
            response = client.post(f"{b}/api/v1/models/{model}/predict", json={"inputs": ROW}, headers=bearer(token))
            probes += 1
            if response.status_code != 200:
                failed += 1
            elif response.json()["version"] == 2:
                break
            time.sleep(0.02)
        seconds = time.monotonic() - started
    return {"seconds_to_new_version_on_B": round(seconds, 3), "catalog_ttl": CATALOG_TTL, "probes": probes,
            "failed": failed}


async def _failover(cluster: Cluster, token: str, model: str, dataset_id: int) -> dict[str, Any]:
    edge_ws = f"wss://{cluster.edge.ip}:{HTTPS_PORT}/ws/v1/events"
    async with httpx.AsyncClient(base_url=cluster.edge_url, verify=False, trust_env=False, timeout=60) as client:
        job = (await client.post("/api/v1/jobs/train", headers=bearer(token), json={
            "dataset_id": dataset_id, "target": "label", "task": "classification", "model_name": "scale-trained",
            "promote": False, "hyperparameters": {"epochs": 60, "patience": 60, "hidden": [16], "batch_size": 32}},
        )).json()
    topic = f"job:{job['id']}"
    followers = [Follower("on-A", f"ws://{cluster.webs['A'].ip}:{WEB_PORT}/ws/v1/events", edge_ws, token, topic),
                 Follower("on-B", f"ws://{cluster.webs['B'].ip}:{WEB_PORT}/ws/v1/events", edge_ws, token, topic)]
    followers += [Follower(f"edge-{i}", edge_ws, edge_ws, token, topic) for i in range(4)]
    following = [asyncio.create_task(f.follow()) for f in followers]
    load = Load(f"{cluster.edge_url}/api/v1/models/{model}/predict", token)
    loading = asyncio.create_task(load.run())
    async with asyncio.timeout(300):
        await asyncio.gather(*(f.started.wait() for f in followers))
    seen_on_a = len(followers[0].events)
    await asyncio.sleep(2)
    before_kill = load.summary()
    killed_at = time.monotonic()
    killed = await asyncio.to_thread(cluster.webs["A"].kill_all)
    await asyncio.sleep(5)
    during_kill = load.summary()
    during_kill.update(ok=during_kill["ok"] - before_kill["ok"], resent=during_kill["resent"] - before_kill["resent"],
                       killed_pids=len(killed))
    b_pids = set(cluster.webs["B"].pids())
    master = cluster.nginx_master()
    before_join = load.summary()
    join_started = time.monotonic()
    await asyncio.to_thread(cluster.start_web, "C")
    await asyncio.to_thread(cluster.reload_edge)
    seconds_to_join = time.monotonic() - join_started
    await asyncio.sleep(5)
    counts = cluster.upstream_counts()
    during_join = load.summary()
    during_join["ok"] -= before_join["ok"]
    during_join["resent"] -= before_join["resent"]
    async with asyncio.timeout(400):
        await asyncio.gather(*following)
    load.stop.set()
    await loading
    reference = [(e["seq"], e["type"]) for e in followers[1].events]
    gaps = [gap for f in followers for gap in f.gaps()]
    gaps += [f.name for f in followers if [(e["seq"], e["type"]) for e in f.events] != reference]
    return {
        "events": {"topic": topic, "events": len(reference), "seen_on_A_before_kill": seen_on_a,
                   "seen_on_B": len(followers[1].events), "gaps": gaps,
                   "reconnected": sum(len(f.connects) > 1 for f in followers),
                   "connects": {f.name: f.connects for f in followers}},
        "load_before_kill": before_kill, "load_during_kill": during_kill, "load_during_join": during_join,
        "load_total": load.summary(), "killed_at_s": round(killed_at, 1),
        "join": {"seconds_to_join": round(seconds_to_join, 1), "predictions_served_by_C":
                 counts.get(f"{cluster.webs['C'].ip}:{WEB_PORT}", 0), "upstreams": counts,
                 "B_restarted": not b_pids <= set(cluster.webs["B"].pids()),
                 "edge_master_restarted": cluster.nginx_master() != master},
    }
