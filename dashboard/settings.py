"""Settings for Sluice, all read from the environment here and nowhere else.

Defaults are the embedded ones (SQLite, a Redis the launcher starts), so a
newcomer needs no set-up; every variable is listed in the README.
"""

import ipaddress
import os
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
import django
from django.core.exceptions import ImproperlyConfigured

from dashboard.kinds import APPS as KIND_APPS

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {raw!r}")


def env_int(name: str, default: int, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value}")
    return value


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in env(name, default).split(",") if item.strip()]


def env_secret(name: str) -> str:
    """The value of NAME, or the contents of the file named by NAME_FILE."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None
    return os.environ.get(name, "")


STATE_DIR = Path(env("SLUICE_STATE_DIR", str(BASE_DIR / ".sluice")))


def _local_secret_key() -> str:
    # Without SECRET_KEY, keep one per checkout so sessions survive restarts.
    path = STATE_DIR / "secret-key"
    if not path.exists():
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = env_secret("SECRET_KEY") or _local_secret_key()
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "django_htmx",
    "axes",  # before dashboard: its failure count is up to date when Sluice audits
    "dashboard",
    # One app per broker kind: its templates, template tags and commands.
    *KIND_APPS,
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # An error answer with an empty body gets a sentence saying why (dashboard/errors.py).
    "dashboard.errors.ErrorMessageMiddleware",
    # CSP, Permissions-Policy, and no-store for signed-in users (dashboard/security.py).
    "dashboard.security.SecurityHeadersMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "dashboard.auth.BearerTokenMiddleware",
    "dashboard.auth.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Turns a sign-in refused by the throttle into its 429 page; last, as axes asks.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "dashboard.urls"
ASGI_APPLICATION = "dashboard.asgi.application"

TEMPLATES: list[dict[str, Any]] = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "dashboard.auth.role_context",
            ],
        },
    }
]

DATABASES = {
    "default": dj_database_url.parse(
        env("DATABASE_URL", f"sqlite:///{STATE_DIR / 'sluice.sqlite3'}"), conn_max_age=60
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    # The web server, the worker and the scheduler share the file: wait for
    # locks instead of failing, and let readers run beside the writer.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
if django.VERSION < (6, 0):
    # Django 6 has {% partialdef %} built in; 5.2 (Python 3.11) needs the package.
    INSTALLED_APPS.append("template_partials")
    TEMPLATES[0]["OPTIONS"]["builtins"] = ["template_partials.templatetags.partials"]

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env("REDIS_URL", "redis://127.0.0.1:6379/0")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "sluice",
        "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
    }
}
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        # channels_redis waits up to 5 s on a blocking pop; redis-py's default
        # socket timeout is also 5 s, which kills idle websockets. Give it room.
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 30}], "prefix": "sluice:ws"},
    }
}

CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ACKS_LATE = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE = {
    # The tick decides which brokers are due; per-broker intervals live in the DB.
    "tick": {"task": "dashboard.tasks.tick", "schedule": 1.0, "options": {"expires": 5}},
    "prune-history": {"task": "dashboard.tasks.prune_history", "schedule": 600.0},
    # Sends the alert notifications that are due (new ones, and retries after a failure).
    "deliver-notifications": {
        "task": "dashboard.tasks.deliver_notifications",
        "schedule": 5.0,
        "options": {"expires": 5},
    },
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

# Sign-in throttling (django-axes): after N failures for one user name, or from one
# address, counted separately, sign-in is refused with a 429 page for M minutes.
# Failed attempts are audited (dashboard/loginaudit.py).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("SLUICE_LOGIN_FAILURE_LIMIT", 10, minimum=1)
SLUICE_LOGIN_LOCKOUT_MINUTES = env_int("SLUICE_LOGIN_LOCKOUT_MINUTES", 15, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=SLUICE_LOGIN_LOCKOUT_MINUTES)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
# Attempts while locked out are refused but do not stretch the lock, so that it ends
# when the page says; a success elsewhere does not wipe the count an attacker built.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_RESET_ON_SUCCESS = False
AXES_LOCKOUT_CALLABLE = "dashboard.loginaudit.locked_out"
# Reverse proxies in front of Sluice that append to X-Forwarded-For (0: use the peer).
SLUICE_PROXY_COUNT = env_int("SLUICE_PROXY_COUNT", 0, minimum=0)
AXES_CLIENT_IP_CALLABLE = "dashboard.loginaudit.client_address"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:overview"
LOGOUT_REDIRECT_URL = "login"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = STATE_DIR / "static"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    # kafka-python logs every failed connection attempt at ERROR; the broker's
    # state is shown on the page instead. django-axes announces itself at INFO in
    # every process; its WARNINGs (a failed sign-in, a lockout) are kept. urllib3 logs each
    # request's path at DEBUG, and a Slack webhook's path is its secret.
    "loggers": {
        "kafka": {"level": "CRITICAL"},
        "pika": {"level": "WARNING"},
        "axes": {"level": "WARNING"},
        "urllib3": {"level": "INFO"},
    },
}

# Sluice itself.
SLUICE_CONFIG = env("SLUICE_CONFIG")
SLUICE_INTERVAL = env_int("SLUICE_INTERVAL", 5, minimum=1)
SLUICE_TOPOLOGY_INTERVAL = env_int("SLUICE_TOPOLOGY_INTERVAL", 60, minimum=5)
SLUICE_BROKER_TIMEOUT = env_int("SLUICE_BROKER_TIMEOUT", 3, minimum=1)
SLUICE_HISTORY_FULL_HOURS = env_int("SLUICE_HISTORY_FULL_HOURS", 24, minimum=1)
SLUICE_HISTORY_DAYS = env_int("SLUICE_HISTORY_DAYS", 7, minimum=1)
SLUICE_ROLLUP_SECONDS = env_int("SLUICE_ROLLUP_SECONDS", 300, minimum=60)
SLUICE_PAGE_SIZE = env_int("SLUICE_PAGE_SIZE", 100, minimum=10)
# Queue names that hold dead letters, besides those bound to a dead-letter exchange.
SLUICE_DLQ_PATTERNS = env(
    "SLUICE_DLQ_PATTERNS", "*.dlq,*-dlq,*_dlq,dlq.*,*.DLQ,*.dead,*dead-letter*,*.DLT"
)
# Kafka dead-letter topics: names matching these, or records carrying one of these headers
# (the name of the topic a record came from; Spring Kafka's is kafka_dlt-original-topic).
SLUICE_KAFKA_DLQ_PATTERNS = env(
    "SLUICE_KAFKA_DLQ_PATTERNS", "*.DLT,*-dlt,*.dlt,*-dlq,*.dlq,*_dlq,dlq.*,*.DLQ"
)
SLUICE_KAFKA_ORIGIN_HEADERS = env(
    "SLUICE_KAFKA_ORIGIN_HEADERS", "x-original-topic,kafka_dlt-original-topic"
)
# NATS dead letters: a JetStream stream Sluice creates (when allowed) to capture the
# max-deliveries and terminated advisories, checked every N minutes by the collection;
# and the names of streams taken for dead-letter streams.
SLUICE_NATS_CAPTURE_ADVISORIES = env_bool("SLUICE_NATS_CAPTURE_ADVISORIES", True)
SLUICE_NATS_CAPTURE_STREAM = env("SLUICE_NATS_CAPTURE_STREAM", "SLUICE_DEAD_LETTERS")
SLUICE_NATS_CAPTURE_MAX_AGE_DAYS = env_int("SLUICE_NATS_CAPTURE_MAX_AGE_DAYS", 30, minimum=1)
SLUICE_NATS_CAPTURE_MAX_BYTES = env_int(
    "SLUICE_NATS_CAPTURE_MAX_BYTES", 256 * 1024 * 1024, minimum=1024 * 1024
)
SLUICE_NATS_CAPTURE_CHECK_MINUTES = env_int("SLUICE_NATS_CAPTURE_CHECK_MINUTES", 10, minimum=1)
SLUICE_NATS_DLQ_PATTERNS = env("SLUICE_NATS_DLQ_PATTERNS", "*_DLQ,*-dlq,*.dlq,DLQ_*,dlq.*")
# How many head messages a dead-letter scan or a dry run reads.
SLUICE_PEEK_LIMIT = env_int("SLUICE_PEEK_LIMIT", 1000, minimum=1)
# The most messages one NDJSON import may hold (its lines are kept with the job).
SLUICE_IMPORT_MAX_LINES = env_int("SLUICE_IMPORT_MAX_LINES", 1_000_000, minimum=1)
# Triage: a consumer group whose oldest unread record is older than this is an incident
# (alert rules may change it per group pattern).
SLUICE_LAG_SECONDS = env_int("SLUICE_LAG_SECONDS", 600, minimum=1)
# The ${VAR}s that brokers added or changed in the admin may expand (the broker
# file's may expand any): an admin account must not read the worker's environment.
SLUICE_ADMIN_ENV_ALLOWLIST = env_list("SLUICE_ADMIN_ENV_ALLOWLIST", "")


def env_networks(name: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    networks = []
    for item in env_list(name, ""):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ImproperlyConfigured(
                f"{name} lists addresses or networks (10.0.0.5, 10.0.0.0/24), not {item!r}"
            ) from None
    return networks


# Who may scrape /metrics without an API token: e.g. the Prometheus server's address.
SLUICE_METRICS_ALLOW = env_networks("SLUICE_METRICS_ALLOW")
# Bodies longer than this are shown truncated, with a download of the whole.
SLUICE_BODY_LIMIT = env_int("SLUICE_BODY_LIMIT", 65536, minimum=1024)
# The publish form and API take bodies up to 16 MiB (views.params.MAX_BODY), a
# third more as base64; Django's 2.5 MB default would refuse them with a bare 400.
DATA_UPLOAD_MAX_MEMORY_SIZE = 24 * 1024 * 1024
# A dead-letters form with every message of a look ticked posts one field per message
# (up to SLUICE_PEEK_LIMIT, and a job takes up to 10,000 ids): Django's 1,000 would
# refuse "select all" with a bare 400.
DATA_UPLOAD_MAX_NUMBER_FIELDS = max(SLUICE_PEEK_LIMIT, 10_000) + 200
# A running job whose worker has not reported for this long is shown as interrupted, and can be resumed.
SLUICE_JOB_STALL_SECONDS = env_int("SLUICE_JOB_STALL_SECONDS", 30, minimum=2)

# Pages' shared live fragments (dashboard/live/fragments.py) and triage's memory between
# collections (dashboard/triage/evaluate.py) are cached under this scope: two Sluice
# deployments that share one Redis and its key prefix set it apart.
SLUICE_FRAGMENT_SCOPE = env("SLUICE_FRAGMENT_SCOPE", "")
# Alerts: the address that links in notifications start with (the incidents' pages).
SLUICE_PUBLIC_URL = env("SLUICE_PUBLIC_URL", "http://localhost:8000").rstrip("/")
# Email notifications go through this SMTP server.
EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
EMAIL_HOST = env("SLUICE_EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("SLUICE_EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env("SLUICE_EMAIL_USER")
EMAIL_HOST_PASSWORD = env_secret("SLUICE_EMAIL_PASSWORD")
EMAIL_USE_TLS = env_bool("SLUICE_EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = SERVER_EMAIL = env("SLUICE_EMAIL_FROM", "sluice@localhost")

# Websockets: live views (the overview, a queue, a job, a tail) a user may have open at once.
SLUICE_WS_MAX_PER_USER = env_int("SLUICE_WS_MAX_PER_USER", 20, minimum=1)


def _cpus() -> int:
    # The CPUs this process may run on (a cpuset in a container), not all the machine's.
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# The web tier (dashboard/webserver.py): worker processes, and in each (dashboard/web_limits.py)
# the requests in progress before more wait, the seconds one waits before a 503 "busy", and
# the seconds before a request that has not started to answer gets a 504.
SLUICE_WEB_WORKERS = env_int("SLUICE_WEB_WORKERS", max(2, _cpus()), minimum=1)
SLUICE_WEB_CONCURRENCY = env_int("SLUICE_WEB_CONCURRENCY", 4, minimum=1)
SLUICE_WEB_QUEUE_SECONDS = env_int("SLUICE_WEB_QUEUE_SECONDS", 3, minimum=0)
SLUICE_REQUEST_TIMEOUT = env_int("SLUICE_REQUEST_TIMEOUT", 30, minimum=1)


# Behind HTTPS (README, "Behind HTTPS"): cookies only over TLS, and HSTS.
def _proxy_ssl_header(raw: str) -> tuple[str, str] | None:
    """Django's SECURE_PROXY_SSL_HEADER from "X-Forwarded-Proto: https"."""
    if not raw:
        return None
    name, sep, value = raw.partition(":")
    if not sep or not name.strip() or not value.strip():
        raise ImproperlyConfigured(
            f"SLUICE_PROXY_SSL_HEADER must look like 'X-Forwarded-Proto: https', not {raw!r}"
        )
    return "HTTP_" + name.strip().upper().replace("-", "_"), value.strip()


SLUICE_HTTPS = env_bool("SLUICE_HTTPS", False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = SLUICE_HTTPS
SECURE_HSTS_SECONDS = env_int("SLUICE_HSTS_SECONDS", 31_536_000 if SLUICE_HTTPS else 0, minimum=0)
SECURE_PROXY_SSL_HEADER = _proxy_ssl_header(env("SLUICE_PROXY_SSL_HEADER"))
