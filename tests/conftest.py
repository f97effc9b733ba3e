from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.conf import settings

from dispatcher import limiter, registry
from dispatcher.pytest_plugin import notifications  # noqa: F401  (a site gets it through the pytest11 entry point)
from dispatcher.registry import register_messenger_objects
from messengers.smtp import SMTPMessenger
from tests.services import SMTPServer, Worker, purge_broker, worker_env


def pytest_report_header(config):
    return (
        f"dispatcher test profile: {settings.PROFILE}; database: "
        f"{settings.DATABASES['default']['ENGINE']}; broker: {settings.CELERY_BROKER_URL}"
    )


@pytest.fixture(autouse=True)
def _restore_registries() -> Iterator[None]:
    """Messengers and message types registered by a test are gone after it."""
    messengers = dict(registry._messengers)
    message_types = dict(registry._message_types)
    yield
    registry._messengers.clear()
    registry._messengers.update(messengers)
    registry._message_types.clear()
    registry._message_types.update(message_types)


@pytest.fixture(autouse=True)
def _fresh_flow_state() -> Iterator[None]:
    """Pauses, circuits and rate budgets a test left in Redis do not reach the
    next test (on the database they go with the test's transaction)."""
    yield
    url = limiter.backend_url()
    if url.startswith("redis://"):
        import redis

        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match="dispatcher:flow:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def smtp_server() -> Iterator[SMTPServer]:
    """A real aiosmtpd server; the ``smtp`` messenger points to it for the test."""
    server = SMTPServer()
    register_messenger_objects(SMTPMessenger("noreply@example.org", host="127.0.0.1", port=server.port))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sink() -> Iterator[SMTPServer]:
    """A real aiosmtpd server for worker processes (point them at ``sink.port``)."""
    server = SMTPServer()
    yield server
    server.stop()


@pytest.fixture
def workers(transactional_db) -> Iterator:
    """Start real Celery worker processes: ``workers(smtp_port=..., concurrency=...)``."""
    started: list[Worker] = []
    purge_broker()

    def start(name: str = "w", smtp_port: int | None = None, concurrency: int = 2,
              queues: str | None = None, **env: str) -> Worker:
        worker = Worker(name, worker_env(smtp_port, **env), concurrency, queues)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
    purge_broker()
