"""The one settings module. Everything that differs between machines comes from the environment.

DJANGO_ENV selects defaults: ``development`` (the embedded defaults `make run` uses), ``test`` and
``production`` (secure defaults; SECRET_KEY and ALLOWED_HOSTS must be given).
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from app.core.urls import database_from_url

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name) or ""
    try:
        return int(raw) if raw else default
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from exc


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


DJANGO_ENV = env("DJANGO_ENV", "development")
if DJANGO_ENV not in ("development", "test", "production"):
    raise ImproperlyConfigured(f"DJANGO_ENV={DJANGO_ENV!r}: use development, test or production")
PRODUCTION = DJANGO_ENV == "production"

VAR_DIR = Path(env("TORCHWIRE_VAR_DIR", str(BASE_DIR / "var"))).resolve()


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


SECRET_KEY = env("SECRET_KEY")
if not SECRET_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured("SECRET_KEY must be set when DJANGO_ENV=production")
    SECRET_KEY = _development_secret_key()
if PRODUCTION and len(SECRET_KEY) < 50:
    raise ImproperlyConfigured("SECRET_KEY must be at least 50 characters in production")

DEBUG = env_bool("DJANGO_DEBUG", False)
if PRODUCTION and DEBUG:
    raise ImproperlyConfigured("DJANGO_DEBUG cannot be on in production")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [] if PRODUCTION else ["127.0.0.1", "localhost", "[::1]", "testserver"])
if PRODUCTION and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set when DJANGO_ENV=production")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

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
DATABASE_URL = env("DATABASE_URL", f"sqlite:///{VAR_DIR / 'torchwire.sqlite3'}")
_db = database_from_url(DATABASE_URL, base_dir=BASE_DIR)
_db["CONN_MAX_AGE"] = 0
_db["ATOMIC_REQUESTS"] = False
if _db["ENGINE"] == "django.db.backends.postgresql":
    # Django's backend plus the outage breaker (app/core/postgres, app/core/db.py).
    _db["ENGINE"] = "app.core.postgres"
    _db["OPTIONS"]["pool"] = {
        "min_size": env_int("DATABASE_POOL_MIN", 1),
        "max_size": env_int("DATABASE_POOL_MAX", 20),
        "timeout": env_int("DATABASE_POOL_TIMEOUT", 10),
        # The pool's own reconnection (backing off 1, 2, 4... s) gives up after this long, so requests
        # never wait for a retry scheduled long after the database came back; the next checkout starts a
        # fresh attempt (and the breaker in app/core/db.py keeps checkouts away while it is down).
        "reconnect_timeout": env_int("DATABASE_POOL_RECONNECT_TIMEOUT", 2),
    }
    # app.core.postgres also has the pool check each connection before handing it out, so ones the
    # server dropped are replaced unseen.
    _db["OPTIONS"].setdefault("connect_timeout", 5)
    _db["TEST"] = {"NAME": env("TEST_DATABASE_NAME") or None}
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
    _db["TEST"] = {"NAME": env("TEST_DATABASE_NAME") or str(VAR_DIR / "test.sqlite3")}
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Redis: cache, channel layer, Celery broker and results, websocket tickets, rate limits.
EMBEDDED_REDIS_PORT = env_int("TORCHWIRE_EMBEDDED_REDIS_PORT", 6390)
REDIS_URL = env("REDIS_URL", f"redis://127.0.0.1:{EMBEDDED_REDIS_PORT}/0")

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
CHANNEL_LAYER_URLS = env_list("TORCHWIRE_CHANNEL_LAYER_URLS", [REDIS_URL])
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": CHANNEL_LAYER_URLS, "prefix": "tw:layer"},
    }
}

# Storage for artifacts and datasets: file:///path or s3://bucket/prefix (AWS_ENDPOINT_URL for
# S3-compatible servers).
STORAGE_URL = env("STORAGE_URL", f"file://{VAR_DIR / 'storage'}")
AWS_ENDPOINT_URL = env("AWS_ENDPOINT_URL") or None
AWS_REGION = env("AWS_DEFAULT_REGION", "us-east-1")

# Model artifacts. TorchScript and torch.export files run code when loaded: off unless the operator
# trusts every uploader (docs/security.md).
ALLOW_CODE_ARTIFACTS = env_bool("TORCHWIRE_ALLOW_CODE_ARTIFACTS", False)
MAX_ARTIFACT_BYTES = env_int("TORCHWIRE_MAX_ARTIFACT_BYTES", 2 * 1024**3)
# Publishing runs the new version's one-row warm-up first, for at most this long (docs/security.md).
PUBLISH_DRY_RUN_SECONDS = float(env("TORCHWIRE_PUBLISH_DRY_RUN_SECONDS", "60"))

# The web console (web/): where uvicorn forwards the paths that are not the backend's (app/core/console.py).
# The launcher sets it for `make run`; empty leaves those paths to Django (404).
CONSOLE_URL = env("TORCHWIRE_CONSOLE_URL")
# Its build assets (web/.next/standalone/.next/static), answered by uvicorn itself; empty: forwarded too.
CONSOLE_STATIC = env("TORCHWIRE_CONSOLE_STATIC")

# Datasets and jobs.
MAX_DATASET_BYTES = env_int("TORCHWIRE_MAX_DATASET_BYTES", 200 * 1024 * 1024)
JOB_LEASE_SECONDS = env_int("TORCHWIRE_JOB_LEASE_SECONDS", 60)
JOB_MAX_ATTEMPTS = env_int("TORCHWIRE_JOB_MAX_ATTEMPTS", 3)
JOB_REAP_SECONDS = env_int("TORCHWIRE_JOB_REAP_SECONDS", 30)
EVENT_LOG_MAXLEN = env_int("TORCHWIRE_EVENT_LOG_MAXLEN", 10_000)
EVENT_TRIM_SECONDS = env_int("TORCHWIRE_EVENT_TRIM_SECONDS", 3600)
EVENT_LOG_RETENTION_DAYS = env_int("TORCHWIRE_EVENT_LOG_RETENTION_DAYS", 7)
# The outbox relay (app/events/relay.py): how often each web process publishes events still pending,
# and how long published rows are kept before beat prunes them.
EVENT_RELAY_SECONDS = float(env("TORCHWIRE_EVENT_RELAY_SECONDS", "1"))
EVENT_OUTBOX_RETENTION_HOURS = env_int("TORCHWIRE_EVENT_OUTBOX_RETENTION_HOURS", 24)
ORPHAN_SWEEP_SECONDS = env_int("TORCHWIRE_ORPHAN_SWEEP_SECONDS", 3600)
WS_PING_SECONDS = env_int("TORCHWIRE_WS_PING_SECONDS", 20)
WS_SEND_BUFFER = env_int("TORCHWIRE_WS_SEND_BUFFER", 1000)
WS_MAX_TOPICS = env_int("TORCHWIRE_WS_MAX_TOPICS", 100)
REDIS_MAX_CONNECTIONS = env_int("TORCHWIRE_REDIS_MAX_CONNECTIONS", 100)

# Serving (the batched executor inside each ASGI process).
MODEL_MEMORY_MB = env_int("TORCHWIRE_MODEL_MEMORY_MB", 4096)
TORCH_THREADS = env_int("TORCHWIRE_TORCH_THREADS", 1)
MAX_INPUT_ELEMENTS = env_int("TORCHWIRE_MAX_INPUT_ELEMENTS", 1_000_000)
DRAIN_SECONDS = env_int("TORCHWIRE_DRAIN_SECONDS", 10)
# On SIGTERM: seconds of answering /readyz 503 (and new inference 503) before the socket closes.
SHUTDOWN_DELAY_SECONDS = float(env("TORCHWIRE_SHUTDOWN_DELAY_SECONDS", "1" if PRODUCTION else "0"))
ARTIFACT_CACHE_DIR = Path(env("TORCHWIRE_ARTIFACT_CACHE", str(VAR_DIR / "cache" / "artifacts")))
WS_MAX_IN_FLIGHT = env_int("TORCHWIRE_WS_MAX_IN_FLIGHT", 64)
# REST predict and V2 infer answered by app.serving.fastpath, before Django's middleware (off: through Django).
FAST_PATH = env_bool("TORCHWIRE_FAST_PATH", True)
# How a batch closes for models that do not choose (docs/batching.md): "adaptive" or "fixed" (wait max_delay_ms).
DISPATCH_POLICY = env("TORCHWIRE_DISPATCH_POLICY", "adaptive")
if DISPATCH_POLICY not in ("adaptive", "fixed"):
    raise ImproperlyConfigured("TORCHWIRE_DISPATCH_POLICY must be adaptive or fixed")
# Python's GIL switch interval in serving processes (0: leave Python's 5 ms); see docs/batching.md.
GIL_SWITCH_INTERVAL_MS = float(env("TORCHWIRE_GIL_SWITCH_INTERVAL_MS", "0.5"))

# Model monitoring (docs/monitoring.md): sampled prediction records, feedback and drift checks.
PREDICTION_SAMPLE_RATE = float(env("TORCHWIRE_PREDICTION_SAMPLE_RATE", "1.0"))
if not 0.0 <= PREDICTION_SAMPLE_RATE <= 1.0:
    raise ImproperlyConfigured("TORCHWIRE_PREDICTION_SAMPLE_RATE must be in [0, 1]")
PREDICTION_BUFFER_ROWS = env_int("TORCHWIRE_PREDICTION_BUFFER_ROWS", 50_000)
PREDICTION_FLUSH_SECONDS = float(env("TORCHWIRE_PREDICTION_FLUSH_SECONDS", "1"))
PREDICTION_MAX_VALUES = env_int("TORCHWIRE_PREDICTION_MAX_VALUES", 256)
# Rows per second and model each process records at most (bursts of one second's worth); 0: no budget.
PREDICTION_MAX_ROWS_PER_SECOND = float(env("TORCHWIRE_PREDICTION_MAX_ROWS_PER_SECOND", "100"))
if PREDICTION_MAX_ROWS_PER_SECOND < 0:
    raise ImproperlyConfigured("TORCHWIRE_PREDICTION_MAX_ROWS_PER_SECOND must be 0 (no budget) or more")
MONITORING_RETENTION_DAYS = env_int("TORCHWIRE_MONITORING_RETENTION_DAYS", 30)
DRIFT_THRESHOLD = float(env("TORCHWIRE_DRIFT_THRESHOLD", "0.2"))
DRIFT_CHECK_SECONDS = env_int("TORCHWIRE_DRIFT_CHECK_SECONDS", 3600)
DRIFT_WINDOW_SECONDS = env_int("TORCHWIRE_DRIFT_WINDOW_SECONDS", 3600)
DRIFT_MIN_SAMPLES = env_int("TORCHWIRE_DRIFT_MIN_SAMPLES", 100)
DRIFT_MAX_SAMPLES = env_int("TORCHWIRE_DRIFT_MAX_SAMPLES", 50_000)

# Celery (workers/celery.py reads the CELERY_* names).
CELERY_BROKER_URL = env("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", REDIS_URL)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env_int("TORCHWIRE_TASK_TIME_LIMIT", 6 * 3600)
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - 60
# torch threads of each worker process (training, batch prediction); torch's default, one per core, makes
# concurrent workers on a small host spin against each other (workers/celery.py applies it).
TRAIN_THREADS = env_int("TORCHWIRE_TRAIN_THREADS", 1)
if TRAIN_THREADS < 1:
    raise ImproperlyConfigured(f"TORCHWIRE_TRAIN_THREADS={TRAIN_THREADS} must be at least 1")
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
for _route in env_list("TORCHWIRE_TASK_ROUTES", []):
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
JWT_AUDIENCE = env("TORCHWIRE_JWT_AUDIENCE", "torchwire")
JWT_ISSUER = env("TORCHWIRE_JWT_ISSUER", "torchwire")
NINJA_JWT = {
    "ALGORITHM": "HS256",
    "SIGNING_KEY": env("TORCHWIRE_JWT_SIGNING_KEY") or SECRET_KEY,
    "AUDIENCE": JWT_AUDIENCE,
    "ISSUER": JWT_ISSUER,
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=env_int("TORCHWIRE_ACCESS_TOKEN_SECONDS", 300)),
    "REFRESH_TOKEN_LIFETIME": timedelta(seconds=env_int("TORCHWIRE_REFRESH_TOKEN_SECONDS", 86400)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": True,
    "LEEWAY": 0,
}
# Failed-login limit (app/accounts/ratelimit.py): N per client address and username per window seconds,
# and N per username from all addresses together; then 429.
LOGIN_RATE_LIMIT = env_int("TORCHWIRE_LOGIN_RATE_LIMIT", 10)
LOGIN_RATE_LIMIT_PER_USERNAME = env_int("TORCHWIRE_LOGIN_RATE_LIMIT_PER_USERNAME", 10 * LOGIN_RATE_LIMIT)
LOGIN_RATE_WINDOW = env_int("TORCHWIRE_LOGIN_RATE_WINDOW", 60)
REALTIME_TICKET_SECONDS = 30
# Seconds a process may reuse an authenticated bearer credential without asking the database
# (app/accounts/auth_cache.py); also how long another process may still accept a revoked one. 0 disables.
AUTH_CACHE_SECONDS = float(env("TORCHWIRE_AUTH_CACHE_SECONDS", "5"))
# While the database is unreachable, cached credentials and model entries are used this many seconds past
# their expiry (a JWT never past its own), so cached callers keep predicting; 0: refuse with 503 instead.
DB_OUTAGE_STALE_SECONDS = float(env("TORCHWIRE_DB_OUTAGE_STALE_SECONDS", "300"))
# Browsers always send Origin on a websocket handshake; these are the origins they may come from, on
# top of the ALLOWED_HOSTS on any scheme.
WEBSOCKET_ALLOWED_ORIGINS = env_list("TORCHWIRE_WEBSOCKET_ALLOWED_ORIGINS", [])

# Request bodies (JSON calls; the upload endpoints stream to storage and have their own caps).
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("TORCHWIRE_MAX_JSON_BYTES", 8 * 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = Path(env("STATIC_ROOT", str(VAR_DIR / "static")))
# nginx serves collected static files in production; otherwise the ASGI app serves them.
SERVE_STATIC = env_bool("TORCHWIRE_SERVE_STATIC", not PRODUCTION)

# Security headers; production turns the HTTPS ones on (TLS terminates at nginx).
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_REDIRECT_EXEMPT = [r"^healthz\Z", r"^readyz\Z", r"^metrics\Z", r"^v2/health/"]
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

# Logging: one JSON object per line in production, readable lines otherwise.
LOG_FORMAT = env("LOG_FORMAT", "json" if PRODUCTION else "text")
LOG_LEVEL = env("LOG_LEVEL", "INFO")
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
READINESS_TIMEOUT = float(env("TORCHWIRE_READINESS_TIMEOUT", "2"))
