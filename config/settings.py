"""Django settings, read from the environment (12-factor).

With no environment at all the project runs on embedded defaults: SQLite and a
file-based Celery broker under ``var/``, and mail going to a local SMTP sink.
"""

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from . import messenger_settings
from .env import env_bool, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("DISPATCHER_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

# Off unless asked for: a debug page shows settings, the environment and local
# variables to whoever triggers an error. `make run` asks for it.
DEBUG = env_bool("DJANGO_DEBUG", False)
#: Public (it is in this file), so only for development: it signs the
#: unsubscribe and read links, and anyone who knows it can forge them.
DEVELOPMENT_SECRET_KEY = "dev-only-insecure-key-set-DJANGO_SECRET_KEY-in-production"
SECRET_KEY = env_str("DJANGO_SECRET_KEY", "")
if SECRET_KEY in ("", DEVELOPMENT_SECRET_KEY):
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set. It signs sessions and the unsubscribe and read links "
            "in messages, so it must be secret: set it to a long random value, the same on every "
            "host (python -c \"import secrets; print(secrets.token_urlsafe(50))\"). For "
            "development only, DJANGO_DEBUG=1 runs with a public key (make run does this)."
        )
    SECRET_KEY = DEVELOPMENT_SECRET_KEY
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])
ADMINS = [
    (addr.split("@")[0], addr) for addr in env_list("DJANGO_ADMINS", [])
]
SERVER_EMAIL = env_str("DJANGO_SERVER_EMAIL", "dispatcher@localhost")
DEFAULT_FROM_EMAIL = env_str("DISPATCHER_FROM_EMAIL", "dispatcher@localhost")
SITE_URL = env_str("DISPATCHER_SITE_URL", "http://127.0.0.1:8000")
#: "plain", or "json": one JSON object per line, with dispatch_id, messenger,
#: attempt and outcome on delivery lines (dispatcher.logging.JsonFormatter).
DISPATCHER_LOG_FORMAT = env_str("DISPATCHER_LOG_FORMAT", "plain")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "dispatcher",
    "dispatcher.inbox",
    "dispatcher.feed",
]
#: The docs' example app (example/: message types, a messenger, models), so the
#: README's examples run as written. On in development (make run sets
#: DJANGO_DEBUG=1), off in production; DISPATCHER_EXAMPLE_APP=0/1 decides otherwise.
DISPATCHER_EXAMPLE_APP = env_bool("DISPATCHER_EXAMPLE_APP", DEBUG)
if DISPATCHER_EXAMPLE_APP:
    INSTALLED_APPS.append("example")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# --- HTTPS (TLS at the reverse proxy) ----------------------------------------------
# On by default whenever DEBUG is off: secure cookies, HSTS and a redirect to
# https. DJANGO_HTTPS=0 turns them off for a site served over plain HTTP.
HTTPS = env_bool("DJANGO_HTTPS", not DEBUG)
SECURE_SSL_REDIRECT = HTTPS
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 60 * 60 * 24 * 365 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", HTTPS)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_HSTS_PRELOAD", HTTPS)
if env_bool("DJANGO_TRUST_X_FORWARDED_PROTO", False):
    # Only behind a proxy that sets (and overwrites) this header: a client
    # could otherwise claim https itself.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Error pages (DEBUG) and the error reports mailed to ADMINS hide settings,
# environment variables and local variables that may hold credentials: any
# *_URL (the broker's and the database's carry passwords), keys, tokens.
DEFAULT_EXCEPTION_REPORTER_FILTER = "dispatcher.error_reports.CredentialsHidingFilter"
DEFAULT_EXCEPTION_REPORTER = "dispatcher.error_reports.CredentialsHidingReporter"

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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
                "dispatcher.inbox.context_processors.inbox",
                "dispatcher.feed.context_processors.feed",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat write at once: WAL lets readers run beside the
    # writer, IMMEDIATE takes the write lock up front (no upgrade deadlock) and
    # the timeout makes a busy writer wait instead of failing "database is locked".
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

# --- Mail (Django's own mail, e.g. reports to ADMINS) ----------------------------
EMAIL_HOST = env_str("DISPATCHER_SMTP_HOST", "127.0.0.1")
EMAIL_PORT = env_int("DISPATCHER_SMTP_PORT", 1025)
EMAIL_HOST_USER = env_str("DISPATCHER_SMTP_USER", "")
EMAIL_HOST_PASSWORD = env_str("DISPATCHER_SMTP_PASSWORD", "")
EMAIL_USE_TLS = env_bool("DISPATCHER_SMTP_USE_TLS", False)
EMAIL_USE_SSL = env_bool("DISPATCHER_SMTP_USE_SSL", False)
EMAIL_TIMEOUT = env_int("DISPATCHER_SMTP_TIMEOUT", 30)

