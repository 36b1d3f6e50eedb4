"""The console's API types (web/lib/api/schema.d.ts) are generated from the OpenAPI document the server
serves; this fails when the backend changed without them being regenerated (`make console-types`)."""

from __future__ import annotations

import json
import re
import subprocess

import httpx
import pytest
from django.core.management import call_command

from tests.console.support import require
from tests.envsetup import ROOT
from tests.support import Server

pytestmark = pytest.mark.django_db


def test_committed_api_types_match_the_served_openapi(server: Server, tmp_path) -> None:
    require("run `npm ci` in web/", (ROOT / "web" / "node_modules" / "openapi-typescript").exists(),
            "web/node_modules is missing")
    served = httpx.get(server.url + "/api/v1/openapi.json", timeout=30).json()
    # What `make console-types` generates from is what the server serves.
    out = tmp_path / "generated.json"
    with out.open("w") as fh:
        call_command("openapi", stdout=fh)
    # (ninja-extra suffixes operationIds with a random hash per process; the generator drops it.)
    def stable(document: dict) -> str:
        return re.sub(r'("operationId": "[^"]*?)_[0-9a-f]{8}"', r'\1"', json.dumps(document, sort_keys=True))

    assert stable(json.loads(out.read_text())) == stable(served)
    document = tmp_path / "openapi.json"
    document.write_text(json.dumps(served))
    result = subprocess.run(["node", "scripts/api-types.mjs", "--check", str(document)], cwd=ROOT / "web",
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
