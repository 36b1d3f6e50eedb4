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


# --- app/config.py: the one place the environment is read --------------------------------------------------

def _config(**env: str):
    """What a process with only ``env`` reads (this one's own environment is the suite's)."""
    from app.config import from_environ

    return from_environ(env)


def test_defaults_follow_the_var_dir(tmp_path):
    config = _config(TORCHWIRE_VAR_DIR=str(tmp_path / "a" / ".." / "state"))
    state = (tmp_path / "state").resolve()
    assert config.var_dir == state
    assert config.database_url == f"sqlite:///{state / 'torchwire.sqlite3'}"
    assert config.storage_url == f"file://{state / 'storage'}"
    assert config.tls_cert == state / "certs" / "localhost.crt"
    assert config.artifact_cache == state / "cache" / "artifacts"


def test_production_changes_only_the_defaults():
    dev, prod = _config(DJANGO_ENV="development"), _config(DJANGO_ENV="production")
    assert (dev.serve_static, dev.log_format, dev.shutdown_delay_seconds) == (True, "text", 0.0)
    assert (prod.serve_static, prod.log_format, prod.shutdown_delay_seconds) == (False, "json", 1.0)
    assert prod.allowed_hosts == [] and "localhost" in dev.allowed_hosts
    explicit = _config(DJANGO_ENV="production", TORCHWIRE_SERVE_STATIC="true", LOG_FORMAT="text")
    assert explicit.serve_static is True and explicit.log_format == "text"


def test_redis_defaults_to_the_embedded_port_everywhere():
    config = _config(TORCHWIRE_EMBEDDED_REDIS_PORT="6499", REDIS_URL="")
    assert config.redis_url_env is None
    assert config.redis_url == "redis://127.0.0.1:6499/0"
    assert config.channel_layer_urls == [config.redis_url]
    assert config.celery_broker_url == config.celery_result_backend == config.redis_url
    given = _config(REDIS_URL="redis://cache:6379/2")
    assert given.channel_layer_urls == ["redis://cache:6379/2"] and given.celery_broker_url == "redis://cache:6379/2"


def test_lists_are_comma_separated_and_empty_means_unset():
    config = _config(ALLOWED_HOSTS=" a.example , b.example,,", TORCHWIRE_NGINX_TRUSTED_PROXIES="", PORT="")
    assert config.allowed_hosts == ["a.example", "b.example"]
    assert config.nginx_trusted_proxies == []
    assert config.port == 8000


def test_derived_default_follows_its_source():
    assert _config(TORCHWIRE_LOGIN_RATE_LIMIT="3").login_rate_limit_per_username == 30
    assert _config(TORCHWIRE_LOGIN_RATE_LIMIT="3", TORCHWIRE_LOGIN_RATE_LIMIT_PER_USERNAME="7") \
        .login_rate_limit_per_username == 7


def test_bad_values_name_the_variable():
    import pytest

    from app.config import ConfigError

    with pytest.raises(ConfigError, match=r"PORT='eighty'"):
        _config(PORT="eighty")
    with pytest.raises(ConfigError, match=r"TORCHWIRE_FAST_PATH='maybe'"):
        _config(TORCHWIRE_FAST_PATH="maybe")
    with pytest.raises(ConfigError, match=r"TORCHWIRE_DISPATCH_POLICY='eager'"):
        _config(TORCHWIRE_DISPATCH_POLICY="eager")
    with pytest.raises(ConfigError, match=r"TORCHWIRE_PREDICTION_SAMPLE_RATE"):
        _config(TORCHWIRE_PREDICTION_SAMPLE_RATE="1.5")
    with pytest.raises(ConfigError, match=r"DJANGO_ENV='staging'"):
        _config(DJANGO_ENV="staging")


def test_every_field_documents_its_variable():
    from app.config import Settings

    for name, info in Settings.model_fields.items():
        assert isinstance(info.validation_alias, str), name
        assert info.validation_alias == info.validation_alias.upper(), name


def test_django_and_the_launcher_read_the_same_values(settings, monkeypatch):
    from app.launcher import Config

    config = Config.from_env(settings=_config(TORCHWIRE_DRAIN_SECONDS="7", TORCHWIRE_EMBEDDED_REDIS_PORT="6501"))
    assert (config.drain_seconds, config.redis_port, config.port) == (7, 6501, 8000)
    assert config.web_workers == 1 and Config.from_env(prod=True, settings=config.settings).web_workers == 2
    # The test process's own Django settings came from the same object.
    from app.config import Settings

    env = Settings()
    assert settings.REDIS_URL == env.redis_url
    assert settings.DRAIN_SECONDS == env.drain_seconds
    assert settings.CATALOG_TTL == env.catalog_ttl_seconds


def test_a_bad_variable_stops_django_at_startup():
    result = _manage("check", env={"TORCHWIRE_MAX_INPUT_ELEMENTS": "lots"})
    assert result.returncode != 0
    assert "TORCHWIRE_MAX_INPUT_ELEMENTS='lots'" in result.stderr
