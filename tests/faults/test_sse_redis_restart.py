"""SSE streams through a Redis restart: open streams keep going and get the next event once Redis is
back; a stream opened while Redis is down ends with an ``error`` event (code ``unavailable``) that tells
the client to reconnect. No "Exception in ASGI application", no traceback."""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import off_loop
from tests.faults.sse_client import SseStream, open_stream
from tests.faults.test_sse_capacity import _queued_job
from tests.private_services import private_redis
from tests.support import bearer, login, start_uvicorn

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


async def _next_event(stream: SseStream) -> dict[str, str]:
    return await asyncio.wait_for(stream.frame(), 30)


def test_sse_streams_through_a_redis_restart(service_env, make_user):
    with private_redis() as redis_server:
        server = start_uvicorn({**service_env, "REDIS_URL": redis_server.url, "TORCHWIRE_WS_PING_SECONDS": "1"})
        try:
            account = make_user("member")
            job_id = off_loop(_queued_job, account.pk)
            with httpx.Client(base_url=server.url, timeout=30) as client:
                token = login(client, account)["access"]
            url = urlsplit(server.url)
            host, port = url.hostname or "127.0.0.1", int(url.port or 80)
            path = f"/api/v1/jobs/{job_id}/events"

            async def scenario() -> None:
                streams = [await open_stream(host, port, path, token=token) for _ in range(3)]
                assert [(await _next_event(s))["event"] for s in streams] == ["subscribed"] * 3
                redis_server.stop()
                try:
                    # Opened while Redis is down: told to come back, and the stream ends.
                    refused = await open_stream(host, port, path, token=token)
                    assert refused.status == 200
                    frames = await asyncio.wait_for(refused.frames_until_end(), 30)
                    assert [f["event"] for f in frames] == ["error"], frames
                    assert frames[0]["retry"] == "2000"
                    assert json.loads(frames[0]["data"])["code"] == "unavailable"
                    # The open ones keep pinging through the outage.
                    await asyncio.sleep(3)
                    for stream in streams:
                        assert not stream._eof
                finally:
                    redis_server.start()
                await asyncio.sleep(1.5)
                async with httpx.AsyncClient(base_url=server.url, timeout=30, headers=bearer(token)) as api:
                    cancelled = await api.post(f"/api/v1/jobs/{job_id}/cancel")
                    assert cancelled.status_code == 200, cancelled.text
                # Delivered on the streams that lived through the restart, without a reconnect.
                events = await asyncio.gather(*(_next_event(s) for s in streams))
                assert [e["event"] for e in events] == ["cancelled"] * 3, events
                assert all(s.comments.count("ping") >= 2 for s in streams)
                for stream in streams:
                    stream.close()

            asyncio.run(scenario())
            # Streams the clients close after the restart end quietly too.
            time.sleep(1)
            log = server.log.read_text(errors="replace")
            assert "Exception in ASGI application" not in log and "Traceback" not in log, server.log_tail(80)
            assert log.count("channel layer: Redis unreachable") <= 1
        finally:
            server.stop()


def test_sse_stream_closed_by_its_client_while_redis_is_down(service_env, make_user):
    """The stream's clean-up cannot reach Redis: it gives up quietly, and the next stream works."""
    with private_redis() as redis_server:
        server = start_uvicorn({**service_env, "REDIS_URL": redis_server.url, "TORCHWIRE_WS_PING_SECONDS": "1"})
        try:
            account = make_user("member")
            job_id = off_loop(_queued_job, account.pk)
            with httpx.Client(base_url=server.url, timeout=30) as client:
                token = login(client, account)["access"]
            url = urlsplit(server.url)
            host, port = url.hostname or "127.0.0.1", int(url.port or 80)
            path = f"/api/v1/jobs/{job_id}/events"

            async def scenario() -> None:
                stream = await open_stream(host, port, path, token=token)
                assert (await _next_event(stream))["event"] == "subscribed"
                redis_server.stop()
                await asyncio.sleep(1.5)
                stream.close()
                await asyncio.sleep(1.5)
                redis_server.start()
                await asyncio.sleep(1.5)
                again = await open_stream(host, port, path, token=token)
                assert (await _next_event(again))["event"] == "subscribed"
                again.close()

            asyncio.run(scenario())
            time.sleep(1)
            log = server.log.read_text(errors="replace")
            assert "Exception in ASGI application" not in log and "Traceback" not in log, server.log_tail(80)
        finally:
            server.stop()
