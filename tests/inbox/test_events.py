"""The seed's example: announce each new Event to the users who subscribed to it.

django-postman's documentation::

    from postman.api import pm_broadcast
    events = Event.objects.filter(...)
    for e in events:
        pm_broadcast(
            sender=site_admin,
            recipients=e.subscribers...,
            subject='New {0} at Our School: {1}'.format(e.type, e.title),
            body=...)
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from dispatcher.delivery import deliver_batch
from dispatcher.inbox.api import PrivateMessage, pm_broadcast
from dispatcher.models import Dispatch
from tests.testapp.models import Event

pytestmark = pytest.mark.django_db


def announce(site_admin, events) -> None:
    """What the application writes, as in the seed."""
    for e in events:
        pm_broadcast(
            sender=site_admin,
            recipients=e.subscribers.all(),
            subject="New {0} at Our School: {1}".format(e.type, e.title),  # noqa: UP030, UP032 (the seed's code)
            body=f"{e.title} is open for registration.",
        )


@pytest.fixture
def school(django_user_model):
    admin = django_user_model.objects.create_user("site_admin", "admin@school.example.org")
    pupils = [django_user_model.objects.create_user(n, f"{n}@school.example.org")
              for n in ("ann", "bob", "cat", "dan")]
    concert = Event.objects.create(type="concert", title="Spring Concert")
    concert.subscribers.set(pupils[:3])
    lecture = Event.objects.create(type="lecture", title="Stars and Planets")
    lecture.subscribers.set(pupils[1:])
    Event.objects.create(type="fair", title="Nobody's Fair")  # no subscribers: nothing to send
    return admin, pupils


def test_each_subscriber_gets_the_announcement_in_the_inbox_and_by_mail(school, smtp_server):
    admin, (ann, bob, cat, dan) = school
    announce(admin, Event.objects.order_by("pk"))

    def subjects(user):
        return sorted(m.subject for m in PrivateMessage.objects.inbox(user))

    assert subjects(ann) == ["New concert at Our School: Spring Concert"]
    assert subjects(bob) == subjects(cat) == [
        "New concert at Our School: Spring Concert", "New lecture at Our School: Stars and Planets"
    ]
    assert subjects(dan) == ["New lecture at Our School: Stars and Planets"]
    # The sender has nothing to clean up.
    assert PrivateMessage.objects.sent(admin).count() == 0
    assert PrivateMessage.objects.archives(admin).count() == 0

    deliver_batch("smtp", list(Dispatch.objects.values_list("pk", flat=True)))
    # (A folded long Subject reads back with its folding space: strip it.)
    received = sorted((m["To"], m["Subject"].strip()) for m in smtp_server.messages)
    assert received == sorted(
        [(f"{u.username}@school.example.org",
          "New message from site_admin: New concert at Our School: Spring Concert") for u in (ann, bob, cat)]
        + [(f"{u.username}@school.example.org",
            "New message from site_admin: New lecture at Our School: Stars and Planets")
           for u in (bob, cat, dan)]
    )


def test_announcing_costs_the_same_queries_per_event_whatever_the_audience(django_user_model):
    admin = django_user_model.objects.create_user("site_admin", "admin@school.example.org")
    crowd = django_user_model.objects.bulk_create(
        [django_user_model(username=f"p{i}", email=f"p{i}@school.example.org") for i in range(80)]
    )

    def queries(audience) -> int:
        event = Event.objects.create(type="talk", title=f"for {len(audience)}")
        event.subscribers.set(audience)
        with CaptureQueriesContext(connection) as ctx:
            announce(admin, [event])
        return len(ctx.captured_queries)

    assert queries(crowd[:2]) == queries(crowd)
