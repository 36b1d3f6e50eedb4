"""The embedded SQLite database takes concurrent writers (app/settings.py: WAL, a busy timeout, BEGIN
IMMEDIATE): parallel logins, refreshes and writes through a uvicorn on a SQLite file, and a job claim
raced by several workers, answer without a 500 or "database is locked", whatever database the rest of the
suite runs on."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.envsetup import ROOT, RUN_DIR
from tests.private_services import migrate
from tests.support import Server, bearer, child_env, start_uvicorn

pytestmark = pytest.mark.slow

PASSWORD = f"pw-{uuid.uuid4().hex}"
USERS = 4


@dataclass
class SqliteService:
    url: str
    server: Server
    users: list[str]

    def django(self, code: str) -> str:
        """Runs ``code`` in `manage.py shell` against this database; returns its stdout."""
        result = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT,
                                env=child_env({"DATABASE_URL": self.url}), capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout


@pytest.fixture(scope="module")
def sqlite_service() -> Iterator[SqliteService]:
    path = RUN_DIR / f"concurrency-{uuid.uuid4().hex[:8]}.sqlite3"
    url = f"sqlite:///{path}"
    migrate(url)
    users = [f"writer-{i}" for i in range(USERS)]
    service = SqliteService(url=url, server=None, users=users)  # type: ignore[arg-type]
    service.django(
        "from app.accounts.services import user_create\n"
        f"for name in {users!r}:\n"
        f"    user_create(username=name, password={PASSWORD!r}, role='member')\n"
    )
    # The login limit is not what this module tests: parallel logins of one user must all be checked.
    service.server = start_uvicorn({"DATABASE_URL": url, "TORCHWIRE_LOGIN_RATE_LIMIT": "1000"})
    try:
        yield service
    finally:
        service.server.stop()


def _log_since(server: Server, offset: int) -> str:
    with server.log.open("rb") as fh:
        fh.seek(offset)
        return fh.read().decode(errors="replace")


async def _parallel(server: Server, requests: list[tuple[str, str, dict]]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
        return list(await asyncio.gather(*(client.request(method, path, **kw) for method, path, kw in requests)))


def test_the_database_runs_in_wal_mode(sqlite_service):
    path = sqlite_service.url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_parallel_logins_and_refreshes_never_lock(sqlite_service):
    server = sqlite_service.server
    offset = server.log.stat().st_size
    logins = await _parallel(server, [
        ("POST", "/api/v1/auth/token", {"json": {"username": name, "password": PASSWORD}})
        for name in sqlite_service.users for _ in range(3)
    ])
    assert [r.status_code for r in logins] == [200] * len(logins), [r.text for r in logins if r.status_code != 200]
    refreshes = [r.json()["refresh"] for r in logins]

    rotated = await _parallel(server, [("POST", "/api/v1/auth/token/refresh", {"json": {"refresh": t}})
                                       for t in refreshes])
    assert [r.status_code for r in rotated] == [200] * len(rotated), [r.text for r in rotated if r.status_code != 200]

    # One refresh token raced ten times: exactly one rotation wins, the rest are refused, none fails.
    raced = await _parallel(server, [("POST", "/api/v1/auth/token/refresh",
                                      {"json": {"refresh": rotated[0].json()["refresh"]}})] * 10)
    assert sorted(r.status_code for r in raced) == [200] + [401] * 9, [r.text for r in raced]
    log = _log_since(server, offset)
    assert "Traceback" not in log and "database is locked" not in log, log[-3000:]


async def test_parallel_writes_never_lock(sqlite_service):
    server = sqlite_service.server
    offset = server.log.stat().st_size
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        login = await client.post("/api/v1/auth/token",
                                  json={"username": sqlite_service.users[0], "password": PASSWORD})
    access = bearer(login.json()["access"])
    created = await _parallel(server, [("POST", "/api/v1/auth/api-keys", {"json": {"name": f"k{i}"}, "headers": access})
                                       for i in range(20)])
    assert [r.status_code for r in created] == [201] * 20, [r.text for r in created if r.status_code != 201]
    prefixes = {r.json()["prefix"] for r in created}
    assert len(prefixes) == 20
    revoked = await _parallel(server, [("DELETE", f"/api/v1/auth/api-keys/{p}", {"headers": access})
                                       for p in prefixes])
    assert [r.status_code for r in revoked] == [204] * 20, [r.text for r in revoked if r.status_code != 204]
    log = _log_since(server, offset)
    assert "Traceback" not in log and "database is locked" not in log, log[-3000:]


CLAIM_RACE = """
import json, threading
from django.db import connection
from app.accounts.models import User
from app.accounts.services import api_key_create
from app.jobs.models import Job
from app.jobs.services import job_claim

owner = User.objects.get(username=%(owner)r)
job = Job.objects.create(owner=owner, kind="train")
connection.close()
barrier = threading.Barrier(%(workers)d + %(writers)d)
results, errors = [], []

def claim(i):
    try:
        barrier.wait()
        claimed, retry = job_claim(job_id=job.pk, worker=f"worker-{i}")
        results.append(claimed is not None)
        assert claimed is not None or retry > 0, "a refused claim must say when to retry"
    except Exception as exc:
        errors.append(repr(exc))
    finally:
        connection.close()

def write(i):
    try:
        barrier.wait()
        for _ in range(5):
            api_key_create(user=owner, name=f"race-{i}")
    except Exception as exc:
        errors.append(repr(exc))
    finally:
        connection.close()

threads = [threading.Thread(target=claim, args=(i,)) for i in range(%(workers)d)]
threads += [threading.Thread(target=write, args=(i,)) for i in range(%(writers)d)]
for t in threads: t.start()
for t in threads: t.join()
job.refresh_from_db()
print(json.dumps({"claimed": results.count(True), "refused": results.count(False), "errors": errors,
                  "state": job.state, "attempts": job.attempts}))
"""


def test_a_raced_job_claim_has_one_winner_and_no_lock_error(sqlite_service):
    """Several workers claim one queued job at once while others write: SQLite ignores SELECT ... FOR
    UPDATE, so BEGIN IMMEDIATE is what makes the claim exclusive."""
    out = sqlite_service.django(CLAIM_RACE % {"owner": sqlite_service.users[1], "workers": 6, "writers": 4})
    report = json.loads(out.strip().splitlines()[-1])
    assert report["errors"] == [], report
    assert report["claimed"] == 1 and report["refused"] == 5, report
    assert report["state"] == "running" and report["attempts"] == 1, report
