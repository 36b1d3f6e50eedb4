"""`make run-prod` serves the console through nginx: pages go to the Next.js server, the backend's paths
to the uvicorn workers, on one HTTPS origin; the session cookie is Secure there."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.console.support import require_console
from tests.nginx.test_run_prod import LaunchedProd


@pytest.fixture
def launched() -> Iterator[LaunchedProd]:
    require_console()
    launched = LaunchedProd()
    try:
        yield launched
    finally:
        launched.close()


def test_console_behind_nginx(launched: LaunchedProd) -> None:
    launched.wait_ready()
    base = launched.base_url
    with httpx.Client(base_url=base, verify=launched.tls(), timeout=20) as client:
        first = client.get("/models")
        assert first.status_code == 303, launched.log()
        assert first.headers["location"] in ("/login?next=%2Fmodels", f"{base}/login?next=%2Fmodels")
        login = client.get("/login")
        assert login.status_code == 200 and "<html" in login.text
        assert re.search(r"script-src 'self' 'nonce-[^']+' 'strict-dynamic'", login.headers["content-security-policy"])
        # nginx's security headers, once each (the console's own copies are hidden).
        assert login.headers.get_list("x-frame-options") == ["DENY"]
        assert login.headers["strict-transport-security"].startswith("max-age=")
        # Build assets come from disk through nginx, gzipped by the build, cached for good.
        script = re.search(r'src="(/_next/static/chunks/[^"]+\.js)"', login.text)
        assert script is not None, login.text[:2000]
        asset = client.get(script.group(1), headers={"Accept-Encoding": "gzip"})
        assert asset.status_code == 200 and asset.headers["content-encoding"] == "gzip"
        assert "immutable" in asset.headers["cache-control"]

        password = (launched.var_dir / "admin-password.txt").read_text().strip()
        refused = client.post("/session/login", json={"username": "admin", "password": password},
                              headers={"Origin": "https://evil.example"})
        assert refused.status_code == 403
        signed_in = client.post("/session/login", json={"username": "admin", "password": password},
                                headers={"Origin": base})
        assert signed_in.status_code == 200, f"{signed_in.text}\n{launched.log()[-4000:]}"
        assert signed_in.json()["user"] == {"username": "admin", "role": "admin"}
        cookie = signed_in.headers["set-cookie"]
        assert cookie.startswith("tw_session=") and "Secure" in cookie and "HttpOnly" in cookie
        assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
        overview = client.get("/", cookies={"tw_session": signed_in.cookies["tw_session"]})
        assert overview.status_code == 200 and "Readiness" in overview.text
        # The access token the browser holds calls the API directly, through nginx.
        me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {signed_in.json()['access']}"})
        assert me.status_code == 200
    assert "console" in launched.log()
