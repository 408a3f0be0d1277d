"""Settings for Integration Hub, read from the environment (see .env.example for every variable).

Required values have no defaults on purpose: a production deployment that forgot one must fail at
start with the variable's name, not run with a development value. `make demo` and `make test`
provide them through `integration_hub.devservices`.
"""

from pathlib import Path

import environ
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")


def _required(name: str, reader=env.str, **kwargs):
    """A required value, taken from NAME or from the file named by NAME_FILE (Docker secrets)."""
    file_name = env.str(f"{name}_FILE", default="")
    if file_name:
        try:
            raw = Path(file_name).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE: cannot read {file_name}: {exc.strerror}") from None
        env.ENVIRON[name] = raw
    if not env.str(name, default=""):
        raise ImproperlyConfigured(f"Set the {name} environment variable (see .env.example).")
    return reader(name, **kwargs)


DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = _required("SECRET_KEY")
ALLOWED_HOSTS = _required("ALLOWED_HOSTS", env.list)
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# Fernet keys for service tokens at rest. The first key encrypts; every key decrypts, so a new key is
# added in front, `manage.py rotate_token_keys` re-encrypts, and the old key is then removed.
TOKEN_ENCRYPTION_KEYS = _required("TOKEN_ENCRYPTION_KEYS", env.list)
for _position, _key in enumerate(TOKEN_ENCRYPTION_KEYS, start=1):
    try:
        Fernet(_key)
    except ValueError:
        raise ImproperlyConfigured(
            f"TOKEN_ENCRYPTION_KEYS: entry {_position} is not a Fernet key "
            "(generate one with: python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())')"
        ) from None

DATABASES = {"default": env.db_url_config(_required("DATABASE_URL"))}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
REDIS_URL = _required("REDIS_URL")

TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_TZ = True
LANGUAGE_CODE = "en"
USE_I18N = False

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_celery_beat",
    "web",
    "sync",
    "monitoring",
    "simulator",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Every page needs a login unless its view is marked @login_not_required (login, /healthz).
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    # Times on every page in the viewer's zone (their Preference, else TIME_ZONE).
    "web.middleware.ViewerTimeZoneMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "integration_hub.urls"
WSGI_APPLICATION = "integration_hub.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "monitoring.context_processors.hub_status",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "monitoring:overview"
LOGOUT_REDIRECT_URL = "login"

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
# Tests and `make demo` serve static files without collectstatic.
WHITENOISE_USE_FINDERS = env.bool("WHITENOISE_USE_FINDERS", default=DEBUG)
if WHITENOISE_USE_FINDERS:
    STATIC_ROOT = None
    STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
else:
    STATIC_ROOT = BASE_DIR / "staticfiles"

# HTTPS: on unless told otherwise (make demo and the tests serve plain HTTP on loopback).
HTTPS = env.bool("HTTPS", default=True)
SECURE_SSL_REDIRECT = HTTPS
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
if env.bool("USE_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]  # monitors and scrapers often speak plain HTTP
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=8 * 3600)
X_FRAME_OPTIONS = "DENY"

EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="integration-hub@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# Celery: JSON only, late acknowledgement, no result backend (pages read our own rows). A long run must not
# be redelivered while it is still running, so the Redis visibility timeout is longer than any run's hard
# time limit; a task whose worker process died therefore comes back only hours later (or never, if Redis
# restarted empty). Runs do not wait for that: the run watchdog (sync/run/watchdog.py) continues them.
CELERY_BROKER_URL = REDIS_URL
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=43200)}
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=6 * 3600)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=6 * 3600 + 300)
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_SEND_TASK_EVENTS = False
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Supervision (heartbeat, probes, alert rules, the run watchdog) has its own queue: a worker busy with
# hour-long runs must not starve the dead-man switch. It has a worker of its own (compose: monitor).
CELERY_TASK_ROUTES = {"monitoring.*": {"queue": "monitoring"}, "sync.watch_runs": {"queue": "monitoring"}}
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TIMEZONE = TIME_ZONE

