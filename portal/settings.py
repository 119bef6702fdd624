"""Gantry settings.

Everything is configured through environment variables read by the small typed
helpers below; a bad value stops start-up with ImproperlyConfigured instead of
surfacing later as a confusing runtime error. Secrets may be given as FOO or as
FOO_FILE (a path whose contents are the secret), so they never need to appear
in a process listing or a compose file.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None:
        raise ImproperlyConfigured(f"Set the {name} environment variable.")
    return value


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false).")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer.") from None


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


def env_positive_int(name: str, default: int) -> int:
    value = env_int(name, default)
    if value <= 0:
        raise ImproperlyConfigured(f"{name}={value} must be a positive number of seconds.")
    return value


def env_issuer_url(name: str) -> str:
    """An OpenID issuer: https, or plain http on this machine only (tests, demos)."""
    value = env_str(name, "").strip()
    if not value:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ImproperlyConfigured(f"{name}={value!r} is not an http(s) URL.")
    if parts.scheme == "http" and parts.hostname not in {"127.0.0.1", "localhost", "::1"}:
        raise ImproperlyConfigured(f"{name}={value!r} must use https (http only on localhost).")
    if parts.query or parts.fragment:
        raise ImproperlyConfigured(f"{name}={value!r} must not have a query or fragment.")
    return value


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env_str(name, default).strip().lower() or default
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r}: use one of {', '.join(choices)}.")
    return value


def env_optional_secret(name: str) -> str:
    """A secret that may be left out: NAME, NAME_FILE, or empty."""
    if os.environ.get(f"{name}_FILE") or os.environ.get(name):
        return env_secret(name)
    return ""


def env_secret(name: str, default: str | None = None) -> str:
    """Read a secret from NAME, or from the file named by NAME_FILE."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={path!r} cannot be read: {exc}") from None
    value = os.environ.get(name, default)
    if not value:
        raise ImproperlyConfigured(f"Set {name} or {name}_FILE.")
    return value


