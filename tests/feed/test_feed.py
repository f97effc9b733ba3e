"""The in-app feed: the inapp messenger through the real delivery engine, the
JSON API, the page, the unread count and the sweep."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.template import Context, Template
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from dispatcher.api import recipients, schedule_messages
from dispatcher.delivery import deliver_batch
from dispatcher.exceptions import InvalidAddress
from dispatcher.feed import beat, sweeps
from dispatcher.feed.messenger import InAppMessenger, safe_url
from dispatcher.feed.models import Notification
from dispatcher.inbox.api import pm_write
from dispatcher.messages import MessageBase
from dispatcher.models import Dispatch
from dispatcher.registry import get_registered_messenger_object, register_message_types
from dispatcher.subscriptions import get_user_preferences_for_ui
from tests.testapp.message_types import HelloMessage

pytestmark = pytest.mark.django_db


class Announcement(MessageBase):
    """A subject and a text, for any messenger."""

    alias = "feed_test"
    title = "Announcement"


@pytest.fixture(autouse=True)
def _announcement():
    register_message_types(Announcement)


def deliver() -> None:
    ids = list(Dispatch.objects.filter(messenger="inapp", status="pending").values_list("pk", flat=True))
    deliver_batch("inapp", ids)


def notify(users, text: str = "Hello", **context) -> list[Dispatch]:
    [(_, dispatches)] = schedule_messages(Announcement({"subject": f"About {text}", "text": text, **context}),
                                          recipients("inapp", users))
    return dispatches


# -- the messenger ---------------------------------------------------------------------------------
def test_inapp_is_registered_and_addresses_users_by_id(users):
    messenger = get_registered_messenger_object("inapp")
    assert isinstance(messenger, InAppMessenger)
    assert [r.address for r in recipients("inapp", [users.ann, users.bob])] == [str(users.ann.pk),
                                                                                 str(users.bob.pk)]
    for bad in ("ann", "0", "-1", "1.5", "99999999999999999999", ""):
        with pytest.raises(InvalidAddress):
            recipients("inapp", bad)


def test_a_notification_is_delivered_into_the_users_feed(users):
    dispatches = notify([users.ann, users.bob], "Your order shipped", url="https://shop.example/o/1")
    deliver()
    assert set(Dispatch.objects.values_list("status", flat=True)) == {"sent"}
    rows = {n.recipient_id: n for n in Notification.objects.all()}
    assert sorted(rows) == sorted([users.ann.pk, users.bob.pk])
    ann = rows[users.ann.pk]
    assert (ann.subject, ann.text, ann.url, ann.message_type) == (
        "About Your order shipped", "Your order shipped", "https://shop.example/o/1", "feed_test")
    assert {n.dispatch_id for n in rows.values()} == {d.pk for d in dispatches}


def test_each_send_is_one_insert_and_a_retry_adds_no_row(users, django_user_model):
    many = [django_user_model.objects.create_user(f"u{i}") for i in range(30)]
    notify(many)
    with CaptureQueriesContext(connection) as queries:
        deliver()
    inserts = [q for q in queries.captured_queries
               if q["sql"].startswith("INSERT") and 'INTO "feed_notification"' in q["sql"]]
    # One insert per send() call. Where a more urgent task could be seen waiting
    # (Redis), the engine hands a batch over in chunks so it can give way between
    # two (dispatcher.preemption); elsewhere the 30 are one call.
    from math import ceil

    from django.conf import settings

    from dispatcher.preemption import Preemption

    chunk = settings.DISPATCHER_PREEMPT_CHUNK if Preemption("inapp", 0).lists else len(many)
    assert len(inserts) == ceil(len(many) / chunk)
    assert Notification.objects.count() == 30
    Dispatch.objects.update(status="pending")  # as after a crash before the outcome was written
    deliver()
    assert Notification.objects.count() == 30


def test_an_inactive_or_deleted_user_fails_the_dispatch(users):
    notify([users.ann, users.bob])
    users.bob.is_active = False
    users.bob.save()
    deliver()
    statuses = dict(Dispatch.objects.values_list("address", "status"))
    assert statuses == {str(users.ann.pk): "sent", str(users.bob.pk): "failed"}
    assert list(Notification.objects.values_list("recipient", flat=True)) == [users.ann.pk]


@pytest.mark.parametrize("url, safe", [
    ("https://a.example/x?y=1&z=2", True), ("/messages/view/1/", True), ("http://a.example", True),
    ("javascript:alert(1)", False), ("//evil.example/", False), ("/a b", False), ('/a"onclick', False),
    ("data:text/html,x", False), (None, False), (5, False), ("/" + "x" * 600, False),
])
def test_only_safe_links_are_kept(url, safe):
    assert (safe_url(url) == url) is safe


def test_users_can_choose_inapp_in_their_preferences(users):
    rows = get_user_preferences_for_ui(users.ann).rows
    hello = next(r for r in rows if r.message_type == "hello")
    assert ("inapp", True) in [(alias, available) for alias, _, _, available in hello.cells]
    client = Client()
    client.force_login(users.ann)
    client.post(reverse("dispatcher:preferences"), {"pref_shown": ["hello:inapp"], "pref": ["hello:inapp"]})
    schedule_messages(HelloMessage({"subject": "Hi subscribers", "name": "you"}))
    deliver()
    [item] = Notification.objects.filter(recipient=users.ann)
    assert item.subject == "Hi subscribers"


def test_private_message_notifications_can_go_to_the_feed(users, settings):
    settings.DISPATCHER_INBOX_NOTIFY_MESSENGER = "inapp"
    settings.SITE_URL = "https://site.example"
    message = pm_write(users.ann, users.bob, "Lunch?", "At noon?")
    deliver()
    [item] = Notification.objects.all()
    assert item.recipient == users.bob and item.subject == "New message from ann: Lunch?"
    assert item.url == f"https://site.example/messages/view/{message.pk}/"
    assert item.url in item.text


# -- the JSON API ----------------------------------------------------------------------------------
class Api:
    def __init__(self, user):
        self.client = Client(enforce_csrf_checks=True)
        if user is not None:
            self.client.force_login(user)

    def get(self, name, *args, **params):
        return self.client.get(reverse(f"feed:{name}", args=args), params)

    def post(self, name, *args, csrf=True):
        if "csrftoken" not in self.client.cookies:
            self.get("api-unread-count")
        token = self.client.cookies["csrftoken"].value if "csrftoken" in self.client.cookies else ""
        return self.client.post(reverse(f"feed:{name}", args=args), "{}", content_type="application/json",
                                headers={"X-CSRFToken": token} if csrf else {})


@pytest.fixture
def items(users):
    notify([users.ann], "first")
    notify([users.ann], "second")
    notify([users.bob], "bob's own")
    deliver()
    return {n.text: n for n in Notification.objects.all()}


def test_api_lists_counts_marks_and_deletes_the_users_own(users, items):
    ann = Api(users.ann)
    data = ann.get("api-list").json()
    assert [n["text"] for n in data["notifications"]] == ["second", "first"]
    assert data["unread_count"] == 2
    assert ann.get("api-unread-count").json() == {"unread_count": 2}
    first = items["first"].pk
    assert ann.post("api-mark-read", first).json()["unread_count"] == 1
    assert [n["text"] for n in ann.get("api-list", unread="1").json()["notifications"]] == ["second"]
    assert ann.get("api-detail", first).json()["notification"]["unread"] is False
    assert ann.post("api-mark-all-read").json() == {"changed": 1, "unread_count": 0}
    assert ann.post("api-delete", first).json() == {"deleted": 1, "unread_count": 0}
    assert not Notification.objects.filter(pk=first).exists()
    bobs = items["bob's own"].pk
    answers = (ann.get("api-detail", bobs), ann.post("api-mark-read", bobs), ann.post("api-delete", bobs))
    for response in answers:
        assert response.status_code == 404 and response.json() == {"error": "no such notification"}
    assert Notification.objects.get(pk=bobs).read_at is None


def test_api_refuses_in_json(users, items):
    assert Api(None).get("api-unread-count").status_code == 401
    ann = Api(users.ann)
    response = ann.post("api-mark-all-read", csrf=False)
    assert response.status_code == 403 and "CSRF" in response.json()["error"]
    assert Notification.objects.filter(read_at__isnull=False).count() == 0
    assert ann.get("api-mark-all-read").status_code == 405
    assert ann.get("api-list", limit="0").status_code == 400
    assert ann.client.get("/notifications/api/nope/").json() == {"error": "no such endpoint"}
    for bad in ("abc", "-1", "99999999999999999999999"):
        assert ann.client.get(f"/notifications/api/notifications/{bad}/").status_code == 404


def plan_of(count) -> str:
    with CaptureQueriesContext(connection) as queries:
        count()
    [query] = queries.captured_queries
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET enable_seqscan = off")
            cursor.execute("EXPLAIN " + query["sql"])
            plan = "\n".join(row[0] for row in cursor.fetchall())
            cursor.execute("SET enable_seqscan = on")
        else:
            cursor.execute("EXPLAIN QUERY PLAN " + query["sql"])
            plan = "\n".join(str(row[-1]) for row in cursor.fetchall())
    return plan


def test_the_bell_costs_one_indexed_query(users, items):
    assert "feed_unread_idx" in plan_of(lambda: Notification.objects.unread_count(users.ann))
    template = Template("{% load feed_tags %}{% feed_unread %}/{% notifications_unread as n %}{{ n }}")
    with CaptureQueriesContext(connection) as queries:
        assert template.render(Context({"user": users.ann})) == "2/2"
    assert len(queries) == 2


# -- the page --------------------------------------------------------------------------------------
def test_the_page_shows_escaped_items_with_safe_links(users):
    notify([users.ann], "<img src=x onerror=alert(1)> see https://a.example/?q=1", url="javascript:alert(2)")
    deliver()
    client = Client()
    client.force_login(users.ann)
    page = client.get(reverse("feed:list")).content.decode()
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert '<a href="https://a.example/?q=1" rel="nofollow">' in page
    assert "javascript:" not in page
    assert 'id="feed-unread"' in page and ">1</span>" in page


def test_page_actions_are_csrf_posts_on_the_users_own(users, items):
    client = Client(enforce_csrf_checks=True)
    client.force_login(users.ann)
    first, bobs = items["first"].pk, items["bob's own"].pk
    assert client.post(reverse("feed:mark-read"), {"pks": [first]}).status_code == 403
    assert client.get(reverse("feed:mark-read"), {"pks": [first]}).status_code == 405
    client = Client()
    client.force_login(users.ann)
    client.post(reverse("feed:mark-read"), {"pks": [first, bobs]})
    assert set(Notification.objects.filter(read_at__isnull=False).values_list("pk", flat=True)) == {first}
    response = client.post(reverse("feed:mark-unread"), {"pks": [first]},
                           headers={"Accept": "application/json"})
    assert response.json() == {"changed": 1, "unread_count": 2}
    client.post(reverse("feed:mark-all-read"))
    assert Notification.objects.filter(read_at__isnull=True).count() == 1  # bob's
    client.post(reverse("feed:delete"), {"pks": [first, bobs]})
    assert sorted(Notification.objects.values_list("text", flat=True)) == ["bob's own", "second"]


# -- the sweep -------------------------------------------------------------------------------------
def test_the_sweep_removes_old_notifications(users, items, settings):
    settings.DISPATCHER_FEED_KEEP_DAYS = 90
    settings.DISPATCHER_FEED_KEEP_READ_DAYS = 30
    now = timezone.now()
    Notification.objects.filter(pk=items["first"].pk).update(read_at=now - timedelta(days=31))
    Notification.objects.filter(pk=items["second"].pk).update(created=now - timedelta(days=91))
    Notification.objects.filter(pk=items["bob's own"].pk).update(read_at=now - timedelta(days=29))
    out = io.StringIO()
    call_command("feed_cleanup", "--dry-run", stdout=out)
    assert out.getvalue().strip() == "would delete 2 notifications"
    assert Notification.objects.count() == 3
    assert sweeps.cleanup() == 2
    assert list(Notification.objects.values_list("text", flat=True)) == ["bob's own"]


def test_the_sweep_is_a_periodic_task_after_migrate():
    from django_celery_beat.models import PeriodicTask

    PeriodicTask.objects.filter(name=beat.NAME).delete()
    beat.ensure_periodic_task()
    task = PeriodicTask.objects.get(name=beat.NAME)
    assert (task.task, task.interval.every, task.queue) == ("dispatcher.feed_cleanup", 3600, "dispatcher")
    from celery import current_app

    assert "dispatcher.feed_cleanup" in current_app.tasks
    assert json.loads(task.args or "[]") == []
