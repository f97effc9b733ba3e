"""Real processes and servers for the tests: Celery workers and SMTP servers."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection

from dispatcher.smtp_sink import SinkHandler

BASE = Path(__file__).resolve().parent.parent


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports: all held at once while chosen, so no
    two of them can be the same."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def wait_for(predicate: Callable[[], Any], timeout: float = 60, interval: float = 0.1, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


class SMTPServer:
    """A real aiosmtpd server on loopback that keeps what it receives."""

    def __init__(self, handler: Any = None, port: int | None = None, **controller_kwargs: Any):
        self.port = port or free_port()
        self.handler = handler or SinkHandler()
        from aiosmtpd.controller import Controller

        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, **controller_kwargs)
        self.controller.start()

    @classmethod
    def on_port(cls, port: int, handler: Any = None) -> SMTPServer:
        return cls(handler, port=port)

    @property
    def messages(self) -> list:
        return self.handler.messages

    def stop(self) -> None:
        self.controller.stop()


def worker_env(smtp_port: int | None = None, **extra: str) -> dict[str, str]:
    """The environment a worker process needs to share this test's database and broker."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        database_url = f"sqlite:///{db['NAME']}"
    else:
        database_url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.worker_settings",
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "DISPATCHER_VAR_DIR": str(settings.VAR_DIR),
        "DISPATCHER_FLUSH_SECONDS": "0.5",
        "PYTHONUNBUFFERED": "1",
    }
    if smtp_port:
        env["DISPATCHER_SMTP_PORT"] = str(smtp_port)
    env.update(extra)
    return env


class Worker:
    """A real ``celery -A config worker`` process."""

    def __init__(self, name: str, env: dict[str, str], concurrency: int = 2,
                 queues: str | None = None, log_dir: Path | None = None, extra_args: tuple[str, ...] = ()):
        log_dir = log_dir or settings.VAR_DIR / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"worker-{name}-{os.getpid()}-{time.monotonic_ns()}.log"
        cmd = [sys.executable, "-m", "celery", "-A", "config", "worker", "-l", "info",
               "-c", str(concurrency), "-n", f"{name}@%h", "--without-mingle", "--without-gossip"]
        if queues:
            cmd += ["-Q", queues]
        cmd += list(extra_args)
        self.log = open(self.log_path, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, cwd=BASE, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(self._ready, 60, 0.2, f"worker {name} to start (log: {self.log_path})")
        except BaseException:
            self.kill()  # never leave a half-started worker behind
            raise

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
        return " ready." in self.output()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool children)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.log.close()

    def stop(self, timeout: float = 20) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()


def purge_broker() -> None:
    url = settings.CELERY_BROKER_URL
    if url.startswith("redis://"):
        import redis

        redis.Redis.from_url(url).flushdb()
    elif url.startswith("filesystem://"):
        folder = Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
