"""Correctly signed JWTs whose claims have the wrong type or range (app/accounts/tokens.py): refused with
401 (or a refused handshake) wherever a token is read, never a 500 or a traceback in the server log."""

from __future__ import annotations

import asyncio

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.support import Server, bearer, login, make_jwt

pytestmark = pytest.mark.django_db(transaction=True)

BAD_CLAIMS: dict[str, dict[str, object]] = {
    "user_id list": {"user_id": [1]},
    "user_id dict": {"user_id": {"pk": 1}},
    "user_id float": {"user_id": 1.5},
    "user_id huge": {"user_id": 2**70},
    "user_id string": {"user_id": "1"},
    "user_id bool": {"user_id": True},
    "user_id zero": {"user_id": 0},
    "user_id null": {"user_id": None},
    "exp huge": {"exp": 2**70},
    "exp float huge": {"exp": 1e300},
    "exp string": {"exp": "tomorrow"},
    "jti list": {"jti": ["a"]},
    "jti number": {"jti": 12},
    "jti long": {"jti": "j" * 300},
    "jti empty": {"jti": ""},
    "token_type list": {"token_type": ["access"]},
    "iat huge": {"iat": 2**70},
    "iat list": {"iat": [1]},
}


def _token(account_pk: int, token_type: str, claims: dict[str, object]) -> str:
    claims = {"user_id": account_pk, "token_type": token_type, **claims}
    return make_jwt(claims.pop("user_id"), **claims)  # type: ignore[arg-type]


class LogWatch:
    """The part of the server log written since it was created."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.start = server.log.stat().st_size

    def new(self) -> str:
        with self.server.log.open("rb") as fh:
            fh.seek(self.start)
            return fh.read().decode(errors="replace")


def test_bad_claims_are_401_on_every_http_reader(server, client, make_user):
    account = make_user("admin")
    watch = LogWatch(server)
    for case, claims in BAD_CLAIMS.items():
        access = bearer(_token(account.pk, "access", claims))
        refresh = _token(account.pk, "refresh", claims)
        answers = {
            "me": client.get("/api/v1/me", headers=access),  # Django + ninja bearer auth
            "sse": client.get("/api/v1/jobs/1/events", headers=access),
            "predict": client.post("/api/v1/models/m/predict", json={"inputs": [[1.0]]}, headers=access),
            "v2 infer": client.post("/v2/models/m/infer", json={"inputs": []}, headers=access),
            "v2 metadata": client.get("/v2/models/m", headers=access),  # V2 through Django
            "metrics": client.get("/metrics", headers={**access, "X-Real-IP": "203.0.113.1"}),
            "refresh": client.post("/api/v1/auth/token/refresh", json={"refresh": refresh}),
            "revoke": client.post("/api/v1/auth/token/revoke", json={"refresh": refresh}),
        }
        for reader, response in answers.items():
            assert response.status_code == 401, (case, reader, response.text)
            assert response.headers["content-type"].startswith("application/json"), (case, reader)
    assert "Traceback" not in watch.new()


async def test_bad_claims_refuse_the_websocket_handshake(server, make_user):
    account = make_user()
    watch = LogWatch(server)
    for case, claims in BAD_CLAIMS.items():
        token = _token(account.pk, "access", claims)
        with pytest.raises(InvalidStatus) as info:
            async with websockets.connect(f"{server.ws_url}/ws/v1/echo", subprotocols=["bearer", token],
                                          open_timeout=10):
                pass
        assert info.value.response.status_code == 403, case
    await asyncio.sleep(0.2)
    assert "Traceback" not in watch.new()


def test_well_formed_tokens_still_work(client, make_user):
    """The checks accept what the service itself issues, and a refreshed pair is accepted again."""
    account = make_user()
    tokens = login(client, account)
    assert client.get("/api/v1/me", headers=bearer(tokens["access"])).status_code == 200
    assert client.get("/api/v1/me", headers=bearer(make_jwt(account.pk))).status_code == 200
    fresh = client.post("/api/v1/auth/token/refresh", json={"refresh": tokens["refresh"]})
    assert fresh.status_code == 200, fresh.text
    assert client.get("/api/v1/me", headers=bearer(fresh.json()["access"])).status_code == 200
