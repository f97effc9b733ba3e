from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime

import pytest
from django.utils import timezone

from dispatcher.api import recipients, schedule_messages
from dispatcher.delivery import deliver_batch
from dispatcher.models import Dispatch, DispatchError
from messengers import redact
from tests.fakes.server import FakeServer


@pytest.fixture(autouse=True)
def _forget_secrets() -> Iterator[None]:
    """Secrets registered by a test (short ones like 'token' too) are forgotten after it,
    so they do not mask words in the next test's error texts."""
    saved = set(redact._secrets)
    yield
    redact._secrets.clear()
    redact._secrets.update(saved)


@pytest.fixture
def serve() -> Iterator[Callable[..., FakeServer]]:
    """Start fake provider servers on loopback: ``serve(app)``; all stop after the test."""
    servers: list[FakeServer] = []

    def start(app, tls=None) -> FakeServer:
        server = FakeServer(app, tls)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def deliver(alias: str, message, addresses) -> list[Dispatch]:
    """Schedule through the public API and run the real engine in process; fresh rows back."""
    [(_, dispatches)] = schedule_messages(message, recipients(alias, addresses))
    deliver_batch(alias, [d.pk for d in dispatches])
    return list(Dispatch.objects.filter(pk__in=[d.pk for d in dispatches]).order_by("id"))


def errors(dispatch: Dispatch) -> list[DispatchError]:
    return list(dispatch.errors.order_by("id"))


def delay(dispatch: Dispatch, since: datetime | None = None) -> float:
    """Seconds from now (or ``since``) to the dispatch's next attempt."""
    return (dispatch.next_attempt_at - (since or timezone.now())).total_seconds()