def env_secret_list(name: str) -> list[str]:
    """Secrets from NAME (comma-separated) or NAME_FILE (one per line); may be empty."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={path!r} cannot be read: {exc}") from None
        return [line.strip() for line in lines if line.strip()]
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def env_fernet_keys(name: str) -> list[str]:
    """Fernet keys from NAME or NAME_FILE (comma-separated or one per line),
    each checked here so a typo stops start-up instead of the first decryption."""
    raw = os.environ.get(name, "")
    path = os.environ.get(f"{name}_FILE")
    if path:
        raw = env_secret(name)
    keys = [key.strip() for key in raw.replace("\n", ",").split(",") if key.strip()]
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except ValueError:
            raise ImproperlyConfigured(
                f"{name}: key {position} is not a Fernet key (32 url-safe base64 bytes; "
                "make one with: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())')."
            ) from None
    return keys


DEBUG = env_bool("DEBUG", False)
# Each prepared query (portal/core/prepared.py) also compiled by Django and
# compared, on every call: for the test suite (make test sets it), not for serving.
PREPARED_QUERIES_CHECK = env_bool("PREPARED_QUERIES_CHECK", False)
# HTTPS-only cookies, HSTS and redirects are on unless explicitly turned off for
# a plain-HTTP local demo (make run sets HTTPS=0).
HTTPS = env_bool("HTTPS", True)

SECRET_KEY = env_secret("SECRET_KEY", "dev-only-insecure-key" if DEBUG else None)
# The audit chain's HMAC key. It must not live in the database: whoever can
# write the database must not be able to re-sign an edited chain.
AUDIT_KEY = env_secret("AUDIT_KEY", "dev-only-audit-key" if DEBUG else None).encode()
# The audit writer names this key in its refusal to extend a chain signed with another.
AUDIT_KEY_IS_DEVELOPMENT_KEY = AUDIT_KEY == b"dev-only-audit-key"
# Older signing keys, still accepted (sessions, signed values, and the field
# encryption keys derived from them) while SECRET_KEY is rotated. Comma-separated
# in SECRET_KEY_FALLBACKS, one per line in SECRET_KEY_FALLBACKS_FILE.
SECRET_KEY_FALLBACKS = env_secret_list("SECRET_KEY_FALLBACKS")
# Encrypts webhook URLs, secret variables, IdP tokens and TOTP keys at rest
# (portal/core/crypto.py): comma-separated Fernet keys, the first encrypts and
# all decrypt. Unset: derived from SECRET_KEY and each of SECRET_KEY_FALLBACKS.
FIELD_ENCRYPTION_KEY = env_fernet_keys("FIELD_ENCRYPTION_KEY")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served as our own static files
    "django_rq",
    "django_htmx",
    "channels",
    # Before portal.core: axes's receivers count a failure (and flag a lock-out)
    # before the audit receivers read the request (portal/core/signals.py).
    "axes",
    "django_otp",
    "portal.core",
    "environments",
    "deployments",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "portal.core.middleware.RequestContextMiddleware",
    # An id in an API path beyond bigint is a 400 naming it, not a database error.
    "portal.api_errors.PathIdRangeMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Sessions opened through SSO are re-checked with the IdP (portal/sso.py).
    "portal.sso.SsoRecheckMiddleware",
    # Turns a locked-out sign-in into the 429 page or JSON (portal.views.locked_out).
    "axes.middleware.AxesMiddleware",
    # Last: a view that needed Redis while it was down, or found no database
    # connection in time, answers 503, not 500.
    "portal.core.middleware.UnavailableMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"
ASGI_APPLICATION = "portal.asgi.application"

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
            ],
            "builtins": ["portal.core.templatetags.local_time"],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'var' / 'gantry.sqlite3'}"),
        conn_max_age=env_int("DB_CONN_MAX_AGE", 0),
        # A kept connection, pooled or persistent, is checked (one round
        # trip) before it is reused: after a database restart the first
        # request or job would otherwise fail on the dead one.
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Connections come from a pool per process (psycopg_pool, through
    # Django). The web serves through ASGI, where every request runs in a
    # thread of its own: a connection kept per thread (DB_CONN_MAX_AGE) is
    # never reused and stays open until collected, and 130 requests in a row
    # left PostgreSQL out of connections. A pooled one goes back at the end
    # of each request, job or thread, and the next takes it, open and with
    # its prepared statements. DB_POOL_MAX_SIZE=0 turns the pool off (a WSGI
    # server, or a pooler of one's own); DB_CONN_MAX_AGE then applies.
    _pool_max = env_int("DB_POOL_MAX_SIZE", 20)
    _pool_min = env_int("DB_POOL_MIN_SIZE", 2)
    if _pool_max < 0 or (_pool_max and not 0 <= _pool_min <= _pool_max):
        raise ImproperlyConfigured(
            f"DB_POOL_MIN_SIZE={_pool_min} and DB_POOL_MAX_SIZE={_pool_max}: the sizes "
            "must be 0 or more, the minimum no larger than the maximum."
        )
    _pool_timeout = env_positive_int("DB_POOL_TIMEOUT", 10)
    if _pool_max:
        if DATABASES["default"]["CONN_MAX_AGE"]:
            raise ImproperlyConfigured(
                f"DB_CONN_MAX_AGE={DATABASES['default']['CONN_MAX_AGE']} keeps a connection per "
                "thread, which ASGI requests never reuse; connections come from the pool "
                f"(DB_POOL_MAX_SIZE={_pool_max}). Unset DB_CONN_MAX_AGE, or set "
                "DB_POOL_MAX_SIZE=0 to use it instead of the pool."
            )
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "name": "gantry",
            "min_size": _pool_min,
            "max_size": _pool_max,
            # A request waits this long for a free connection, then fails
            # (the database is "unavailable" for it) instead of queueing forever.
            "timeout": _pool_timeout,
            # The pool retries a connection it could not open with a doubling
            # delay (1, 2, 4 s, ...); after a long outage the next try could
            # come minutes after the database is back. Giving up as soon as a
            # request would have lets the next request start afresh at once.
            "reconnect_timeout": _pool_timeout,
        }
    # Bind parameters on the server so that a query run DB_PREPARE_THRESHOLD
    # times on one connection is prepared: PostgreSQL then plans it once, not
    # on every page load. Planning the deployment page's 9-join query took
    # longer than running it (3–6 ms against 0.4). Pays off with pooled or
    # persistent connections; "none" turns it off, as a pooler in
    # transaction mode without prepared-statement support needs.
    if env_str("DB_PREPARE_THRESHOLD", "5").strip().lower() != "none":
        _threshold = env_int("DB_PREPARE_THRESHOLD", 5)
        if _threshold < 0:
            raise ImproperlyConfigured(
                f"DB_PREPARE_THRESHOLD={_threshold} must be 0 or more, or none."
            )
        DATABASES["default"].setdefault("OPTIONS", {}).update(
            server_side_binding=True, prepare_threshold=_threshold
        )
elif DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web server read while a worker writes; IMMEDIATE takes the
    # write lock at BEGIN so the audit chain's read-then-append never deadlocks.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": (
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=10000;"
        ),
        "transaction_mode": "IMMEDIATE",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env_str("CACHE_PREFIX", "gantry"),
    }
}
# How long a built dashboard card is kept (portal/card_cache.py). Every change
# replaces it at once, so this only frees memory; 0 builds every card on every load.
DASHBOARD_CARD_SECONDS = env_int("DASHBOARD_CARD_SECONDS", 24 * 3600)
# What environments/live.py calls to build a changed environment's card: the
# dashboard sits above the catalog, so the catalog is told its name.
DASHBOARD_CARD_BUILDER = "portal.card_cache.rebuild"

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        # No socket timeout: redis-py 8 defaults to 5 s, which would drop a
        # log viewer after 5 quiet seconds (channels_redis#422).
        "CONFIG": {
            "hosts": [{"address": REDIS_URL, "socket_timeout": None}],
            "prefix": env_str("CHANNEL_PREFIX", "gantry"),
        },
    },
    # Live logs and dashboards: one PUBLISH per log batch or environment
    # change, fanned out inside each ASGI process to every socket watching it
    # (the default layer writes and pops one message per member; see
    # docs/PERFORMANCE.md). Delivery is at most once: log viewers fill a gap
    # from the database, dashboards re-fetch the card. Pub/sub ignores the
    # database number, so the prefix carries it to keep Redis users apart.
    "broadcast": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {
            "hosts": [{"address": REDIS_URL, "socket_timeout": None}],
            # The URL's last part: the database number (or host:port without one).
            "prefix": env_str("CHANNEL_PREFIX", "gantry")
            + "-db-"
            + REDIS_URL.partition("?")[0].rpartition("/")[2],
        },
    },
}

RQ_QUEUES = {
    name: {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 3600} for name in ("high", "default", "low")
}
# Jobs are enqueued only after the surrounding transaction commits, so a
# worker never loads a row that is not there yet.
# Jobs run in the worker process (no fork per job): see deployments/worker.py.
RQ = {"COMMIT_MODE": "on_db_commit", "WORKER_CLASS": "deployments.worker.DeployWorker"}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

# Sign-in throttling (django-axes, portal/core/throttle.py) on every sign-in path:
# this many failures per user name or per client address lock it for the window,
# counted again from each refused attempt. Counters live in the Redis cache.
LOGIN_MAX_FAILURES = env_positive_int("LOGIN_MAX_FAILURES", 5)
LOGIN_FAILURE_WINDOW = env_positive_int("LOGIN_FAILURE_WINDOW", 15 * 60)
AXES_ENABLED = True
AXES_HANDLER = "axes.handlers.cache.AxesCacheHandler"
AXES_CACHE = "default"
AXES_FAILURE_LIMIT = LOGIN_MAX_FAILURES
AXES_COOLOFF_TIME = timedelta(seconds=LOGIN_FAILURE_WINDOW)
AXES_LOCKOUT_PARAMETERS = "portal.core.throttle.lockout_parameters"
AXES_USERNAME_CALLABLE = "portal.core.throttle.username_of"
AXES_CLIENT_IP_CALLABLE = "portal.core.middleware.client_ip"
AXES_LOCKOUT_CALLABLE = "portal.views.locked_out"
AXES_RESET_ON_SUCCESS = True
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = True
AXES_ENABLE_ADMIN = False  # the counters are in Redis, not in axes's tables
AXES_VERBOSE = False

# Single sign-on through OpenID Connect (portal/sso.py): on when OIDC_ISSUER is
# set. Endpoints come from the issuer's discovery document.
OIDC_ISSUER = env_issuer_url("OIDC_ISSUER")
OIDC_CLIENT_ID = env_str("OIDC_CLIENT_ID") if OIDC_ISSUER else ""
OIDC_CLIENT_SECRET = env_secret("OIDC_CLIENT_SECRET") if OIDC_ISSUER else ""
OIDC_SCOPES = env_str("OIDC_SCOPES", "openid email profile")
if "openid" not in OIDC_SCOPES.split():
    raise ImproperlyConfigured(f"OIDC_SCOPES={OIDC_SCOPES!r} must include openid.")
# The claim (ID token or userinfo) listing the user's groups; a dotted path
# such as realm_access.roles reaches into an object.
OIDC_GROUPS_CLAIM = env_str("OIDC_GROUPS_CLAIM", "groups").strip()
if not OIDC_GROUPS_CLAIM:
    raise ImproperlyConfigured("OIDC_GROUPS_CLAIM must name a claim (default: groups).")
# How often a signed-in user (or their API token) is confirmed with the IdP.
OIDC_RECHECK_SECONDS = env_positive_int("OIDC_RECHECK_SECONDS", 900)
OIDC_TIMEOUT = env_positive_int("OIDC_TIMEOUT", 5)
# What an ID token must say for Gantry to count the sign-in as MFA (an
# environment's fresh-MFA rule for approvers): one of these `amr` values
# (RFC 8176) or one of these `acr` values. OIDC_STEP_UP_ACR, when set, is sent
# as acr_values when an approver is sent back to the provider to step up.
OIDC_MFA_AMR = env_list("OIDC_MFA_AMR", "mfa,otp,hwk,swk,sms,sc,fpt,face")
OIDC_MFA_ACR = env_list("OIDC_MFA_ACR", "")
OIDC_STEP_UP_ACR = env_str("OIDC_STEP_UP_ACR", "").strip()
# LOCAL_LOGIN=0: passwords only for superusers (the break-glass administrator).
LOCAL_LOGIN = env_bool("LOCAL_LOGIN", True)
if not LOCAL_LOGIN and not OIDC_ISSUER:
    raise ImproperlyConfigured("LOCAL_LOGIN=0 needs OIDC_ISSUER: only superusers could sign in.")
AUTHENTICATION_BACKENDS = [
    # First: refuses every attempt while the user name or address is locked out.
    "portal.core.backends.ThrottleBackend",
    "portal.core.backends.PasswordBackend",
    "portal.core.backends.SsoBackend",
]

# Django's database sessions, the row read by a prepared query (portal/core/sessions.py).
SESSION_ENGINE = "portal.core.sessions"
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 8 * 3600)
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_SSL_REDIRECT = HTTPS
SECURE_HSTS_SECONDS = 31536000 if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_HSTS_PRELOAD = HTTPS
BEHIND_PROXY = env_bool("BEHIND_PROXY", False)
if BEHIND_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# How many reverse proxies in front of Gantry append to X-Forwarded-For: the
# client's address is that many entries from the right (portal.core.middleware.
# client_ip); 0 takes the socket's peer. One with BEHIND_PROXY=1 unless set.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 1 if BEHIND_PROXY else 0)
if TRUSTED_PROXY_COUNT < 0:
    raise ImproperlyConfigured(f"TRUSTED_PROXY_COUNT={TRUSTED_PROXY_COUNT} must be 0 or more.")
# Health probes and Prometheus' scrapes come over plain HTTP from inside the cluster.
SECURE_REDIRECT_EXEMPT = [r"^health/", r"^metrics$"]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    "portal.staticfiles.PlotlyFinder",  # vendor/plotly.min.js from the plotly package
]
STATIC_ROOT = BASE_DIR / "var" / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG

EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "gantry@localhost")
# Where deployments keep their working files (saved Terraform plans, checkouts);
# the plan and the run job must both see it (a shared volume with several workers).
DEPLOY_WORKDIR = env_str("DEPLOY_WORKDIR", str(BASE_DIR / "var" / "deployments"))
PORTAL_URL = env_str("PORTAL_URL", "http://127.0.0.1:8000")
WEBHOOK_TIMEOUT = env_int("WEBHOOK_TIMEOUT", 5)
# The cost-allocation tag whose values name environments in Cost Explorer.
COST_TAG_KEY = env_str("COST_TAG_KEY", "Environment")
# An emergency change (break-glass, policy override) is reviewed within this many hours.
EMERGENCY_REVIEW_HOURS = env_int("EMERGENCY_REVIEW_HOURS", 48)
# How often the scheduler compares what runs with what was deployed (deployments/drift.py).
DRIFT_CHECK_SECONDS = env_int("DRIFT_CHECK_SECONDS", 300)
# The Rego policies every Terraform plan is checked against (docs/POLICIES.md).
POLICY_DIR = Path(env_str("POLICY_DIR", str(BASE_DIR / "policies")))

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "portal.sso.SsoCheckedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "portal.core.api_params.CappedLimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # JSON in, JSON out: a form-encoded body would turn every value into a string.
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "portal.api_errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Gantry API",
    "DESCRIPTION": "Releases, deployments, approvals and the audit trail.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # /api/v1/docs/ loads Swagger UI from the portal's static files, never a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "displayRequestDuration": True},
    # Every error an operation can answer, with its JSON body (portal/api_schema.py).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "portal.api_schema.document_errors",
    ],
}

CSRF_FAILURE_VIEW = "portal.views.csrf_failure"  # JSON under /api/

# Logs: every record carries the request id; LOG_FORMAT=json writes one JSON
# object per line for a log pipeline. Refused requests (403/404) are one line.
LOG_FORMAT = env_choice("LOG_FORMAT", "plain", ("plain", "json"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "portal.core.observability.RequestIdFilter"},
        "expected_client_errors": {"()": "portal.core.observability.ExpectedClientErrors"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {"()": "portal.core.observability.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "django.request": {"filters": ["expected_client_errors"]},
        # axes logs every sign-in at INFO; the audit trail already has them.
        "axes": {"level": "WARNING"},
    },
}

# /metrics (Prometheus): readable with this bearer token, or an admin's API token.
METRICS_TOKEN = env_optional_secret("METRICS_TOKEN")

# Error reports to Sentry, only when a DSN is given; scrubbed of secrets
# before they leave (portal/core/observability.py).
SENTRY_DSN = env_optional_secret("SENTRY_DSN")
SENTRY_ENVIRONMENT = env_str("SENTRY_ENVIRONMENT", "")
SENTRY_RELEASE = env_str("SENTRY_RELEASE", "")
if SENTRY_DSN:
    from portal.core.observability import init_sentry

    init_sentry(SENTRY_DSN, SENTRY_ENVIRONMENT, SENTRY_RELEASE)
