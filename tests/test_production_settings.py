"""Production settings: DEBUG off unless asked for, no public secret key, no
credentials on an error page or in a mailed error report, and a clean
``check --deploy`` on the configuration docs/deployment.md documents."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.core import mail
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import include, path

from tests.services import BASE

BROKER_PASSWORD = "brokerpass-7f3a"
DATABASE_PASSWORD = "dbpass-91c2"
BROKER_URL = f"redis://:{BROKER_PASSWORD}@redis.internal:6379/0"
DATABASE_URL = f"postgres://dispatcher:{DATABASE_PASSWORD}@db.internal:5432/dispatcher"


def boom(request: HttpRequest) -> HttpResponse:
    """A user-triggered server error, with a credential in a local variable
    and in the exception's text, as a failing driver would have."""
    from django.conf import settings

    broker_url = settings.CELERY_BROKER_URL  # noqa: F841 (shown on the debug page)
    where = f"could not reach {BROKER_URL}"
    raise RuntimeError(where)


urlpatterns = [path("boom/", boom), path("", include("config.urls"))]


def run_python(code: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"),
            "DJANGO_SETTINGS_MODULE": "config.settings", "DISPATCHER_VAR_DIR": str(tmp_path / "var")}
    return subprocess.run([sys.executable, "-c", code], cwd=BASE, env={**base, **env},
                          capture_output=True, text=True, timeout=120)


SHOW_SETTINGS = ("import django, json; django.setup(); from django.conf import settings as s;"
                 "print(json.dumps({'DEBUG': s.DEBUG, 'SECRET_KEY': s.SECRET_KEY}))")


def test_debug_is_off_unless_asked_for(tmp_path):
    key = secrets.token_urlsafe(50)
    default = run_python(SHOW_SETTINGS, {"DJANGO_SECRET_KEY": key}, tmp_path)
    assert default.returncode == 0, default.stderr
    assert json.loads(default.stdout.splitlines()[-1]) == {"DEBUG": False, "SECRET_KEY": key}
    asked = run_python(SHOW_SETTINGS, {"DJANGO_SECRET_KEY": key, "DJANGO_DEBUG": "1"}, tmp_path)
    assert json.loads(asked.stdout.splitlines()[-1])["DEBUG"] is True


DEVELOPMENT_KEY = "dev-only-insecure-key-set-DJANGO_SECRET_KEY-in-production"


@pytest.mark.parametrize("env", [{}, {"DJANGO_DEBUG": "0"}, {"DJANGO_SECRET_KEY": ""},
                                 {"DJANGO_SECRET_KEY": DEVELOPMENT_KEY}])
def test_refuses_to_start_without_a_secret_key(env, tmp_path):
    proc = run_python(SHOW_SETTINGS, env, tmp_path)
    assert proc.returncode != 0
    assert "ImproperlyConfigured: DJANGO_SECRET_KEY is not set" in proc.stderr
    assert proc.stdout == ""


def test_development_asks_for_debug_and_gets_the_development_key(tmp_path):
    proc = run_python(SHOW_SETTINGS, {"DJANGO_DEBUG": "1"}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["DEBUG"] is True


def documented_environment() -> dict[str, str]:
    """The environment block of docs/deployment.md, with a real secret key."""
    text = (BASE / "docs" / "deployment.md").read_text()
    block = next(b for b in re.findall(r"```sh\n(.*?)```", text, re.S) if "DJANGO_SECRET_KEY=" in b)
    env = {}
    for line in block.splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name] = value
    assert env["DJANGO_SECRET_KEY"] == "..."
    env["DJANGO_SECRET_KEY"] = secrets.token_urlsafe(50)
    return env


def test_check_deploy_is_clean_on_the_documented_configuration(tmp_path):
    env = documented_environment()
    assert "DJANGO_DEBUG" not in env or env["DJANGO_DEBUG"] == "0"
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"),
            "DJANGO_SETTINGS_MODULE": "config.settings", "DISPATCHER_VAR_DIR": str(tmp_path / "var")}
    proc = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                          cwd=BASE, env={**base, **env}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no issues" in proc.stdout


def assert_no_credentials(text: str) -> None:
    for secret in (BROKER_PASSWORD, DATABASE_PASSWORD):
        assert secret not in text


@pytest.mark.urls("tests.test_production_settings")
def test_debug_error_page_shows_no_credentials(settings, db):
    settings.DEBUG = True
    settings.CELERY_BROKER_URL = BROKER_URL
    settings.DISPATCHER_EXTRA = {"proxy": {"https": f"socks5://u:{BROKER_PASSWORD}@proxy:1080"}}
    client = Client(raise_request_exception=False)
    # Under runserver the process environment is in request.META.
    response = client.get("/boom/", DATABASE_URL=DATABASE_URL, CELERY_BROKER_URL=BROKER_URL)
    assert response.status_code == 500
    page = response.content.decode()
    assert "CELERY_BROKER_URL" in page and "RuntimeError" in page  # the technical page, filtered
    assert_no_credentials(page)


@pytest.mark.urls("tests.test_production_settings")
def test_mailed_error_report_shows_no_credentials(settings, db):
    settings.DEBUG = False
    settings.ADMINS = [("ops", "ops@example.org")]
    settings.CELERY_BROKER_URL = BROKER_URL
    client = Client(raise_request_exception=False)
    response = client.get("/boom/", DATABASE_URL=DATABASE_URL)
    assert response.status_code == 500
    assert BROKER_PASSWORD not in response.content.decode()
    assert len(mail.outbox) == 1
    report = mail.outbox[0]
    assert "RuntimeError" in report.body
    assert_no_credentials(report.subject + report.body)