# --- Messengers -----------------------------------------------------------------
# alias -> {"class": dotted path, "options": keyword arguments}. Secrets come
# from the environment; apps may also register messengers in code (see README).
DISPATCHER_MESSENGERS: dict[str, dict] = {
    "smtp": {
        "class": "messengers.smtp.SMTPMessenger",
        "options": {
            "from_email": DEFAULT_FROM_EMAIL,
            "login": EMAIL_HOST_USER or None,
            "password": EMAIL_HOST_PASSWORD or None,
            "host": EMAIL_HOST,
            "port": EMAIL_PORT,
            "use_tls": EMAIL_USE_TLS,
            "use_ssl": EMAIL_USE_SSL,
            "timeout": EMAIL_TIMEOUT,
        },
    },
}

DISPATCHER_MESSENGERS.update(messenger_settings.from_environment())

# --- Delivery engine --------------------------------------------------------------
DISPATCHER_BATCH_SIZE = env_int("DISPATCHER_BATCH_SIZE", 500)
# A running batch gives way to more urgent tasks of its messenger (dispatcher/preemption.py).
DISPATCHER_PREEMPT_INTERVAL = env_float("DISPATCHER_PREEMPT_INTERVAL", 0.1)
DISPATCHER_PREEMPT_CHUNK = env_int("DISPATCHER_PREEMPT_CHUNK", 20)
DISPATCHER_MIN_BATCH_SIZE = env_int("DISPATCHER_MIN_BATCH_SIZE", 20)
DISPATCHER_FANOUT_TASKS = env_int("DISPATCHER_FANOUT_TASKS", 64)
DISPATCHER_LEASE_SECONDS = env_int("DISPATCHER_LEASE_SECONDS", 300)
# False for a site without Celery: nothing is published, and cron runs
# `manage.py dispatcher_send_scheduled` to deliver in process.
DISPATCHER_PUBLISH_TASKS = env_bool("DISPATCHER_PUBLISH_TASKS", True)
# A deliver task that cannot reach the database retries every few seconds
# (at most DISPATCHER_DB_RETRY_MAX apart) for DISPATCHER_DB_RETRY_FOR seconds.
DISPATCHER_DB_RETRY_MAX = env_float("DISPATCHER_DB_RETRY_MAX", 2.0)
DISPATCHER_DB_RETRY_FOR = env_float("DISPATCHER_DB_RETRY_FOR", 600.0)
DISPATCHER_FLUSH_EVERY = env_int("DISPATCHER_FLUSH_EVERY", 20)
# The claim and the outcome writes as prepared statements (planned once per
# connection); off behind PgBouncer's transaction pooling before PgBouncer 1.21.
DISPATCHER_PREPARED_STATEMENTS = env_bool("DISPATCHER_PREPARED_STATEMENTS", True)
DISPATCHER_FLUSH_SECONDS = env_float("DISPATCHER_FLUSH_SECONDS", 2.0)
DISPATCHER_REQUEUE_AFTER = env_int("DISPATCHER_REQUEUE_AFTER", 300)
DISPATCHER_RETRY_LIMIT = env_int("DISPATCHER_RETRY_LIMIT", 8)
DISPATCHER_RETRY_BASE = env_float("DISPATCHER_RETRY_BASE", 30.0)
DISPATCHER_RETRY_MAX = env_float("DISPATCHER_RETRY_MAX", 3600.0)
DISPATCHER_CLEANUP_DAYS = env_int("DISPATCHER_CLEANUP_DAYS", 30)
DISPATCHER_SWEEP_INTERVAL = env_int("DISPATCHER_SWEEP_INTERVAL", 30)

# --- Flow control (dispatcher.limiter; per messenger in DISPATCHER_MESSENGERS[alias]) ------
# Where the shared limits, pauses and circuits live: a redis:// URL, or "database".
# Empty: the broker when it is Redis, else the database (the embedded profile).
DISPATCHER_RATE_LIMIT_URL = env_str("DISPATCHER_RATE_LIMIT_URL", "")
# A send waits at most this long (seconds) for its slot under a rate limit; a
# later slot postpones the dispatch (next_attempt_at) instead, with no attempt counted.
DISPATCHER_FLOW_HORIZON = env_float("DISPATCHER_FLOW_HORIZON", 1.0)
# Seconds one lane of a batch may spend in all waiting for slots; then the rest
# of the batch is postponed, so a worker never holds a batch just to sleep.
DISPATCHER_FLOW_BATCH_WAIT = env_float("DISPATCHER_FLOW_BATCH_WAIT", 5.0)
# Postponed dispatches due within this many seconds are published again with a
# countdown; later ones are left to the requeue sweep (retries are rows).
DISPATCHER_POSTPONE_COUNTDOWN_MAX = env_float("DISPATCHER_POSTPONE_COUNTDOWN_MAX", 60.0)
# How long a RateLimited error without retry_after pauses its messenger (seconds).
DISPATCHER_PAUSE_DEFAULT = env_float("DISPATCHER_PAUSE_DEFAULT", 5.0)
# Circuit breaker default for every messenger: open after this many consecutive
# temporary failures (0: off unless a messenger sets circuit_failures), for a cool-down.
DISPATCHER_CIRCUIT_FAILURES = env_int("DISPATCHER_CIRCUIT_FAILURES", 0)
DISPATCHER_CIRCUIT_COOLDOWN = env_float("DISPATCHER_CIRCUIT_COOLDOWN", 30.0)