# Circuit breaker per Moodle site (shared in Redis): it opens when, over the window, transient errors pass
# the rate (after a minimum of calls) or the p90 latency passes the limit; after the cool-down one probe.
MOODLE_BREAKER = {
    "window_s": env.float("BREAKER_WINDOW_S", default=60.0),
    "min_calls": env.int("BREAKER_MIN_CALLS", default=10),
    "error_rate": env.float("BREAKER_ERROR_RATE", default=0.5),
    "latency_p90_ms": env.float("BREAKER_LATENCY_P90_MS", default=2000.0),
    # Latency is judged beyond what a call's size explains: each user sent may add this much.
    "per_item_ms": env.float("BREAKER_LATENCY_PER_ITEM_MS", default=25.0),
    "min_slow_calls": env.int("BREAKER_MIN_SLOW_CALLS", default=3),
    "cooldown_s": env.float("BREAKER_COOLDOWN_S", default=60.0),
}
# A write call's server time the hub aims for when it sizes its batches (from the time per user it saw).
MOODLE_TARGET_CALL_MS = env.float("MOODLE_TARGET_CALL_MS", default=2000.0)
# Moodle calls: attempts per request (the first included) for transient errors, and the backoff.
MOODLE_RETRY = {
    "attempts": env.int("MOODLE_RETRY_ATTEMPTS", default=4),
    "base_s": env.float("MOODLE_RETRY_BASE_S", default=1.0),
    "cap_s": env.float("MOODLE_RETRY_CAP_S", default=30.0),
}
MOODLE_TIMEOUTS = {
    "connect_s": env.float("MOODLE_CONNECT_TIMEOUT_S", default=5.0),
    "read_s": env.float("MOODLE_READ_TIMEOUT_S", default=60.0),
}

# Run locks: a run's lock expires this long after its worker stopped renewing it.
RUN_LOCK_TTL_S = env.int("RUN_LOCK_TTL_S", default=60)
# A run that meets Moodle's maintenance mode waits this long before trying again.
MAINTENANCE_BACKOFF_S = env.int("MAINTENANCE_BACKOFF_S", default=300)
# A run whose look-up failed after every retry waits this long before trying the batch again.
TRANSIENT_BACKOFF_S = env.float("TRANSIENT_BACKOFF_S", default=30.0)
# A run whose hub database or Redis stops answering waits this long for them before it fails.
HUB_SERVICE_WAIT_S = env.int("HUB_SERVICE_WAIT_S", default=300)
# The watchdog (sync.watch_runs, every 30 s) continues a running run whose worker has shown no sign of life
# for this long and no longer holds its site's lock, and sends again a queued run whose task never reached
# the broker, or reached it RUN_RESEND_S ago without being picked up (a broker restarted empty).
RUN_STALE_S = env.int("RUN_STALE_S", default=45)
RUN_RESEND_S = env.int("RUN_RESEND_S", default=300)
# A resolution run that finds its site's lock held tries again this often (and at once when it is freed).
LOCK_WAIT_RETRY_S = env.float("LOCK_WAIT_RETRY_S", default=15.0)
# Uploaded source files (CSV uploads on the Start-a-run page).
UPLOAD_DIR = Path(env.str("UPLOAD_DIR", default=str(BASE_DIR / "var" / "uploads")))
# Folders a CSV source's server path may be in when an Admin types it on the source page (the preview shows
# a file's first rows, so a path elsewhere could show any file the hub can read, its own secrets included).
# The addsource command, run by whoever has a shell on the server, is not limited.
SOURCE_FILE_DIRS = [
    Path(p) for p in env.list("SOURCE_FILE_DIRS", default=[str(UPLOAD_DIR), str(BASE_DIR / "demo")])
]
# A larger upload is refused by the form, naming the limit and the file's size; past the limit its bytes are
# counted but no longer kept (sync.uploads.UploadSizeLimit), so a huge file costs neither memory nor disk.
UPLOAD_MAX_MB = env.int("UPLOAD_MAX_MB", default=50)
# An uploaded file is kept until a real run has read it, or for this long (a dry run's "Run this for real"
# reads the same file); the watchdog task deletes what is past that.
UPLOAD_KEEP_HOURS = env.int("UPLOAD_KEEP_HOURS", default=24)
FILE_UPLOAD_HANDLERS = [
    "sync.uploads.UploadSizeLimit",
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]
# Files above this go to a temporary file while the request is read, not to memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
# The request body apart from its files (form fields): files are bounded by UPLOAD_MAX_MB, not by this.
DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440

