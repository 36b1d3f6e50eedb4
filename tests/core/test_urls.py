"""DATABASE_URL parsing (app/core/urls.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.urls import ConfigError, database_from_url

BASE = Path("/srv/torchwire")


@pytest.mark.parametrize(("url", "name"), [
    # What app/settings.py builds for `make run` (f"sqlite:///{VAR_DIR / ...}"): one leading slash, not two,
    # or a file: URI made from the name (manage.py backup) reads the first directory as a host.
    ("sqlite:////srv/torchwire/var/torchwire.sqlite3", "/srv/torchwire/var/torchwire.sqlite3"),
    ("sqlite:///srv/db.sqlite3", "/srv/db.sqlite3"),
    ("sqlite://var/db.sqlite3", "/srv/torchwire/var/db.sqlite3"),
    ("sqlite:////tmp/with%20space.sqlite3", "/tmp/with space.sqlite3"),
])
def test_sqlite_names(url, name):
    entry = database_from_url(url, base_dir=BASE)
    assert entry["ENGINE"] == "django.db.backends.sqlite3"
    assert entry["NAME"] == name


def test_postgres_url():
    entry = database_from_url("postgres://u:p%40ss@db.example:6543/tw?sslmode=require", base_dir=BASE)
    assert (entry["NAME"], entry["USER"], entry["PASSWORD"], entry["HOST"], entry["PORT"]) == (
        "tw", "u", "p@ss", "db.example", "6543")
    assert entry["OPTIONS"] == {"sslmode": "require"}


def test_unknown_scheme():
    with pytest.raises(ConfigError):
        database_from_url("mysql://x/y", base_dir=BASE)
