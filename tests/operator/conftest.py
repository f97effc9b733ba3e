"""Fixtures of the operator tests: staff users, a little traffic, a clean broker."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from dispatcher.api import recipients, schedule_messages
from dispatcher.delivery import deliver_batch
from dispatcher.models import Dispatch, Message
from tests.services import purge_broker

PASSWORD = "operator-pw-1"


@pytest.fixture
def users(django_user_model):
    """``admin`` (superuser), ``viewer`` (staff, may only view dispatches), ``user`` (not staff)."""
    admin = django_user_model.objects.create_superuser("admin", "admin@example.org", PASSWORD)
    viewer = django_user_model.objects.create_user("viewer", "viewer@example.org", PASSWORD, is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_dispatch"))
    user = django_user_model.objects.create_user("user", "user@example.org", PASSWORD)
    return SimpleNamespace(admin=admin, viewer=viewer, user=user)


@pytest.fixture
def staff_client(client, users):
    client.force_login(users.admin)
    return client


@pytest.fixture
def clean_broker() -> Iterator[None]:
    """An empty broker before and after: tests that publish do not leak tasks."""
    purge_broker()
    yield
    purge_broker()


def make_traffic() -> SimpleNamespace:
    """Real deliveries through the scripted ``flaky`` messenger, spread over the last minutes.

    flaky: 3 sent (2 at now-2min, 1 at now-10min, each 60 s after its message
    was created), 1 error (temp), 1 failed (perm); smtp: 2 pending and due
    since 5 minutes, 1 pending scheduled for tomorrow.
    """
    [(message, dispatches)] = schedule_messages(
        "hello", recipients("flaky", ["ok/1", "ok/2", "ok/3", "temp/4", "perm/5"])
    )
    deliver_batch("flaky", [d.pk for d in dispatches])
    by_address = {d.address: Dispatch.objects.get(pk=d.pk) for d in dispatches}
    now = timezone.now()
    Message.objects.filter(pk=message.pk).update(created=now - timedelta(minutes=11))
    for address, minutes_ago in (("ok/1", 2), ("ok/2", 2), ("ok/3", 10)):
        Dispatch.objects.filter(pk=by_address[address].pk).update(
            dispatched_at=now - timedelta(minutes=minutes_ago)
        )
    # Make the latency of every sent dispatch exactly 60 s: give each its own message.
    for address in ("ok/1", "ok/2", "ok/3"):
        dispatch = Dispatch.objects.get(pk=by_address[address].pk)
        own = Message.objects.create(message_type="plain", context={"text": "hello"},
                                     created=dispatch.dispatched_at - timedelta(seconds=60))
        Dispatch.objects.filter(pk=dispatch.pk).update(message=own)
    [(_, waiting)] = schedule_messages("later", recipients("smtp", ["a@example.org", "b@example.org"]))
    Dispatch.objects.filter(pk__in=[d.pk for d in waiting]).update(
        next_attempt_at=now - timedelta(minutes=5)
    )
    schedule_messages("tomorrow", recipients("smtp", "c@example.org"), send_at=now + timedelta(days=1))
    return SimpleNamespace(
        message=message,
        sent=[by_address[a] for a in ("ok/1", "ok/2", "ok/3")],
        error=by_address["temp/4"],
        failed=by_address["perm/5"],
        pending=waiting,
    )


@pytest.fixture
def traffic(db) -> SimpleNamespace:
    return make_traffic()
