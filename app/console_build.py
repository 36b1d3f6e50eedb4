"""Building and starting the web console (web/, Next.js) for `make run`, `make run-prod` and the tests.

The console is built only when its sources changed since the last build: a digest of web/ (without
node_modules, .next and the tests) is kept beside the standalone server. `npm ci` runs only when
package-lock.json changed. The build is Next's standalone output (.next/standalone/server.js, a Node
server with its own trimmed node_modules), plus the static files it expects beside it.

No Django here: the launcher imports this before any settings exist.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
MIN_NODE = (20, 9)
# Not part of what `next build` reads.
_SKIP_DIRS = {"node_modules", ".next", "tests", "test-results", "scripts"}
_SKIP_FILES = {"next-env.d.ts", ".build.lock"}


class ConsoleBuildError(Exception):
    """The console cannot be built here; the message says why and what to do."""


def standalone_dir(web: Path = WEB_DIR) -> Path:
    return web / ".next" / "standalone"


def server_js(web: Path = WEB_DIR) -> Path:
    return standalone_dir(web) / "server.js"


def _stamp(web: Path) -> Path:
    return standalone_dir(web) / ".torchwire-sources"


def _lock_stamp(web: Path) -> Path:
    return web / "node_modules" / ".torchwire-lock"


def _walk(web: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(web):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        for name in sorted(files):
            if name not in _SKIP_FILES and not name.endswith(".tsbuildinfo"):
                yield Path(root) / name


def sources_digest(web: Path = WEB_DIR) -> str:
    digest = hashlib.sha256()
    for path in _walk(web):
        digest.update(str(path.relative_to(web)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""


def is_current(web: Path = WEB_DIR) -> bool:
    """Whether the standalone build exists and was made from the sources as they are now."""
    stamp = _stamp(web)
    return server_js(web).exists() and stamp.exists() and stamp.read_text().strip() == sources_digest(web)


def node_version(node: str = "node") -> tuple[int, ...] | None:
    binary = shutil.which(node)
    if binary is None:
        return None
    result = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    match = re.fullmatch(r"v(\d+)\.(\d+)\.\S*", result.stdout.strip())
    return tuple(int(p) for p in match.groups()) if match else None


def check_node() -> None:
    version = node_version()
    if version is None or shutil.which("npm") is None:
        raise ConsoleBuildError("Node.js 20.9+ and npm are needed for the web console and are not on PATH "
                                "(install Node 20+, or set TORCHWIRE_CONSOLE=off to run without the console)")
    if version < MIN_NODE:
        raise ConsoleBuildError(f"the web console needs Node.js {'.'.join(map(str, MIN_NODE))}+, this is "
                                f"{'.'.join(map(str, version))} (or set TORCHWIRE_CONSOLE=off)")


@contextlib.contextmanager
def _build_lock(web: Path) -> Iterator[None]:
    """One build at a time per checkout (`make test` and `make run` may both want one)."""
    with open(web / ".build.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run(argv: list[str], web: Path, log: Callable[[str], None]) -> None:
    log(f"console: {' '.join(argv)}")
    env = {**os.environ, "NEXT_TELEMETRY_DISABLED": "1"}
    result = subprocess.run(argv, cwd=web, env=env, check=False)
    if result.returncode != 0:
        raise ConsoleBuildError(f"`{' '.join(argv)}` in {web} failed with status {result.returncode}")


def ensure_built(web: Path = WEB_DIR, *, log: Callable[[str], None] = print, force: bool = False) -> bool:
    """Builds the console unless the build is current. Returns whether it built."""
    if not force and is_current(web):
        return False
    check_node()
    with _build_lock(web):
        if not force and is_current(web):
            return False
        lock = web / "package-lock.json"
        if _file_digest(lock) != (_lock_stamp(web).read_text().strip() if _lock_stamp(web).exists() else None):
            _run(["npm", "ci", "--no-audit", "--no-fund"], web, log)
            _lock_stamp(web).write_text(_file_digest(lock))
        digest = sources_digest(web)
        _run(["npm", "run", "build"], web, log)
        standalone = standalone_dir(web)
        # The standalone server serves these from beside itself; next build leaves them out.
        for source, target in ((web / ".next" / "static", standalone / ".next" / "static"),
                               (web / "public", standalone / "public")):
            shutil.rmtree(target, ignore_errors=True)
            if source.exists():
                shutil.copytree(source, target)
        _precompress(standalone / ".next" / "static")
        _stamp(web).write_text(digest)
    log("console: built")
    return True


def static_dir(web: Path = WEB_DIR) -> Path:
    """The build's assets (served at /_next/static/), with a .gz beside each script and stylesheet."""
    return standalone_dir(web) / ".next" / "static"


def _precompress(root: Path) -> None:
    """gzip -9 copies for uvicorn's bridge and nginx's gzip_static: compressed once, not per request."""
    for path in root.rglob("*"):
        if path.suffix in (".js", ".css", ".json", ".svg", ".map") and path.is_file():
            path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes(), 9, mtime=0))


def server_env(*, port: int, api_url: str, secret: str, host: str = "127.0.0.1",
               secure_cookies: bool = False) -> dict[str, str]:
    """The environment of the standalone server (besides the inherited one)."""
    return {
        "PORT": str(port),
        "HOSTNAME": host,
        "NODE_ENV": "production",
        "NEXT_TELEMETRY_DISABLED": "1",
        "TORCHWIRE_API_URL": api_url,
        "TORCHWIRE_CONSOLE_SECRET": secret,
        "TORCHWIRE_CONSOLE_SECURE_COOKIES": "true" if secure_cookies else "false",
    }
