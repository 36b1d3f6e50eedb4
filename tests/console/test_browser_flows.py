"""The console's part 2 in Chromium against the real stack plus a Celery worker: a CSV uploaded, a model
trained with "promote when done" while the job page's socket is cut once, called from the playground with
raw records, drift seen live, and the batching tuner moving under load (web/tests/browser/flows.test.ts)."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.console.support import CHROMIUM, console_stack, require_chromium, require_console
from tests.envsetup import ROOT, RUN_DIR
from tests.jobs.conftest import classification_csv

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.timeout(900)]


def test_console_flows_in_chromium(service_env: dict[str, str], make_user, celery_worker_proc) -> None:
    require_console()
    require_chromium()
    maintainer, admin = make_user("maintainer"), make_user("admin")
    fixtures = RUN_DIR / "console2-fixtures"
    fixtures.mkdir(parents=True, exist_ok=True)
    (fixtures / "customers.csv").write_bytes(classification_csv(rows=3000, seed=5))
    shots = Path(os.environ.get("TORCHWIRE_CONSOLE_SHOTS") or RUN_DIR / "console-shots")
    shots.mkdir(parents=True, exist_ok=True)
    with console_stack(service_env) as (server, console):
        env = {
            **os.environ,
            "TW_BASE_URL": server.url,
            "TW_MAINTAINER": f"{maintainer.username}:{maintainer.password}",
            "TW_ADMIN": f"{admin.username}:{admin.password}",
            "TW_MODEL": f"churn-{uuid.uuid4().hex[:6]}",
            "TW_CSV": str(fixtures / "customers.csv"),
            "TW_SHOTS": str(shots),
            "TW_CHROMIUM": CHROMIUM,
            "NO_COLOR": "1",
            "FORCE_COLOR": "0",
        }
        result = subprocess.run(
            ["node_modules/.bin/vitest", "run", "--config", "vitest.browser.config.ts", "tests/browser/flows.test.ts"],
            cwd=ROOT / "web", env=env, capture_output=True, text=True, timeout=840, check=False,
        )
        output = result.stdout + result.stderr
        logs = f"--- uvicorn log ---\n{server.log_tail(80)}\n--- console log ---\n{console.log_tail(80)}"
        assert result.returncode == 0, f"{output[-12000:]}\n{logs}"
        assert "Traceback" not in server.log.read_text(errors="replace"), server.log_tail(120)
