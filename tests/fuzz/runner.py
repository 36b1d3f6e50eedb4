"""Fuzzes /api/v1 with schemathesis as a member and as an admin: `make fuzz`, and a short run in `make test`.

    python -m tests.fuzz.runner [--url URL] [--max-examples N] [--max-time S] [--workers N] [--seed N]

With no URL it starts its own Torchwire as `make run` does (`python -m app.launcher`: SQLite, the embedded
Redis, a worker and beat, all in a temporary directory) and stops it afterwards. With a URL it fuzzes that
server and makes its two users with `manage.py` in this environment, which must reach the server's database
(for `make run` in this checkout, run it with no extra environment). Either way it publishes a small public
model and uploads a dataset first, so the fuzzer reaches the inference and job paths, then runs
`schemathesis run --checks all` once per user with the settings of ./schemathesis.toml. It fails when
either run fails a check or, on its own server, when the server logged a traceback.

Only the standard library, httpx and the project's own code: no import of tests.envsetup, which
reconfigures the environment for pytest when imported.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent.parent
CONFIG = ROOT / "schemathesis.toml"
# Dynamic auth: schemathesis logs in as the user itself and logs in again when a token runs out (401).
AUTH_SECTION = """
[auth.dynamic.openapi.BearerAuth]
path = "/api/v1/auth/token"
payload = { username = "${FUZZ_USERNAME}", password = "${FUZZ_PASSWORD}" }
extract_selector = "/access"
"""
SEED_CONFIG = {"in_features": 4, "hidden": [8], "out_features": 3}
SEED_CSV = "a,b,c,label\n" + "".join(f"{i},{i % 7 * 0.5},{(i * 3) % 11},{'yes' if i % 3 else 'no'}\n"
                                    for i in range(40))


@dataclass(frozen=True)
class User:
    username: str
    password: str
    role: str


@dataclass(frozen=True)
class Outcome:
    user: User
    returncode: int
    output: str

    @property
    def passed(self) -> bool:
        return self.returncode == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def new_user(role: str) -> User:
    return User(username=f"fuzz-{role}-{secrets.token_hex(4)}", password=secrets.token_urlsafe(24), role=role)


def create_user(user: User, env: Mapping[str, str]) -> None:
    """Creates ``user`` with ``manage.py`` in ``env`` (the server's database)."""
    code = ("import os; from app.accounts.services import user_create; "
            "user_create(username=os.environ['FUZZ_NEW_USERNAME'], password=os.environ['FUZZ_NEW_PASSWORD'], "
            "role=os.environ['FUZZ_NEW_ROLE'])")
    subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, check=True,
                   env={**env, "FUZZ_NEW_USERNAME": user.username, "FUZZ_NEW_PASSWORD": user.password,
                        "FUZZ_NEW_ROLE": user.role})


def login(client: httpx.Client, user: User) -> dict[str, str]:
    response = client.post("/api/v1/auth/token", json={"username": user.username, "password": user.password})
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access']}"}


@dataclass(frozen=True)
class Seeded:
    """What `seed` made, which the fuzzer puts into half of the requests that name an object."""

    models: list[str]
    dataset_ids: list[int]
    job_ids: list[int]

    def config(self) -> str:
        """TOML binding these ids to the parameters that take them (schemathesis dictionaries)."""
        def binding(keys: Sequence[str], dictionary: str) -> str:
            return "".join(f'"{key}" = {{ dictionary = "{dictionary}", probability = 0.5 }}\n' for key in keys)

        return ("\n[dictionaries]\n"
                f"models = {{ values = {json.dumps(self.models)} }}\n"
                f"datasets = {{ values = {json.dumps(self.dataset_ids)} }}\n"
                f"jobs = {{ values = {json.dumps(self.job_ids)} }}\n"
                "versions = { values = [1] }\n"
                "\n[parameters]\n"
                + binding(("path.name", "body.model", "body.model_name"), "models")
                + binding(("path.dataset_id", "body.dataset_id"), "datasets")
                + binding(("path.job_id",), "jobs")
                + binding(("path.version", "query.version", "body.version"), "versions"))


def seed(url: str, admin: User) -> Seeded:
    """A public model with a production version, a dataset and a training job on it, so the fuzzer reaches
    objects that exist (on a server without a worker the job stays queued)."""
    import safetensors.torch
    import torch

    from inference.architectures import build

    name = f"fuzz-mlp-{secrets.token_hex(3)}"
    with httpx.Client(base_url=url, timeout=60) as client:
        auth = login(client, admin)
        client.post("/api/v1/models", json={"name": name, "visibility": "public"}, headers=auth).raise_for_status()
        torch.manual_seed(0)
        artifact = safetensors.torch.save(build("mlp", SEED_CONFIG).state_dict())
        manifest = json.dumps({"format": "safetensors", "architecture": "mlp", "config": SEED_CONFIG})
        client.post(f"/api/v1/models/{name}/versions", headers=auth, data={"manifest": manifest},
                    files={"artifact": ("model.safetensors", io.BytesIO(artifact))}).raise_for_status()
        client.post(f"/api/v1/models/{name}/versions/1/promote", json={"stage": "production"},
                    headers=auth).raise_for_status()
        dataset = client.post("/api/v1/datasets", headers=auth,
                              files={"file": ("fuzz.csv", io.BytesIO(SEED_CSV.encode()))})
        dataset.raise_for_status()
        dataset_id = dataset.json()["id"]
        job = client.post("/api/v1/jobs/train", headers=auth, json={
            "dataset_id": dataset_id, "target": "label", "task": "classification", "model_name": f"{name}-trained",
            "hyperparameters": {"epochs": 2}})
        job.raise_for_status()
    return Seeded(models=[name, f"{name}-trained"], dataset_ids=[dataset_id], job_ids=[job.json()["id"]])


