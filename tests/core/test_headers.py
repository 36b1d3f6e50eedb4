"""app/core/headers.py and SecurityHeadersMiddleware: every answer carries the security headers, with a
Content-Security-Policy that lets API answers load nothing and HTML pages only this site's own assets."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from app.core.headers import API_POLICY, PAGE_POLICY
from tests.support import bearer, login

pytestmark = pytest.mark.django_db(transaction=True)

COMMON = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
}


def _assert_secured(response: httpx.Response, policy: str) -> None:
    for name, value in {**COMMON, "content-security-policy": policy}.items():
        assert response.headers.get_list(name) == [value], (response.request.url, name, response.headers)


class _Assets(HTMLParser):
    """The URLs a page loads, and anything a strict policy would block: inline scripts, inline styles,
    event-handler attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name, value in attrs:
            if name.startswith("on") or name == "style":
                self.inline.append(f"<{tag} {name}={value!r}>")
        if tag == "script":
            if values.get("src"):
                self.urls.append(values["src"] or "")
            elif values.get("type") not in ("application/json",):
                self._in_script = True
        elif tag == "link" and values.get("href"):
            self.urls.append(values["href"] or "")
        elif tag == "img" and values.get("src"):
            self.urls.append(values["src"] or "")
        elif tag == "style":
            self.inline.append("<style>")

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(f"<script>{data.strip()[:80]}")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False


def _page_assets(client: httpx.Client, response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    _assert_secured(response, PAGE_POLICY)
    parsed = _Assets()
    parsed.feed(response.text)
    assert not parsed.inline, (response.request.url, parsed.inline)
    for url in parsed.urls:
        # This site's own files (static files, the admin's translation catalog): no CDN, no other origin.
        assert url.startswith("/") and not url.startswith("//"), (response.request.url, url)
        assert client.get(url).status_code == 200, url
    return parsed.urls


def test_api_answers_carry_the_strict_policy(client, make_user):
    token = login(client, make_user("member"))["access"]
    _assert_secured(client.get("/api/v1/me", headers=bearer(token)), API_POLICY)
    _assert_secured(client.get("/api/v1/me"), API_POLICY)  # 401 from the API's own handler
    _assert_secured(client.get("/healthz"), API_POLICY)
    _assert_secured(client.get("/v2/models/nope", headers=bearer(token)), API_POLICY)


def test_envelopes_rebuilt_by_the_middleware_keep_every_header(client, make_user):
    token = login(client, make_user("member"))["access"]
    missing = client.get("/api/v1/no-such-route", headers=bearer(token))
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    _assert_secured(missing, API_POLICY)
    assert missing.headers["x-request-id"]
    wrong_method = client.put("/api/v1/models", headers=bearer(token))
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"]
    _assert_secured(wrong_method, API_POLICY)


def test_the_fast_path_answers_with_the_same_headers(client, publish_model):
    model = publish_model("headers-fast")
    ok = client.post("/api/v1/models/headers-fast/predict", json={"inputs": [[0.1, 0.2, 0.3, 0.4]]},
                     headers=bearer(model.token))
    assert ok.status_code == 200, ok.text
    _assert_secured(ok, API_POLICY)
    refused = client.post("/v2/models/headers-fast/infer", content=b"{", headers=bearer(model.token))
    assert refused.status_code == 400
    _assert_secured(refused, API_POLICY)


def test_the_api_docs_load_only_this_sites_assets(client):
    urls = _page_assets(client, client.get("/api/v1/docs"))
    assert any(url.startswith("/static/") and url.endswith("swagger-ui-bundle.js") for url in urls), urls
    assert client.get("/api/v1/openapi.json").status_code == 200


def test_admin_pages_work_under_the_page_policy(client, make_user):
    admin = make_user("admin")
    page = client.get("/admin/login/")
    _page_assets(client, page)
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert csrf is not None
    logged_in = client.post("/admin/login/?next=/admin/", data={
        "csrfmiddlewaretoken": csrf[1], "username": admin.username, "password": admin.password, "next": "/admin/"})
    assert logged_in.status_code == 302, logged_in.text
    for path in ("/admin/", "/admin/accounts/user/", "/admin/accounts/user/add/",
                 f"/admin/accounts/user/{admin.pk}/change/"):
        _page_assets(client, client.get(path))


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="needs a chromium to render the page")
def test_a_browser_renders_the_docs_without_a_policy_violation(server, tmp_path: Path):
    """Swagger UI builds the page from openapi.json in the browser: the operations appear and the browser
    reports nothing blocked."""
    browser = _chromium()
    assert browser is not None
    run = subprocess.run(
        [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=15000", "--dump-dom", f"{server.url}/api/v1/docs"],
        capture_output=True, text=True, timeout=120, check=False)
    assert 'data-path="/api/v1/models/{name}/predict"' in run.stdout, run.stderr[-4000:]
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    assert not [line for line in console if "Content Security Policy" in line], console
