"""The console bridge (app/core/console.py): uvicorn forwards every path that is not the backend's to the
console's server, streaming, with the Host kept; the backend's paths never reach it."""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.envsetup import free_port
from tests.support import Server, start_uvicorn


class _Console(BaseHTTPRequestHandler):
    """Stands in for the Next.js server: echoes what it got; /stream sends its second chunk only after
    the test has read the first, which a buffering proxy would never deliver."""

    protocol_version = "HTTP/1.1"
    first_chunk_read = threading.Event()
    second_chunk_waited: list[bool] = []

    def log_message(self, *args: object) -> None:
        pass

    def _echo(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        payload = json.dumps({"method": self.command, "path": self.path, "headers": dict(self.headers.items()),
                              "body": body}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.send_header("set-cookie", "tw_test=1; HttpOnly; Path=/")
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        if self.path == "/stream":
            self.send_response(200)
            self.send_header("content-type", "text/plain")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"6\r\nfirst\n\r\n")
            self.wfile.flush()
            self.second_chunk_waited.append(self.first_chunk_read.wait(20))
            self.wfile.write(b"7\r\nsecond\n\r\n0\r\n\r\n")
            return
        self._echo()

    do_POST = do_DELETE = _echo


@pytest.fixture(scope="module")
def console_upstream() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Console)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


SCRIPT = b"console.log('the console');" * 50


@pytest.fixture(scope="module")
def static_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("static")
    (root / "chunks").mkdir()
    (root / "chunks" / "app.js").write_bytes(SCRIPT)
    (root / "chunks" / "app.js.gz").write_bytes(gzip.compress(SCRIPT))
    (root / "media").mkdir()
    (root / "media" / "font.woff2").write_bytes(b"wOF2 font")
    (root.parent / "secret.txt").write_text("outside the static root")
    return str(root)


@pytest.fixture(scope="module")
def bridged(service_env: dict[str, str], console_upstream: str, static_dir: str) -> Iterator[Server]:
    server = start_uvicorn({**service_env, "TORCHWIRE_CONSOLE_URL": console_upstream,
                            "TORCHWIRE_CONSOLE_STATIC": static_dir})
    yield server
    server.stop()


def test_console_paths_are_forwarded_with_host_and_client(bridged: Server) -> None:
    with httpx.Client(base_url=bridged.url, timeout=10) as client:
        response = client.get("/models/iris/playground?tab=v2", headers={"Connection": "keep-alive, x-secret",
                                                                         "Keep-Alive": "timeout=5"})
        assert response.status_code == 200
        echoed = response.json()
        assert echoed["path"] == "/models/iris/playground?tab=v2"
        headers = {k.lower(): v for k, v in echoed["headers"].items()}
        assert headers["host"] == bridged.url.removeprefix("http://")
        assert headers["x-forwarded-for"] == "127.0.0.1"
        assert "keep-alive" not in headers and headers.get("connection") != "keep-alive, x-secret"
        assert headers["x-forwarded-proto"] == "http"
        assert response.headers["set-cookie"] == "tw_test=1; HttpOnly; Path=/"
    # The bridge keeps no cookies: what the console set for one browser never rides along with another's.
    echoed = httpx.get(bridged.url + "/anything", timeout=10).json()
    assert "cookie" not in {k.lower() for k in echoed["headers"]}
    with_cookie = httpx.get(bridged.url + "/anything", headers={"Cookie": "tw_session=abc"}, timeout=10).json()
    assert {k.lower(): v for k, v in with_cookie["headers"].items()}["cookie"] == "tw_session=abc"
    with httpx.Client(base_url=bridged.url, timeout=10) as client:
        posted = client.post("/session/login", json={"username": "u"}, headers={"Origin": bridged.url})
        assert posted.json()["method"] == "POST" and json.loads(posted.json()["body"]) == {"username": "u"}
        assert client.get("/").json()["path"] == "/"
        # Other /_next paths (image optimisation, data) are the console's.
        assert client.get("/_next/image?url=x").json()["path"] == "/_next/image?url=x"


def test_build_assets_are_answered_by_uvicorn_gzipped_and_immutable(bridged: Server) -> None:
    with httpx.Client(base_url=bridged.url, timeout=10) as client:
        script = client.get("/_next/static/chunks/app.js", headers={"Accept-Encoding": "gzip"})
        assert script.status_code == 200 and script.content == SCRIPT
        assert script.headers["content-encoding"] == "gzip"
        assert script.headers["content-type"] == "application/javascript"
        assert script.headers["cache-control"] == "public, max-age=31536000, immutable"
        plain = client.get("/_next/static/chunks/app.js", headers={"Accept-Encoding": "identity"})
        assert plain.content == SCRIPT and "content-encoding" not in plain.headers
        font = client.get("/_next/static/media/font.woff2")
        assert font.content == b"wOF2 font" and font.headers["content-type"] == "font/woff2"
        for path in ("/_next/static/chunks/missing.js", "/_next/static/chunks/app.js.gz", "/_next/static/",
                     "/_next/static/..%2Fsecret.txt", "/_next/static/%2e%2e/secret.txt"):
            response = client.get(path)
            assert response.status_code == 404, path
            assert b"outside" not in response.content


def test_backend_paths_stay_with_the_backend(bridged: Server) -> None:
    with httpx.Client(base_url=bridged.url, timeout=10) as client:
        api = client.get("/api/v1/models")
        assert api.status_code == 401 and api.json()["error"]["code"] == "unauthorized"
        assert client.get("/api/v1/nope").json()["error"]["code"] == "not_found"
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/v2/health/live").status_code == 200
        assert client.get("/admin/login/").headers["content-type"].startswith("text/html")
        assert client.get("/admin/login/").text.count("Django") >= 1
        assert client.get("/static/does-not-exist.css").status_code == 404
        # A Host Django refuses is refused by Django, not shown the console.
        assert client.get("/", headers={"Host": "evil.example"}).status_code == 400


def test_answers_stream_through(bridged: Server) -> None:
    _Console.first_chunk_read.clear()
    with httpx.Client(base_url=bridged.url, timeout=30) as client, client.stream("GET", "/stream") as response:
        chunks = response.iter_raw()
        assert next(chunks).startswith(b"first")
        _Console.first_chunk_read.set()
        assert b"".join(chunks).endswith(b"second\n")
    assert _Console.second_chunk_waited[-1] is True


def test_console_down_is_a_clear_502(service_env: dict[str, str]) -> None:
    server = start_uvicorn({**service_env, "TORCHWIRE_CONSOLE_URL": f"http://127.0.0.1:{free_port()}"})
    try:
        response = httpx.get(server.url + "/models", timeout=10)
        assert response.status_code == 502
        assert "console is not answering" in response.text and response.headers["retry-after"] == "2"
        assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200
        assert "Traceback" not in server.log.read_text()
    finally:
        server.stop()
