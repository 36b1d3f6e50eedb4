"""Websocket handshake authentication against the real server with the `websockets` client."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support import bearer, login, make_jwt

pytestmark = pytest.mark.django_db(transaction=True)


async def _refused(uri: str, **kwargs: object) -> int:
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(uri, open_timeout=10, **kwargs):
            pass
    return info.value.response.status_code


async def test_echo_with_bearer_subprotocol(server, client, make_user):
    account = make_user()
    access = login(client, account)["access"]
    async with websockets.connect(f"{server.ws_url}/ws/v1/echo", subprotocols=["bearer", access]) as ws:
        assert ws.subprotocol == "bearer"
        await ws.send(json.dumps({"hello": 1}))
        answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert answer == {"type": "echo", "user": account.username, "data": {"hello": 1}}
        await ws.send("not json")
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["code"] == "bad_json"


async def test_api_key_works_as_bearer(server, client, make_user):
    access = login(client, make_user())["access"]
    key = client.post("/api/v1/auth/api-keys", json={}, headers=bearer(access)).json()["key"]
    async with websockets.connect(f"{server.ws_url}/ws/v1/echo", subprotocols=["bearer", key]) as ws:
        await ws.send("{}")
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "echo"


async def test_no_or_bad_credentials_are_refused(server, make_user):
    account = make_user()
    url = f"{server.ws_url}/ws/v1/echo"
    assert await _refused(url) == 403
    assert await _refused(url, subprotocols=["bearer", "garbage"]) == 403
    assert await _refused(url, subprotocols=["bearer", make_jwt(account.pk, key="k" * 64)]) == 403
    assert await _refused(url, subprotocols=["bearer", make_jwt(account.pk, lifetime=-1)]) == 403
    assert await _refused(url, subprotocols=["bearer", make_jwt(account.pk, token_type="refresh")]) == 403
    assert await _refused(f"{url}?ticket=made-up") == 403


async def test_foreign_origin_is_refused(server, client, make_user):
    access = login(client, make_user())["access"]
    url = f"{server.ws_url}/ws/v1/echo"
    assert await _refused(url, subprotocols=["bearer", access], origin="https://evil.example") == 403
    async with websockets.connect(url, subprotocols=["bearer", access], origin="http://localhost:8000") as ws:
        await ws.send("{}")
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "echo"


async def test_ticket_is_single_use(server, client, make_user):
    access = login(client, make_user())["access"]
    response = client.post("/api/v1/realtime/tickets", headers=bearer(access))
    assert response.status_code == 201
    ticket = response.json()["ticket"]
    assert response.json()["expires_in"] == 30
    async with websockets.connect(f"{server.ws_url}/ws/v1/echo?ticket={ticket}") as ws:
        assert ws.subprotocol is None
        await ws.send('{"a": 2}')
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["data"] == {"a": 2}
    assert await _refused(f"{server.ws_url}/ws/v1/echo?ticket={ticket}") == 403


def test_ticket_endpoint_requires_auth(client):
    assert client.post("/api/v1/realtime/tickets").status_code == 401


async def test_socket_closed_with_4401_when_token_expires(server, make_user):
    account = make_user()
    short = make_jwt(account.pk, lifetime=2)
    async with websockets.connect(f"{server.ws_url}/ws/v1/echo", subprotocols=["bearer", short]) as ws:
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert message["type"] == "error" and message["code"] == "token_expired"
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 10)
        assert info.value.rcvd is not None and info.value.rcvd.code == 4401


async def test_unknown_ws_route_is_closed(server, client, make_user):
    access = login(client, make_user())["access"]
    async with websockets.connect(f"{server.ws_url}/ws/v1/nope", subprotocols=["bearer", access]) as ws:
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 10)
        assert info.value.rcvd is not None and info.value.rcvd.code == 4404
