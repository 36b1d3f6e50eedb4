"""The production settings: `check --deploy` passes with the required env, and refuse to start without it."""

from __future__ import annotations

import secrets
import subprocess
import sys

from tests.envsetup import ROOT
from tests.support import child_env

PROD = {
    "DJANGO_ENV": "production",
    "SECRET_KEY": secrets.token_urlsafe(64),
    "ALLOWED_HOSTS": "torchwire.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://torchwire.example.com",
}


def _manage(*args: str, env: dict[str, str | None]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=child_env(env), capture_output=True,
                          text=True, timeout=120)


def test_check_deploy_passes_in_production():
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=PROD)
    assert result.returncode == 0, result.stdout + result.stderr


def test_missing_secret_key_is_a_startup_error():
    result = _manage("check", env={**PROD, "SECRET_KEY": None})
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_missing_allowed_hosts_is_a_startup_error():
    result = _manage("check", env={**PROD, "ALLOWED_HOSTS": None})
    assert result.returncode != 0
    assert "ALLOWED_HOSTS" in result.stderr


def test_development_defaults_fail_deploy_check():
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env={"DJANGO_ENV": "development"})
    assert result.returncode != 0


def test_createsuperuser_noinput(transactional_db):
    from app.accounts.models import User

    result = _manage("createsuperuser", "--noinput", env={
        "DJANGO_SUPERUSER_USERNAME": "root-admin", "DJANGO_SUPERUSER_PASSWORD": secrets.token_urlsafe(16),
        "DJANGO_SUPERUSER_EMAIL": "root@example.com", "DATABASE_URL": _db_url()})
    assert result.returncode == 0, result.stderr
    user = User.objects.get(username="root-admin")
    assert user.is_superuser and user.role == "admin"


def _db_url() -> str:
    from tests.conftest import _test_database_url

    return _test_database_url()


def test_no_missing_migrations():
    result = _manage("makemigrations", "--check", "--dry-run", env={})
    assert result.returncode == 0, result.stdout + result.stderr