# --- Celery -----------------------------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        # The file broker polls its folder: 0.2 s keeps latency low at little cost.
        "polling_interval": 0.2,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # Redis redelivers an unacknowledged task after this long. Retries are
        # rows in the database, never long ETAs held by the broker, so this only
        # has to exceed the longest batch (see CELERY_TASK_TIME_LIMIT).
        "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600),
    }
    # A worker takes a task only when one of its processes is free, so an urgent
    # message published behind a backlog is the next task taken, not the one
    # after the batches a prefetch buffer already holds (Celery >= 5.5, Redis only).
    CELERY_WORKER_DISABLE_PREFETCH = env_bool("CELERY_WORKER_DISABLE_PREFETCH", True)
    if CELERY_BROKER_URL.startswith(("amqp", "pyamqp")):
        # Messages with a higher priority are served first (dispatcher.queues.broker_priority).
        # Queues declared before this setting must be deleted once to take it.
        CELERY_TASK_QUEUE_MAX_PRIORITY = 10
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 600)
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 540)
# Only a cold shutdown (SIGQUIT, or a second SIGTERM) uses this: after it,
# running batches get this many seconds before the worker exits. A warm
# shutdown (SIGTERM) always waits for running batches (docs/deployment.md).
CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT = env_float("CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT", 30.0)
# A batch keeps running when the broker connection drops: cancelling it would
# redeliver its task and resend what it already sent. Celery 6 changes the
# default to True, so it is set here, not left to the default.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_WORKER_ENABLE_SOFT_SHUTDOWN_ON_IDLE = True
CELERY_WORKER_SEND_TASK_EVENTS = True
# Not task-sent events: they double the broker writes of a fan-out, and Flower
# has the received/started/succeeded events from the workers.
CELERY_TASK_SEND_SENT_EVENT = False
CELERY_TASK_DEFAULT_QUEUE = "dispatcher"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A worker otherwise replaces the root handlers with its own plain ones.
CELERY_WORKER_HIJACK_ROOT_LOGGER = DISPATCHER_LOG_FORMAT != "json"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = TIME_ZONE

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "dispatcher.logging.JsonFormatter"},
    },
    # Every record that reaches the console, Django's own included (a 500's
    # traceback may quote a URL with its password), is masked first.
    "filters": {"redact": {"()": "messengers.redact.RedactingFilter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if DISPATCHER_LOG_FORMAT == "json" else "plain",
            "filters": ["redact"],
        }
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "dispatcher": {"level": env_str("DISPATCHER_LOG_LEVEL", "INFO")},
        "messengers": {"level": env_str("DISPATCHER_LOG_LEVEL", "INFO")},
    },
}

# --- Subscriptions and links -------------------------------------------------------
#: Seconds a signed unsubscribe / mark-read link stays valid.
DISPATCHER_LINK_MAX_AGE = env_int("DISPATCHER_LINK_MAX_AGE", 60 * 60 * 24 * 60)
#: Models whose create/edit/delete events users may subscribe to ("app_label.model").
#: Signals are connected for these models only. Apps may add more with
#: dispatcher.model_events.watch_model(Model) in their AppConfig.ready().
DISPATCHER_WATCHED_MODELS: list[str] = env_list("DISPATCHER_WATCHED_MODELS", [])
# The demo site's login page (config/urls.py), for every user; the admin keeps its own.
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

# Fallback chains, delivery receipts and SMTP bounces (docs/beyond.md).
DISPATCHER_FALLBACK_CHANNELS: list[str] = env_list("DISPATCHER_FALLBACK_CHANNELS", [])
DISPATCHER_BOUNCE_MAILBOX = env_str("DISPATCHER_BOUNCE_MAILBOX", "")
DISPATCHER_POSTMARK_WEBHOOK = {
    key: value for key, value in (
        ("username", env_str("DISPATCHER_POSTMARK_WEBHOOK_USER", "")),
        ("password", env_str("DISPATCHER_POSTMARK_WEBHOOK_PASSWORD", "")),
        ("token", env_str("DISPATCHER_POSTMARK_WEBHOOK_TOKEN", "")),
    ) if value
}