def fuzz(url: str, user: User, *, max_examples: int, workers: int = 2, seed: int | None = None,
         max_time: int | None = None, phases: str | None = None, report_dir: Path | None = None,
         extra_config: str = "", extra: Sequence[str] = ()) -> Outcome:
    """One ``schemathesis run --checks all`` over the API as ``user``, with ./schemathesis.toml and then
    ``extra_config`` (more TOML) as its configuration."""
    with tempfile.TemporaryDirectory(prefix="tw-fuzz-") as tmp:
        config = Path(tmp) / "schemathesis.toml"
        config.write_text(CONFIG.read_text() + AUTH_SECTION + extra_config)
        argv = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
                f"{url}/api/v1/openapi.json", "--checks", "all", "--max-examples", str(max_examples),
                "--workers", str(workers), "--no-color"]
        if seed is not None:
            argv += ["--seed", str(seed)]
        if max_time is not None:
            argv += ["--max-time", str(max_time)]
        if phases:
            argv += ["--phases", phases]
        if report_dir is not None:
            argv += ["--report", "junit,ndjson", "--report-dir", str(report_dir / user.role)]
        env = {**os.environ, "FUZZ_USERNAME": user.username, "FUZZ_PASSWORD": user.password}
        run = subprocess.run([*argv, *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, check=False)
    return Outcome(user=user, returncode=run.returncode, output=run.stdout)


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url}/readyz was not 200 within {timeout:g}s:\n{log.read_text(errors='replace')}")


@contextmanager
def launched(directory: Path) -> Iterator[tuple[str, dict[str, str], Path]]:
    """`make run` in ``directory``: yields its URL, the environment its processes read, and its log."""
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DJANGO_", "TORCHWIRE_", "CELERY_", "TEST_"))
           and k not in ("DATABASE_URL", "REDIS_URL", "STORAGE_URL", "SECRET_KEY", "ALLOWED_HOSTS", "PORT", "HOST")}
    env |= {"DJANGO_ENV": "development", "TORCHWIRE_VAR_DIR": str(directory / "var"), "PORT": str(port),
            "TORCHWIRE_EMBEDDED_REDIS_PORT": str(free_port()), "PYTHONUNBUFFERED": "1"}
    log = directory / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "app.launcher"], cwd=ROOT, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, log)
        yield url, env, log
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def tracebacks(log: str) -> list[str]:
    """Each traceback of a server log with the line before it (the log record that says where it came from)."""
    lines = log.splitlines()
    found = []
    for index, line in enumerate(lines):
        if line.startswith("Traceback"):
            end = index + 1
            while end < len(lines) and (lines[end].startswith((" ", "\t")) or not lines[end].strip()):
                end += 1
            found.append("\n".join(lines[max(0, index - 1):end + 1]))
    return found


def run(url: str, env: Mapping[str, str], log: Path | None, args: argparse.Namespace) -> int:
    member, admin = new_user("member"), new_user("admin")
    for user in (member, admin):
        create_user(user, env)
    seeded = seed(url, admin)
    failed = False
    # The member first: the admin's run may make the seeded model private or archive its version.
    for user in (member, admin):
        print(f"--- schemathesis as {user.role} ({user.username}) against {url}", flush=True)
        outcome = fuzz(url, user, max_examples=args.max_examples, workers=args.workers, seed=args.seed,
                       max_time=args.max_time, phases=args.phases, report_dir=args.report_dir,
                       extra_config=seeded.config())
        print(outcome.output, flush=True)
        failed |= not outcome.passed
    if log is not None:
        found = tracebacks(log.read_text(errors="replace"))
        if found:
            print(f"--- the server logged {len(found)} traceback(s) ({log}); the first ones:")
            print("\n\n".join(found[:3]), flush=True)
            failed = True
    print("--- fuzz: FAILED" if failed else "--- fuzz: passed (member and admin)", flush=True)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.runner", description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("FUZZ_URL") or None,
                        help="a running server (default: start one on the embedded defaults)")
    parser.add_argument("--max-examples", type=int, default=int(os.environ.get("FUZZ_EXAMPLES") or 50))
    parser.add_argument("--max-time", type=int, default=int(os.environ.get("FUZZ_TIME") or 0) or None,
                        help="seconds per user; fuzzing repeats until they are spent")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=int(os.environ["FUZZ_SEED"]) if os.environ.get("FUZZ_SEED")
                        else None)
    parser.add_argument("--phases", default=None, help="examples,coverage,fuzzing,stateful (default: all)")
    parser.add_argument("--report-dir", type=Path, default=None, help="write JUnit and NDJSON reports here")
    args = parser.parse_args(argv)
    if args.url:
        return run(args.url.rstrip("/"), dict(os.environ), None, args)
    keep = os.environ.get("FUZZ_KEEP_DIR")
    with tempfile.TemporaryDirectory(prefix="torchwire-fuzz-") as tmp:
        directory = Path(keep) if keep else Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        with launched(directory) as (url, env, log):
            return run(url, env, log, args)


if __name__ == "__main__":
    sys.exit(main())
