"""tests/scale runs only under `make test-scale` (TORCHWIRE_TEST_SCALE=1): it builds hosts from network
namespaces, which takes root and minutes, so the ordinary pytest run deselects it rather than run it twice."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("TORCHWIRE_TEST_SCALE") == "1":
        return
    deselected = [item for item in items if item.get_closest_marker("scale") is not None]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item.get_closest_marker("scale") is None]
