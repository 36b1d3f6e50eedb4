"""The nginx templates render into configs nginx accepts, in the variants the proxy tests do not start."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from app.launcher import LauncherError, NginxSite, certificate_ensure, nginx_version, render_template

pytestmark = pytest.mark.usefixtures("nginx_path")  # skips, or fails under CI, without nginx and openssl


def _site(tmp_path: Path, **overrides) -> NginxSite:
    cert, key = tmp_path / "certs" / "c.crt", tmp_path / "certs" / "c.key"
    certificate_ensure(cert, key)
    values = dict(prefix=tmp_path / "nginx", upstreams=["unix:/run/tw/web-0.sock"], listen_hosts=["127.0.0.1"],
                  https_port=8443, http_port=8080, tls_cert=cert, tls_key=key, static_root=tmp_path / "static")
    return NginxSite(**{**values, **overrides})


def _accepted(nginx_path: str, site: NginxSite) -> str:
    conf = site.render(nginx_version(nginx_path)).read_text()
    check = subprocess.run(site.argv(nginx_path, "-t", "-q"), capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    return conf


def test_remote_upstreams_behind_a_load_balancer_on_443(nginx_path: str, tmp_path: Path):
    site = _site(tmp_path, upstreams=["10.0.0.21:8001", "unix:/run/tw/web-0.sock"], listen_hosts=["127.0.0.1", "::1"],
                 https_port=443, http_port=80, trusted_proxies=["10.0.0.0/8", "192.0.2.7"])
    conf = _accepted(nginx_path, site)
    assert "server 10.0.0.21:8001 max_fails=1 fail_timeout=5s;" in conf
    assert "listen [::1]:443 ssl" in conf
    assert "set_real_ip_from 10.0.0.0/8;" in conf and "real_ip_recursive on;" in conf
    # The default port is left out of the redirect target.
    assert "return 308 https://$host$request_uri;" in conf
    assert "{{" not in conf


def test_rates_set_retry_after(nginx_path: str, tmp_path: Path):
    conf = _accepted(nginx_path, _site(tmp_path, auth_rate="6r/m", infer_rate="50r/s"))
    assert "add_header Retry-After 10 always;" in conf


def test_bad_values_are_refused_before_nginx_sees_them(tmp_path: Path):
    with pytest.raises(LauncherError, match="not an nginx rate"):
        _site(tmp_path, auth_rate="fast").values((1, 22, 1))
    with pytest.raises(LauncherError, match="at least one upstream"):
        _site(tmp_path, upstreams=[]).values((1, 22, 1))
    with pytest.raises(LauncherError, match="too long"):
        _site(tmp_path, upstreams=[f"unix:/{'x' * 120}.sock"]).values((1, 22, 1))
    with pytest.raises(LauncherError, match="nothing provides"):
        render_template("listen {{ nope }};", {})


def test_http2_directive_follows_the_nginx_version(tmp_path: Path):
    old = _site(tmp_path).values((1, 22, 1))["https_listen"]
    new = _site(tmp_path).values((1, 25, 1))["https_listen"]
    assert str(old).strip() == "listen 127.0.0.1:8443 ssl http2;"
    assert str(new).split() == ["listen", "127.0.0.1:8443", "ssl;", "http2", "on;"]


def test_certificate_is_kept_once_made(tmp_path: Path):
    cert, key = tmp_path / "a.crt", tmp_path / "a.key"
    assert certificate_ensure(cert, key)
    assert key.stat().st_mode & 0o777 == 0o600
    before = cert.read_bytes()
    assert not certificate_ensure(cert, key)
    assert cert.read_bytes() == before


def test_only_inference_retries_posts_on_the_next_upstream(tmp_path: Path):
    """A worker lost under a prediction is retried on another; other POSTs (a promotion, an upload) never
    run twice. Checked on the rendered text: the SIGKILL drill of tests/scale exercises it for real."""
    conf = _site(tmp_path).render((1, 24, 0)).read_text()
    retrying = [i for i, line in enumerate(conf.splitlines()) if "non_idempotent" in line]
    assert len(retrying) == 2
    blocks = conf.split("location ")
    inference = [b for b in blocks if "non_idempotent" in b]
    assert [b.split("{", 1)[0].strip() for b in inference] == ["~ ^/api/v1/models/[^/]+/predict$", "/v2"]
    assert "proxy_next_upstream error timeout;" in conf and "proxy_next_upstream_tries 2;" in conf
