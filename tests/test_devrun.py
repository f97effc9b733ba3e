"""`make run`'s process: web, worker, beat and the SMTP sink, stopped by Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.services import BASE, free_port, wait_for

pytestmark = pytest.mark.e2e


def clean_env(var_dir: Path, smtp_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE"}}
    env.update(DISPATCHER_VAR_DIR=str(var_dir), DISPATCHER_SMTP_PORT=str(smtp_port), PYTHONUNBUFFERED="1")
    return env


def processes_with(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def test_devrun_delivers_to_the_sink_and_ctrl_c_stops_everything(tmp_path):
    var_dir = tmp_path / "var"
    env = clean_env(var_dir, free_port())
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput"], cwd=BASE, env=env, check=True, capture_output=True)
    web_port = free_port()
    log = open(tmp_path / "devrun.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([*manage, "dispatcher_devrun", "--addr", f"127.0.0.1:{web_port}"],
                            cwd=BASE, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        def admin_up() -> bool:
            try:
                url = f"http://127.0.0.1:{web_port}/admin/login/"
                return urllib.request.urlopen(url, timeout=2).status == 200
            except OSError:
                return False

        wait_for(admin_up, 60, 0.5, "the admin to answer")
        wait_for(lambda: " ready." in (tmp_path / "devrun.log").read_text(), 60, 0.5, "the worker")
        subprocess.run(
            [*manage, "shell", "-c",
             "from dispatcher.api import schedule_messages, recipients;"
             "schedule_messages('Hello from make run', recipients('smtp', 'newcomer@example.org'))"],
            cwd=BASE, env=env, check=True, capture_output=True,
        )
        mail_dir = var_dir / "mail"
        mails = wait_for(lambda: list(mail_dir.glob("*.eml")), 60, 0.5, "mail in var/mail/")
        assert b"Hello from make run" in mails[0].read_bytes()
        assert b"To: newcomer@example.org" in mails[0].read_bytes()
        output = (tmp_path / "devrun.log").read_text()
        assert "createsuperuser" in output
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
        log.close()
    assert proc.returncode == 0
    marker = f"DISPATCHER_VAR_DIR={var_dir}\0"
    wait_for(lambda: not processes_with(marker), 20, 0.5, "every process of make run to exit")
