"""The console in Chromium against the real stack: uvicorn (forwarding the console's paths) and the built
Next.js server on free ports, the test PostgreSQL and Redis. The browser tests themselves are TypeScript
(web/tests/browser/, playwright-core with Debian's chromium, axe-core), run here with vitest so they share
the suite's database, accounts and fixtures."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
import safetensors.torch
import torch

from inference.architectures import build
from tests.console.support import CHROMIUM, console_stack, require_chromium, require_console
from tests.envsetup import ROOT, RUN_DIR

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.timeout(900)]

GOOD = {"in_features": 4, "hidden": [8], "out_features": 3}
BAD = {"in_features": 4, "hidden": [16], "out_features": 3}  # layers.0.* and layers.1.weight do not fit GOOD


def _fixtures(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, config, seed in (("good1", GOOD, 1), ("good2", GOOD, 2), ("bad", BAD, 3)):
        torch.manual_seed(seed)
        safetensors.torch.save_file(build("mlp", config).state_dict(), str(directory / f"{name}.safetensors"))
    (directory / "not-safetensors.bin").write_bytes(b"\x80\x02c__builtin__\neval\n" + os.urandom(64))


def test_console_in_chromium(service_env: dict[str, str], make_user) -> None:
    require_console()
    require_chromium()
    maintainer, member = make_user("maintainer"), make_user("member")
    fixtures = RUN_DIR / "console-fixtures"
    _fixtures(fixtures)
    shots = Path(os.environ.get("TORCHWIRE_CONSOLE_SHOTS") or RUN_DIR / "console-shots")
    shots.mkdir(parents=True, exist_ok=True)
    with console_stack(service_env) as (server, console):
        env = {
            **os.environ,
            "TW_BASE_URL": server.url,
            "TW_MAINTAINER": f"{maintainer.username}:{maintainer.password}",
            "TW_MEMBER": f"{member.username}:{member.password}",
            "TW_MODEL": f"browser-{uuid.uuid4().hex[:8]}",
            "TW_FIXTURES": str(fixtures),
            "TW_BAD_TENSOR": "layers.0.weight",
            "TW_SHOTS": str(shots),
            "TW_CHROMIUM": CHROMIUM,
        }
        result = subprocess.run(
            ["node_modules/.bin/vitest", "run", "--config", "vitest.browser.config.ts",
             "tests/browser/console.test.ts"],
            cwd=ROOT / "web", env={**env, "NO_COLOR": "1", "FORCE_COLOR": "0"}, capture_output=True, text=True,
            timeout=840, check=False,
        )
        output = result.stdout + result.stderr
        logs = f"--- uvicorn log ---\n{server.log_tail(80)}\n--- console log ---\n{console.log_tail(80)}"
        assert result.returncode == 0, f"{output[-12000:]}\n{logs}"
        assert "Traceback" not in server.log.read_text(errors="replace"), server.log_tail(120)
