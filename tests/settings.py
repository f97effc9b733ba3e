"""Settings for the pytest process.

Two profiles: ``services`` (default) runs on PostgreSQL and Redis when they
are reachable; ``embedded`` (DISPATCHER_TEST_PROFILE=embedded) runs on SQLite
and the file broker, like a fresh clone. With REQUIRE_SERVICES=1 a missing
service is an error instead of a fallback.
"""

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

BASE = Path(__file__).resolve().parent.parent
PROFILE = os.environ.get("DISPATCHER_TEST_PROFILE", "services")
REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES", "") not in ("", "0")
# DISPATCHER_TEST_VAR lets two test runs on one machine keep apart.
TEST_VAR = Path(os.environ.get("DISPATCHER_TEST_VAR", BASE / "var" / f"test-{PROFILE}"))
os.environ["DISPATCHER_VAR_DIR"] = str(TEST_VAR)


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or default_port), 2).close()
        return True
    except OSError:
        return False


PG_URL = os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
SERVICES: dict[str, bool] = {"postgresql": False, "redis": False}

if PROFILE == "services":
    for name, url, port in (("postgresql", PG_URL, 5432), ("redis", REDIS_URL, 6379)):
        SERVICES[name] = _reachable(url, port)
        if not SERVICES[name] and REQUIRE_SERVICES:
            raise RuntimeError(f"REQUIRE_SERVICES=1 but {name} is not reachable at {url}")
    if SERVICES["postgresql"]:
        os.environ["DATABASE_URL"] = PG_URL
    if SERVICES["redis"]:
        os.environ["CELERY_BROKER_URL"] = REDIS_URL
if "DATABASE_URL" not in os.environ or PROFILE == "embedded":
    os.environ["DATABASE_URL"] = f"sqlite:///{TEST_VAR / 'db.sqlite3'}"
if "CELERY_BROKER_URL" not in os.environ or PROFILE == "embedded":
    os.environ["CELERY_BROKER_URL"] = "filesystem://"

from tests.worker_settings import *  # noqa: E402,F403
from tests.worker_settings import DATABASES  # noqa: E402

if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # A file, not pytest-django's in-memory default: worker processes share it.
    DATABASES["default"]["TEST"] = {"NAME": str(TEST_VAR / "test-db.sqlite3")}

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DISPATCHER_FLUSH_SECONDS = 0.5