# Webhooks (sync/hooks.py): the source's changes and Moodle's own, signed with a per-site secret.
# A request is refused when its timestamp is further than this from the hub's clock (replays, skewed clocks).
HOOK_TIMESTAMP_WINDOW_S = env.int("HOOK_TIMESTAMP_WINDOW_S", default=300)
# A larger body is refused (413) before it is read.
HOOK_MAX_BYTES = env.int("HOOK_MAX_BYTES", default=1_048_576)
# Event ids are remembered this long: a redelivery within it is answered 200 and does nothing.
HOOK_RETENTION_DAYS = env.int("HOOK_RETENTION_DAYS", default=14)
# Events arriving within this long of the first are sent together, by one run of kind "event".
EVENT_COALESCE_S = env.float("EVENT_COALESCE_S", default=2.0)
# After a secret is rotated, the old one is still accepted for this long (senders switch over meanwhile).
HOOK_SECRET_OVERLAP_HOURS = env.int("HOOK_SECRET_OVERLAP_HOURS", default=24)

# The scheduler is called silent when its heartbeat task has not finished for this long.
SCHEDULER_STALE_AFTER_S = env.int("SCHEDULER_STALE_AFTER_S", default=180)

# Monitoring (monitoring/heartbeat.py, rules.py, alerts.py, metrics.py).
PROBE_INTERVAL_S = env.int("PROBE_INTERVAL_S", default=300)  # how often each site is probed
WORKER_HEARTBEAT_TTL_S = env.int("WORKER_HEARTBEAT_TTL_S", default=90)  # a worker silent this long is down
ALERT_REPEAT_AFTER_S = env.int("ALERT_REPEAT_AFTER_S", default=4 * 3600)  # re-notify a still-open alert
ALERT_CONSECUTIVE = env.int("ALERT_CONSECUTIVE", default=2)  # evaluations a condition must hold first
ALERT_WINDOW_S = env.int("ALERT_WINDOW_S", default=900)  # rolling window for error rates
ALERT_TRANSIENT_RATE = env.float("ALERT_TRANSIENT_RATE", default=0.10)  # sustained share of transient errors
ALERT_TRANSIENT_MIN_CALLS = env.int("ALERT_TRANSIENT_MIN_CALLS", default=20)
ALERT_BREAKER_OPEN_S = env.int("ALERT_BREAKER_OPEN_S", default=600)
ALERT_TOKEN_EXPIRY_DAYS = env.list("ALERT_TOKEN_EXPIRY_DAYS", cast=int, default=[30, 14, 7, 1])
ALERT_STUCK_RUN_S = env.int("ALERT_STUCK_RUN_S", default=900)  # a running run with no progress this long
ALERT_START_DRIFT_S = env.int("ALERT_START_DRIFT_S", default=600)  # a schedule late by more than this
WEBHOOK_TIMEOUT_S = env.float("WEBHOOK_TIMEOUT_S", default=10.0)
# Call log, rollups, probe results, breaker events and deliveries older than this are pruned (hourly, in
# batches, each run at most HISTORY_PRUNE_BUDGET_S seconds).
HISTORY_RETENTION_DAYS = env.int("HISTORY_RETENTION_DAYS", default=30)
HISTORY_PRUNE_BUDGET_S = env.int("HISTORY_PRUNE_BUDGET_S", default=300)
# The hub's public address, so links in alert emails and webhooks are absolute (workers have no request).
HUB_BASE_URL = env.str("HUB_BASE_URL", default="")
# /metrics: a bearer token, or clients from these networks (CIDRs). Neither set = /metrics refuses all.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_ALLOWED_NETWORKS = env.list("METRICS_ALLOWED_NETWORKS", default=[])

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django": {"level": "INFO"}, "httpx": {"level": "WARNING"}},
}
