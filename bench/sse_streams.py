"""Concurrent Server-Sent Events streams one web process holds on PostgreSQL (issue 10, item 1).

One uvicorn process with production settings and the default database pool (bench/service.py, with
``DATABASE_URL`` pointed at a fresh PostgreSQL database) gets N streams of one job's events
(``GET /api/v1/jobs/{id}/events``) opened at once from raw sockets. With every stream open it measures
a plain ``GET /api/v1/jobs/{id}`` (the "other routes are unaffected" check), the database connections
the server holds (pg_stat_activity), its memory and threads; then it cancels the job and times how
long the ``cancelled`` event takes to reach every stream.

    .venv/bin/python bench/sse_streams.py [--streams 1000] [--admin-url postgres://postgres@127.0.0.1:5432/postgres]

Prints one JSON object; the figure goes into bench/RESULTS.md by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service import start_service

from tests.faults.sse_client import SseStream, open_stream  # imports nothing from Django


def _proc_status(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "Threads"):
            out[name] = int(value.split()[0])
    return out


def _connections(admin_url: str, database: str) -> int:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [database]).fetchone()
    return int(row[0]) if row else 0


def _csv(rows: int = 200) -> bytes:
    lines = ["x,y,label"] + [f"{i % 7},{i % 11},{'a' if i % 2 else 'b'}" for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


async def _measure(service_url: str, key: str, job_id: int, streams_wanted: int, admin_url: str,
                   database: str, pid: int) -> dict[str, Any]:
    url = urlsplit(service_url)
    host, port = url.hostname or "127.0.0.1", int(url.port or 80)
    path = f"/api/v1/jobs/{job_id}/events"
    started = time.perf_counter()
    opened = await asyncio.gather(*(open_stream(host, port, path, token=key) for _ in range(streams_wanted)),
                                  return_exceptions=True)
    streams: list[SseStream] = [s for s in opened if isinstance(s, SseStream) and s.status == 200]
    refused = [s.status if isinstance(s, SseStream) else type(s).__name__ for s in opened
               if not (isinstance(s, SseStream) and s.status == 200)]
    heads = await asyncio.gather(*(asyncio.wait_for(s.frame(), 120) for s in streams), return_exceptions=True)
    subscribed = sum(1 for h in heads if isinstance(h, dict) and h.get("event") == "subscribed")
    open_seconds = time.perf_counter() - started
    result: dict[str, Any] = {"streams_requested": streams_wanted, "streams_subscribed": subscribed,
                              "refused": {str(k): refused.count(k) for k in set(refused)},
                              "seconds_to_open_all": round(open_seconds, 2)}
    try:
        async with httpx.AsyncClient(base_url=service_url, timeout=30,
                                     headers={"Authorization": f"Bearer {key}"}) as api:
            latencies, statuses = [], []
            for _ in range(50):
                t0 = time.perf_counter()
                response = await api.get(f"/api/v1/jobs/{job_id}")
                latencies.append((time.perf_counter() - t0) * 1000)
                statuses.append(response.status_code)
            result["other_route_get_job"] = {
                "statuses": {str(s): statuses.count(s) for s in set(statuses)},
                "p50_ms": round(statistics.median(latencies), 1), "max_ms": round(max(latencies), 1)}
            result["db_connections_with_streams_open"] = _connections(admin_url, database)
            result["server"] = _proc_status(pid)
            t0 = time.perf_counter()
            cancelled = await api.post(f"/api/v1/jobs/{job_id}/cancel")
            assert cancelled.status_code == 200, cancelled.text
            events = await asyncio.gather(*(asyncio.wait_for(s.frame(), 120) for s in streams),
                                          return_exceptions=True)
            result["cancelled_event_delivered"] = sum(
                1 for e in events if isinstance(e, dict) and e.get("event") == "cancelled")
            result["seconds_to_deliver_to_all"] = round(time.perf_counter() - t0, 2)
    finally:
        for stream in streams:
            stream.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--admin-url", default=os.environ.get("BENCH_POSTGRES_URL",
                                                              "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--pool-max", type=int, default=None, help="DATABASE_POOL_MAX (default: the settings')")
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, 4 * args.streams + 1024))
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))  # the server inherits it
    admin_url = args.admin_url.replace("postgres://", "postgresql://", 1)
    database = f"bench_sse_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    parts = urlsplit(admin_url)
    db_url = parts._replace(scheme="postgres", path=f"/{database}").geturl()
    extra = {"DATABASE_URL": db_url}
    if args.pool_max:
        extra["DATABASE_POOL_MAX"] = str(args.pool_max)
    service = start_service(server_cpus=None, extra_env=extra)
    try:
        with httpx.Client(base_url=service.url, timeout=60,
                          headers={"Authorization": f"Bearer {service.api_key}"}) as client:
            dataset = client.post("/api/v1/datasets", files={"file": ("d.csv", _csv(), "text/csv")})
            assert dataset.status_code == 201, dataset.text
            job = client.post("/api/v1/jobs/train", json={"dataset_id": dataset.json()["id"], "target": "label",
                                                          "task": "classification", "model_name": "sse-bench"})
            assert job.status_code == 201, job.text
        result = asyncio.run(_measure(service.url, service.api_key, job.json()["id"], args.streams, admin_url,
                                      database, service.pid))
        result["pool_max"] = args.pool_max or "default (DATABASE_POOL_MAX unset)"
        result["server_log_tracebacks"] = service.log.read_text(errors="replace").count("Traceback")
        print(json.dumps(result, indent=2))
        ok = result["streams_subscribed"] == args.streams and result["cancelled_event_delivered"] == args.streams
        return 0 if ok else 1
    finally:
        service.stop()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


if __name__ == "__main__":
    sys.exit(main())
