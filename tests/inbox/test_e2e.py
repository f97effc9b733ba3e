"""End to end: private-message notifications delivered by a real Celery worker to a real SMTP server."""

from __future__ import annotations

import pytest

from dispatcher.inbox.api import Inbox, pm_broadcast, pm_write
from dispatcher.models import Dispatch
from tests.services import wait_for
from tests.testapp.models import Event

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def all_sent(n: int):
    return lambda: list(Dispatch.objects.values_list("status", flat=True)) == ["sent"] * n


def test_messages_and_moderation_notices_arrive_by_mail(workers, sink, users):
    workers("inbox", smtp_port=sink.port)
    pm_write(users.ann, users.bob, "Lunch?", "At noon?")
    Inbox.send_message(users.bob, users.ann, "Yes!")
    pm_write(users.cat, users.bob, "BUY NOW", "cheap", auto_moderators=[lambda m: (0, "advertising")])

    wait_for(all_sent(3), 60, 0.2, "the three notifications to be sent")
    wait_for(lambda: len(sink.messages) >= 3, 10)
    mails = {m["To"]: m for m in sink.messages}
    assert sorted(mails) == ["ann@example.org", "bob@example.org", "cat@example.org"]
    assert mails["bob@example.org"]["Subject"] == "New message from ann: Lunch?"
    assert "At noon?" in mails["bob@example.org"].get_content()
    assert mails["ann@example.org"]["Subject"] == "New message from bob"
    assert "Yes!" in mails["ann@example.org"].get_content()
    assert mails["cat@example.org"]["Subject"] == "Your message to bob was rejected"
    assert "Reason: advertising" in mails["cat@example.org"].get_content()


def test_event_announcements_reach_subscribers(workers, sink, users, django_user_model):
    admin = django_user_model.objects.create_user("site_admin", "admin@example.org")
    event = Event.objects.create(type="concert", title="Spring Concert")
    event.subscribers.set([users.ann, users.bob])
    workers("events", smtp_port=sink.port)

    for e in Event.objects.all():
        pm_broadcast(sender=admin, recipients=e.subscribers.all(),
                     subject="New {0} at Our School: {1}".format(e.type, e.title),  # noqa: UP030, UP032 (the seed's code)
                     body="See you there.")

    wait_for(all_sent(2), 60, 0.2, "both announcements to be sent")
    wait_for(lambda: len(sink.messages) >= 2, 10)
    assert sorted(m["To"] for m in sink.messages) == ["ann@example.org", "bob@example.org"]
    assert {m["Subject"].strip() for m in sink.messages} == {
        "New message from site_admin: New concert at Our School: Spring Concert"
    }


@pytest.fixture
def site_table():
    """The sites framework's table, with the current site, in the shared test
    database (this test process runs without django.contrib.sites; the worker
    runs with it: tests/inbox/sites_settings.py)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE django_site (id integer PRIMARY KEY, "
                       "domain varchar(100) NOT NULL UNIQUE, name varchar(50) NOT NULL)")
        cursor.execute("INSERT INTO django_site (id, domain, name) "
                       "VALUES (1, 'school.example.org', 'Our School')")
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE django_site")


def test_site_is_in_the_template_context_when_the_sites_framework_is_installed(
    workers, sink, users, site_table
):
    workers("sites", smtp_port=sink.port, DJANGO_SETTINGS_MODULE="tests.inbox.sites_settings")
    pm_write(users.ann, users.bob, "With sites", "Hello")
    wait_for(all_sent(1), 60, 0.2, "the notification to be sent")
    wait_for(lambda: sink.messages, 10)
    lines = sink.messages[0].get_content().splitlines()
    assert "ann sent you a private message on Our School." in lines
    assert "https://school.example.org/" in lines
