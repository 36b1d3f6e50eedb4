"""Long-lived SSE streams hold no database connection: a web process with a pool of 5 keeps 300 streams
open, answers other routes meanwhile, and delivers a live event to every stream (bench/sse_streams.py
measures 1,000 on the default pool)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import off_loop
from tests.faults.sse_client import SseStream, open_stream
from tests.support import bearer, login, start_uvicorn

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

STREAMS = 300


def _queued_job(owner_pk: int) -> int:
    from app.accounts.models import User
    from app.jobs.models import Job, JobKind

    return int(Job.objects.create(owner=User.objects.get(pk=owner_pk), kind=JobKind.TRAIN).pk)


def _threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Threads:")).split()[1])


async def _next_event(stream: SseStream) -> dict[str, str]:
    return await asyncio.wait_for(stream.frame(), 60)


def test_streams_do_not_hold_pooled_connections(service_env, make_user):
    if not service_env["DATABASE_URL"].startswith("postgres"):
        pytest.skip("the connection pool is PostgreSQL's")
    server = start_uvicorn({**service_env, "DATABASE_POOL_MAX": "5", "DATABASE_POOL_TIMEOUT": "5"})
    try:
        account = make_user("member")
        job_id = off_loop(_queued_job, account.pk)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            token = login(client, account)["access"]
        url = urlsplit(server.url)
        host, port = url.hostname or "127.0.0.1", int(url.port or 80)

        async def scenario() -> None:
            streams = await asyncio.gather(*(
                open_stream(host, port, f"/api/v1/jobs/{job_id}/events", token=token) for _ in range(STREAMS)))
            try:
                refused = [s.body[:200] for s in streams if s.status != 200]
                assert not refused, f"{len(refused)} refused, e.g. {refused[0]!r}"
                heads = await asyncio.gather(*(_next_event(s) for s in streams))
                assert {h["event"] for h in heads} == {"subscribed"}
                # Nor a thread each (a container's pid limit would cap the streams instead).
                assert _threads(server.proc.pid) < STREAMS // 3
                async with httpx.AsyncClient(base_url=server.url, timeout=30, headers=bearer(token)) as api:
                    # Other routes are unaffected while every stream is open: each needs a connection.
                    answers = await asyncio.gather(*(api.get(f"/api/v1/jobs/{job_id}") for _ in range(20)))
                    assert [a.status_code for a in answers] == [200] * 20
                    assert answers[0].json()["state"] == "queued"
                    cancelled = await api.post(f"/api/v1/jobs/{job_id}/cancel")
                    assert cancelled.status_code == 200, cancelled.text
                    events = await asyncio.gather(*(_next_event(s) for s in streams))
                    assert {e["event"] for e in events} == {"cancelled"}
                    assert {json.loads(e["data"])["seq"] for e in events} == {1}
                    # A stream that opens now still gets its snapshot (Last-Event-ID from another epoch).
                    late = await open_stream(host, port, f"/api/v1/jobs/{job_id}/events", token=token,
                                             headers={"Last-Event-ID": "5:nosuchepoch"})
                    frames = [await _next_event(late), await _next_event(late)]
                    late.close()
                    assert [f["event"] for f in frames] == ["subscribed", "reset"]
                    assert json.loads(frames[1]["data"])["snapshot"]["job"]["state"] == "cancelled"
            finally:
                for stream in streams:
                    stream.close()

        asyncio.run(scenario())
        log = server.log.read_text(errors="replace")
        assert "Traceback" not in log and "PoolTimeout" not in log, server.log_tail()
    finally:
        server.stop()
