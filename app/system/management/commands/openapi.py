"""`manage.py openapi`: the /api/v1 OpenAPI document, as the server serves it at /api/v1/openapi.json.

The console's API types (web/lib/api/schema.d.ts) are generated from it (`make console-types`)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand

from app.api.v1 import api


class Command(BaseCommand):
    help = "Print the /api/v1 OpenAPI document (JSON)"

    def handle(self, *args: Any, **options: Any) -> None:
        schema = api.get_openapi_schema(path_prefix="/api/v1")
        self.stdout.write(json.dumps(schema, indent=1, sort_keys=True, default=str))
