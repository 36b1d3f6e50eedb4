"""Auth, tokens, API keys and the error envelope, through the real uvicorn server."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest

from tests.support import bearer, login, make_jwt

pytestmark = pytest.mark.django_db(transaction=True)


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and {"code", "message", "details"} <= set(body["error"]), body
    return body["error"]


def test_login_me_and_request_id(client, make_user):
    account = make_user("maintainer")
    tokens = login(client, account)
    assert set(tokens) == {"access", "refresh"}
    response = client.get("/api/v1/me", headers={**bearer(tokens["access"]), "X-Request-ID": "req-abc.123"})
    assert response.status_code == 200
    assert response.json() == {"username": account.username, "email": "", "role": "maintainer", "api_keys": []}
    assert response.headers["X-Request-ID"] == "req-abc.123"
    generated = client.get("/healthz").headers["X-Request-ID"]
    assert len(generated) == 32
    # A header that could forge log lines is replaced, not echoed.
    forged = client.get("/healthz", headers={"X-Request-ID": "bad id<script>"})
    assert forged.headers["X-Request-ID"] != "bad id<script>"


def test_wrong_password_and_unknown_user(client, make_user):
    account = make_user()
    err = _error(client.post("/api/v1/auth/token", json={"username": account.username, "password": "nope"}), 401)
    assert "credentials" in err["message"]
    _error(client.post("/api/v1/auth/token", json={"username": "ghost", "password": "x"}), 401)


def test_login_is_rate_limited_per_user_and_address(client, make_user):
    account = make_user()
    for _ in range(10):
        _error(client.post("/api/v1/auth/token", json={"username": account.username, "password": "bad"}), 401)
    response = client.post("/api/v1/auth/token", json={"username": account.username, "password": account.password})
    err = _error(response, 429)
    assert int(response.headers["Retry-After"]) >= 1
    assert err["code"] == "rate_limited"
    # Other users are not locked out by someone else's failures.
    login(client, make_user())


def test_validation_errors_name_the_field(client):
    err = _error(client.post("/api/v1/auth/token", json={"username": 5}), 422)
    fields = {d["field"] for d in err["details"]}
    assert fields == {"username", "password"}
    err = _error(client.post("/api/v1/auth/token", content=b"{not json", headers={"content-type": "application/json"}),
                 422)
    assert err["code"] == "invalid_json"


def test_not_found_and_method_not_allowed_are_json(client, make_user):
    _error(client.get("/api/v1/does-not-exist"), 404)
    tokens = login(client, make_user())
    err = _error(client.put("/api/v1/me", headers=bearer(tokens["access"])), 405)
    assert err["code"] == "method_not_allowed"


def test_body_over_limit_is_413(client):
    big = b'{"username": "' + b"a" * (9 * 1024 * 1024) + b'", "password": "x"}'
    err = _error(client.post("/api/v1/auth/token", content=big, headers={"content-type": "application/json"}), 413)
    assert err["code"] == "payload_too_large"


def test_missing_and_malformed_credentials(client):
    _error(client.get("/api/v1/me"), 401)
    _error(client.get("/api/v1/me", headers={"Authorization": "Bearer"}), 401)
    _error(client.get("/api/v1/me", headers={"Authorization": "Bearer garbage"}), 401)
    _error(client.get("/api/v1/me", headers={"Authorization": "Basic dXNlcjpwYXNz"}), 401)


def test_expired_token(client, make_user):
    account = make_user()
    err = _error(client.get("/api/v1/me", headers=bearer(make_jwt(account.pk, lifetime=-5))), 401)
    assert "expired" in err["message"].lower() or "invalid" in err["message"].lower()


def test_token_signed_with_another_key(client, make_user):
    account = make_user()
    _error(client.get("/api/v1/me", headers=bearer(make_jwt(account.pk, key="x" * 64))), 401)


def test_alg_none_is_refused(client, make_user):
    account = make_user()
    now = int(time.time())
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "JWT"}).encode()).rstrip(b"=")
    claims = {"token_type": "access", "exp": now + 300, "iat": now, "jti": "abc", "user_id": account.pk,
              "aud": "torchwire", "iss": "torchwire"}
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    token = (header + b"." + payload + b".").decode()
    _error(client.get("/api/v1/me", headers=bearer(token)), 401)


def test_other_algorithms_are_refused(client, make_user):
    account = make_user()
    import os

    token = make_jwt(account.pk, alg="HS512", key=os.environ["SECRET_KEY"])
    _error(client.get("/api/v1/me", headers=bearer(token)), 401)


def test_wrong_audience_and_issuer(client, make_user):
    account = make_user()
    assert client.get("/api/v1/me", headers=bearer(make_jwt(account.pk))).status_code == 200
    _error(client.get("/api/v1/me", headers=bearer(make_jwt(account.pk, aud="someone-else"))), 401)
    _error(client.get("/api/v1/me", headers=bearer(make_jwt(account.pk, iss="evil"))), 401)


def test_refresh_token_is_not_an_access_token(client, make_user):
    tokens = login(client, make_user())
    err = _error(client.get("/api/v1/me", headers=bearer(tokens["refresh"])), 401)
    assert "type" in err["message"]


def test_refresh_rotates_and_old_refresh_is_dead(client, make_user):
    tokens = login(client, make_user())
    response = client.post("/api/v1/auth/token/refresh", json={"refresh": tokens["refresh"]})
    assert response.status_code == 200, response.text
    pair = response.json()
    assert pair["refresh"] != tokens["refresh"]
    assert client.get("/api/v1/me", headers=bearer(pair["access"])).status_code == 200
    _error(client.post("/api/v1/auth/token/refresh", json={"refresh": tokens["refresh"]}), 401)
    # The new one works once, too.
    assert client.post("/api/v1/auth/token/refresh", json={"refresh": pair["refresh"]}).status_code == 200


def test_access_token_cannot_refresh(client, make_user):
    tokens = login(client, make_user())
    _error(client.post("/api/v1/auth/token/refresh", json={"refresh": tokens["access"]}), 401)


def test_revoke_refresh_token(client, make_user):
    tokens = login(client, make_user())
    assert client.post("/api/v1/auth/token/revoke", json={"refresh": tokens["refresh"]}).status_code == 204
    _error(client.post("/api/v1/auth/token/refresh", json={"refresh": tokens["refresh"]}), 401)
    _error(client.post("/api/v1/auth/token/revoke", json={"refresh": tokens["refresh"]}), 401)


def test_inactive_user_is_refused(client, make_user):
    from app.accounts.models import User

    account = make_user()
    tokens = login(client, account)
    User.objects.filter(pk=account.pk).update(is_active=False)
    _error(client.get("/api/v1/me", headers=bearer(tokens["access"])), 401)
    _error(client.post("/api/v1/auth/token/refresh", json={"refresh": tokens["refresh"]}), 401)


def test_api_key_lifecycle(client, make_user):
    account = make_user("viewer")
    access = login(client, account)["access"]
    response = client.post("/api/v1/auth/api-keys", json={"name": "ci"}, headers=bearer(access))
    assert response.status_code == 201, response.text
    created = response.json()
    key, prefix = created["key"], created["prefix"]
    assert key.startswith(f"tw_{prefix}_") and len(key.split("_")[2]) >= 32

    me = client.get("/api/v1/me", headers=bearer(key))
    assert me.status_code == 200 and me.json()["api_keys"] == [prefix] and me.json()["role"] == "viewer"
    listed = client.get("/api/v1/auth/api-keys", headers=bearer(key)).json()
    assert [k["prefix"] for k in listed] == [prefix] and "key" not in listed[0]

    from app.accounts.models import ApiKey

    stored = ApiKey.objects.get(prefix=prefix)
    assert key.split("_")[2] not in stored.secret_hash

    _error(client.get("/api/v1/me", headers=bearer(key[:-1] + ("0" if key[-1] != "0" else "1"))), 401)
    assert client.delete(f"/api/v1/auth/api-keys/{prefix}", headers=bearer(access)).status_code == 204
    err = _error(client.get("/api/v1/me", headers=bearer(key)), 401)
    assert "revoked" in err["message"]
    _error(client.delete(f"/api/v1/auth/api-keys/{prefix}", headers=bearer(access)), 404)


def test_other_users_key_is_404_and_untouched(client, make_user):
    owner, other = make_user(), make_user()
    owner_access = login(client, owner)["access"]
    created = client.post("/api/v1/auth/api-keys", json={}, headers=bearer(owner_access)).json()
    other_access = login(client, other)["access"]
    err = _error(client.delete(f"/api/v1/auth/api-keys/{created['prefix']}", headers=bearer(other_access)), 404)
    assert created["prefix"] not in json.dumps(err)
    assert client.get("/api/v1/me", headers=bearer(created["key"])).status_code == 200


def test_workers_endpoint_is_admin_only(client, make_user):
    member = login(client, make_user("maintainer"))["access"]
    err = _error(client.get("/api/v1/system/workers", headers=bearer(member)), 403)
    assert "admin" in err["message"]


def test_openapi_and_docs(client):
    spec = client.get("/api/v1/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    for path in ("/api/v1/auth/token", "/api/v1/auth/token/refresh", "/api/v1/auth/token/revoke", "/api/v1/me",
                 "/api/v1/auth/api-keys", "/api/v1/auth/api-keys/{prefix}", "/api/v1/realtime/tickets"):
        assert path in paths, path
    docs = client.get("/api/v1/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_admin_site_is_served(client):
    response = client.get("/admin/login/")
    assert response.status_code == 200 and "Django" in response.text
