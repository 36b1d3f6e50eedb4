"""The one settings module. Everything that differs between machines comes from the environment.

DJANGO_ENV selects defaults: ``development`` (the embedded defaults `make run` uses), ``test`` and
``production`` (secure defaults; SECRET_KEY and ALLOWED_HOSTS must be given).
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta

from django.core.exceptions import ImproperlyConfigured

from app.config import BASE_DIR, ConfigError, Settings
from app.core.urls import database_from_url

# Every variable, its type, default and meaning: app/config.py. This module only shapes them for Django.
try:
    CONFIG = Settings()
except ConfigError as exc:
    raise ImproperlyConfigured(str(exc)) from None

DJANGO_ENV = CONFIG.django_env
PRODUCTION = CONFIG.production
VAR_DIR = CONFIG.var_dir


def _development_secret_key() -> str:
    """A per-checkout key kept in var/, so every process of `make run` signs with the same key."""
    path = VAR_DIR / "secret-key.txt"
    if path.exists():
        return path.read_text().strip()
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key


SECRET_KEY = CONFIG.secret_key
if not SECRET_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured("SECRET_KEY must be set when DJANGO_ENV=production")
    SECRET_KEY = _development_secret_key()
if PRODUCTION and len(SECRET_KEY) < 50:
    raise ImproperlyConfigured("SECRET_KEY must be at least 50 characters in production")

DEBUG = CONFIG.debug
if PRODUCTION and DEBUG:
    raise ImproperlyConfigured("DJANGO_DEBUG cannot be on in production")

ALLOWED_HOSTS = CONFIG.allowed_hosts
if PRODUCTION and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set when DJANGO_ENV=production")
CSRF_TRUSTED_ORIGINS = CONFIG.csrf_trusted_origins

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # For its templates and static files: /api/v1/docs loads this site's own copy of Swagger UI, no CDN.
    "ninja",
    "ninja_extra",
    "ninja_jwt",
    "ninja_jwt.token_blacklist",
    "channels",
    "app.events",
    "app.accounts",
    "app.registry",
    "app.datasets",
    "app.jobs",
    "app.system",
    "app.monitoring",
]

MIDDLEWARE = [
    "app.monitoring.middleware.HttpMetricsMiddleware",
    "app.core.middleware.StreamingConnectionMiddleware",
    "app.core.middleware.RequestIdMiddleware",
    "app.core.middleware.SecurityHeadersMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "app.core.middleware.ApiErrorEnvelopeMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "app.urls"
ASGI_APPLICATION = "asgi.application"
AUTH_USER_MODEL = "accounts.User"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Database: PostgreSQL through psycopg 3 and Django's own pool. CONN_MAX_AGE stays 0: under ASGI every
# request runs in a fresh thread, so persistent connections would leak; the pool reuses them instead.
DATABASE_URL = CONFIG.database_url
_db = database_from_url(DATABASE_URL, base_dir=BASE_DIR)
_db["CONN_MAX_AGE"] = 0
_db["ATOMIC_REQUESTS"] = False
if _db["ENGINE"] == "django.db.backends.postgresql":
    # Django's backend plus the outage breaker (app/core/postgres, app/core/db.py).
    _db["ENGINE"] = "app.core.postgres"
    _db["OPTIONS"]["pool"] = {
        "min_size": CONFIG.database_pool_min,
        "max_size": CONFIG.database_pool_max,
        "timeout": CONFIG.database_pool_timeout,
        # The pool's own reconnection (backing off 1, 2, 4... s) gives up after this long, so requests
        # never wait for a retry scheduled long after the database came back; the next checkout starts a
        # fresh attempt (and the breaker in app/core/db.py keeps checkouts away while it is down).
        "reconnect_timeout": CONFIG.database_pool_reconnect_timeout,
    }
    # app.core.postgres also has the pool check each connection before handing it out, so ones the
    # server dropped are replaced unseen.
    _db["OPTIONS"].setdefault("connect_timeout", 5)
    _db["TEST"] = {"NAME": CONFIG.test_database_name}
else:
    # SQLite takes one writer at a time; these make the others wait instead of failing with "database is
    # locked". WAL: readers never block the writer, nor it them. BEGIN IMMEDIATE: a transaction takes the
    # write lock when it starts, so one that read first can never deadlock on upgrading its lock (SQLite
    # fails such a writer at once, busy timeout or not), and read-modify-write services (job_claim) are
    # exclusive, which SELECT ... FOR UPDATE is not on SQLite. timeout: seconds a writer waits its turn.
    # synchronous=NORMAL is WAL's usual pairing: a power cut may lose the last commits, never corrupt.
    _db["OPTIONS"]["timeout"] = 20
    _db["OPTIONS"]["transaction_mode"] = "IMMEDIATE"
    _db["OPTIONS"]["init_command"] = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
    # A file, not :memory:, so a uvicorn subprocess in the test suite can share the test database.
    _db["TEST"] = {"NAME": CONFIG.test_database_name or str(VAR_DIR / "test.sqlite3")}
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Redis: cache, channel layer, Celery broker and results, websocket tickets, rate limits.
EMBEDDED_REDIS_PORT = CONFIG.embedded_redis_port
REDIS_URL = CONFIG.redis_url

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "tw",
        "TIMEOUT": 300,
    }
}
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"

# The layer's pub/sub can be sharded over several Redis servers; each group lives on one of them.
CHANNEL_LAYER_URLS = CONFIG.channel_layer_urls
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": CHANNEL_LAYER_URLS, "prefix": "tw:layer"},
    }
}

# Storage for artifacts and datasets: file:///path or s3://bucket/prefix (AWS_ENDPOINT_URL for
# S3-compatible servers).
STORAGE_URL = CONFIG.storage_url
AWS_ENDPOINT_URL = CONFIG.aws_endpoint_url
AWS_REGION = CONFIG.aws_region

# Model artifacts. TorchScript and torch.export files run code when loaded: off unless the operator
# trusts every uploader (docs/security.md).
ALLOW_CODE_ARTIFACTS = CONFIG.allow_code_artifacts
MAX_ARTIFACT_BYTES = CONFIG.max_artifact_bytes
# Publishing runs the new version's one-row warm-up first, for at most this long (docs/security.md).
PUBLISH_DRY_RUN_SECONDS = CONFIG.publish_dry_run_seconds

# The web console (web/): where uvicorn forwards the paths that are not the backend's (app/core/console.py).
# The launcher sets it for `make run`; empty leaves those paths to Django (404).
CONSOLE_URL = CONFIG.console_url
# Its build assets (web/.next/standalone/.next/static), answered by uvicorn itself; empty: forwarded too.
CONSOLE_STATIC = CONFIG.console_static

# Datasets and jobs.
MAX_DATASET_BYTES = CONFIG.max_dataset_bytes
JOB_LEASE_SECONDS = CONFIG.job_lease_seconds
JOB_MAX_ATTEMPTS = CONFIG.job_max_attempts
JOB_REAP_SECONDS = CONFIG.job_reap_seconds
EVENT_LOG_MAXLEN = CONFIG.event_log_maxlen
EVENT_TRIM_SECONDS = CONFIG.event_trim_seconds
EVENT_LOG_RETENTION_DAYS = CONFIG.event_log_retention_days
# The outbox relay (app/events/relay.py): how often each web process publishes events still pending,
# and how long published rows are kept before beat prunes them.
EVENT_RELAY_SECONDS = CONFIG.event_relay_seconds
EVENT_OUTBOX_RETENTION_HOURS = CONFIG.event_outbox_retention_hours
ORPHAN_SWEEP_SECONDS = CONFIG.orphan_sweep_seconds
WS_PING_SECONDS = CONFIG.ws_ping_seconds
WS_SEND_BUFFER = CONFIG.ws_send_buffer
WS_MAX_TOPICS = CONFIG.ws_max_topics
REDIS_MAX_CONNECTIONS = CONFIG.redis_max_connections

# Serving (the batched executor inside each ASGI process).
MODEL_MEMORY_MB = CONFIG.model_memory_mb
TORCH_THREADS = CONFIG.torch_threads
MAX_INPUT_ELEMENTS = CONFIG.max_input_elements
DRAIN_SECONDS = CONFIG.drain_seconds
# On SIGTERM: seconds of answering /readyz 503 (and new inference 503) before the socket closes.
SHUTDOWN_DELAY_SECONDS = CONFIG.shutdown_delay_seconds
ARTIFACT_CACHE_DIR = CONFIG.artifact_cache
WS_MAX_IN_FLIGHT = CONFIG.ws_max_in_flight
# REST predict and V2 infer answered by app.serving.fastpath, before Django's middleware (off: through Django).
FAST_PATH = CONFIG.fast_path
# How a batch closes for models that do not choose (docs/batching.md): "adaptive" or "fixed" (wait max_delay_ms).
DISPATCH_POLICY = CONFIG.dispatch_policy
# Python's GIL switch interval in serving processes (0: leave Python's 5 ms); see docs/batching.md.
GIL_SWITCH_INTERVAL_MS = CONFIG.gil_switch_interval_ms
# Seconds a process reuses what app/serving/catalog.py knows about a model.
CATALOG_TTL = CONFIG.catalog_ttl_seconds

# Model monitoring (docs/monitoring.md): sampled prediction records, feedback and drift checks.
PREDICTION_SAMPLE_RATE = CONFIG.prediction_sample_rate
PREDICTION_BUFFER_ROWS = CONFIG.prediction_buffer_rows
PREDICTION_FLUSH_SECONDS = CONFIG.prediction_flush_seconds
PREDICTION_MAX_VALUES = CONFIG.prediction_max_values
# Rows per second and model each process records at most (bursts of one second's worth); 0: no budget.
PREDICTION_MAX_ROWS_PER_SECOND = CONFIG.prediction_max_rows_per_second
MONITORING_RETENTION_DAYS = CONFIG.monitoring_retention_days
DRIFT_THRESHOLD = CONFIG.drift_threshold
DRIFT_CHECK_SECONDS = CONFIG.drift_check_seconds
DRIFT_WINDOW_SECONDS = CONFIG.drift_window_seconds
DRIFT_MIN_SAMPLES = CONFIG.drift_min_samples
DRIFT_MAX_SAMPLES = CONFIG.drift_max_samples

# Celery (workers/celery.py reads the CELERY_* names).
CELERY_BROKER_URL = CONFIG.celery_broker_url
CELERY_RESULT_BACKEND = CONFIG.celery_result_backend
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = CONFIG.task_time_limit
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - 60
TRAIN_THREADS = CONFIG.train_threads
# Redis redelivers an unacked task after the visibility timeout: it must exceed the longest hard limit,
# or a long training job would be started a second time while the first still runs.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_TASK_TIME_LIMIT + 3600}
CELERY_RESULT_EXPIRES = 24 * 3600
CELERY_TASK_TRACK_STARTED = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = "default"
# Queues per job type: TORCHWIRE_TASK_ROUTES="workers.tasks.train_job_task=train,..." sends those tasks
# to their own queue, served by workers started with -Q (docs/deployment.md).
CELERY_TASK_ROUTES: dict[str, dict[str, str]] = {}
for _route in CONFIG.task_routes:
    _task, _, _queue = _route.partition("=")
    if not _task.strip() or not _queue.strip():
        raise ImproperlyConfigured(f"TORCHWIRE_TASK_ROUTES: {_route!r} is not task.name=queue")
    CELERY_TASK_ROUTES[_task.strip()] = {"queue": _queue.strip()}
CELERY_TIMEZONE = "UTC"

# Auth
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
if DJANGO_ENV == "test":
    # The suite creates and logs in hundreds of users; PBKDF2 at Django's 1,000,000 iterations costs about
    # half a second a hash on a 2-core machine. Only DJANGO_ENV=test (set by tests/envsetup.py) uses MD5.
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
JWT_AUDIENCE = CONFIG.jwt_audience
JWT_ISSUER = CONFIG.jwt_issuer
NINJA_JWT = {
    "ALGORITHM": "HS256",
    "SIGNING_KEY": CONFIG.jwt_signing_key or SECRET_KEY,
    "AUDIENCE": JWT_AUDIENCE,
    "ISSUER": JWT_ISSUER,
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=CONFIG.access_token_seconds),
    "REFRESH_TOKEN_LIFETIME": timedelta(seconds=CONFIG.refresh_token_seconds),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": True,
    "LEEWAY": 0,
}
# Failed-login limit (app/accounts/ratelimit.py): N per client address and username per window seconds,
# and N per username from all addresses together; then 429.
LOGIN_RATE_LIMIT = CONFIG.login_rate_limit
LOGIN_RATE_LIMIT_PER_USERNAME = CONFIG.login_rate_limit_per_username
LOGIN_RATE_WINDOW = CONFIG.login_rate_window
REALTIME_TICKET_SECONDS = CONFIG.realtime_ticket_seconds
# Seconds a process may reuse an authenticated bearer credential without asking the database
# (app/accounts/auth_cache.py); also how long another process may still accept a revoked one. 0 disables.
AUTH_CACHE_SECONDS = CONFIG.auth_cache_seconds
# While the database is unreachable, cached credentials and model entries are used this many seconds past
# their expiry (a JWT never past its own), so cached callers keep predicting; 0: refuse with 503 instead.
DB_OUTAGE_STALE_SECONDS = CONFIG.db_outage_stale_seconds
# Browsers always send Origin on a websocket handshake; these are the origins they may come from, on
# top of the ALLOWED_HOSTS on any scheme.
WEBSOCKET_ALLOWED_ORIGINS = CONFIG.websocket_allowed_origins

# Request bodies (JSON calls; the upload endpoints stream to storage and have their own caps).
DATA_UPLOAD_MAX_MEMORY_SIZE = CONFIG.max_json_bytes
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = CONFIG.static_root
# nginx serves collected static files in production; otherwise the ASGI app serves them.
SERVE_STATIC = CONFIG.serve_static

# Security headers; production turns the HTTPS ones on (TLS terminates at nginx).
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = CONFIG.secure_ssl_redirect
    SECURE_REDIRECT_EXEMPT = [r"^healthz\Z", r"^readyz\Z", r"^metrics\Z", r"^v2/health/"]
    SECURE_HSTS_SECONDS = CONFIG.secure_hsts_seconds
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = CONFIG.secure_hsts_preload
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

# Logging: one JSON object per line in production, readable lines otherwise.
LOG_FORMAT = CONFIG.log_format
LOG_LEVEL = CONFIG.log_level
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "app.core.logging.RequestIdFilter"},
        "redis_outage": {"()": "app.core.logging.RedisOutageFilter"},
    },
    "formatters": {
        "json": {"()": "app.core.logging.JsonFormatter"},
        "text": {"format": "%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.request": {"level": "ERROR"},
        "uvicorn.access": {"level": "WARNING"},
        # A database outage is logged once by app.core.db (when it starts and ends), not per attempt.
        "psycopg.pool": {"level": "ERROR"},
        "channels_redis.pubsub": {"filters": ["redis_outage"]},
        # The console bridge's client (app/core/console.py) would log every page and asset it forwards.
        "httpx": {"level": "WARNING"},
    },
}

# Readiness checks give up after this many seconds each.
READINESS_TIMEOUT = CONFIG.readiness_timeout
