"""The admin: dispatch states visible, filters, errors inline, retry and cancel."""

from __future__ import annotations

import pytest
from django.urls import reverse

from dispatcher.api import recipients, schedule_messages
from dispatcher.delivery import deliver_batch
from dispatcher.models import Dispatch

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client, django_user_model):
    user = django_user_model.objects.create_superuser("admin", "admin@example.org", "pw")
    client.force_login(user)
    return client


@pytest.fixture
def scheduled():
    [(message, dispatches)] = schedule_messages(
        "hello", recipients("flaky", ["ok/1", "temp/2", "perm/3"])
    )
    deliver_batch("flaky", [d.pk for d in dispatches])
    return message, {d.address: Dispatch.objects.get(pk=d.pk) for d in dispatches}


def test_changelist_filters_and_search(staff, scheduled):
    url = reverse("admin:dispatcher_dispatch_changelist")
    page = staff.get(url, {"status__exact": "failed"}).content.decode()
    assert "perm/3" in page and "ok/1" not in page
    page = staff.get(url, {"q": "temp/2"}).content.decode()
    assert "temp/2" in page and "perm/3" not in page
    page = staff.get(url, {"messenger": "flaky"}).content.decode()
    assert "ok/1" in page


def test_errors_shown_inline(staff, scheduled):
    _, by_address = scheduled
    page = staff.get(reverse("admin:dispatcher_dispatch_change", args=[by_address["perm/3"].pk]))
    assert "scripted permanent failure" in page.content.decode()


def test_retry_now_and_cancel_actions(staff, scheduled):
    _, by_address = scheduled
    url = reverse("admin:dispatcher_dispatch_changelist")
    failed = by_address["perm/3"]
    staff.post(url, {"action": "retry_now_action", "_selected_action": [failed.pk]})
    failed.refresh_from_db()
    assert (failed.status, failed.attempts) == ("pending", 0)

    erroring = by_address["temp/2"]
    sent = by_address["ok/1"]
    staff.post(url, {"action": "cancel_action", "_selected_action": [erroring.pk, sent.pk]})
    erroring.refresh_from_db()
    sent.refresh_from_db()
    assert erroring.status == "cancelled"
    assert sent.status == "sent"  # a sent dispatch cannot be cancelled


def test_message_admin_cancels_its_dispatches(staff):
    [(message, dispatches)] = schedule_messages("x", recipients("flaky", ["ok/1", "ok/2"]))
    staff.post(reverse("admin:dispatcher_message_changelist"),
               {"action": "cancel_action", "_selected_action": [message.pk]})
    assert set(Dispatch.objects.values_list("status", flat=True)) == {"cancelled"}


def test_admin_requires_staff(client):
    response = client.get(reverse("admin:dispatcher_dispatch_changelist"))
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_model_event_subscription_admin_offers_watched_models_and_validates(staff, django_user_model):
    page = staff.get(reverse("admin:dispatcher_modeleventsubscription_add")).content.decode()
    assert "profile" in page and "unwatched" not in page
    from django.contrib.contenttypes.models import ContentType

    from dispatcher.models import ModelEventSubscription
    from tests.testapp.models import Profile

    ct = ContentType.objects.get_for_model(Profile)
    response = staff.post(reverse("admin:dispatcher_modeleventsubscription_add"), {
        "content_type": ct.pk, "action": "create", "messenger": "smtp", "address": "a@example.org",
        "filters": "{}", "subject_template": "{{ nope }}", "body_template": "", "active": "on",
    })
    assert "unknown field" in response.content.decode()
    assert ModelEventSubscription.objects.count() == 0
    staff.post(reverse("admin:dispatcher_modeleventsubscription_add"), {
        "content_type": ct.pk, "action": "create", "messenger": "smtp", "address": "a@example.org",
        "filters": "{}", "subject_template": "New: {{ full_name }}", "body_template": "", "active": "on",
    })
    assert ModelEventSubscription.objects.get().subject_template == "New: {{ full_name }}"


def test_changelist_pages_are_read_by_ids_and_keep_order_and_filters(staff):
    """The list reads a page's ids first, then its rows (see CountedPaginator.page):
    every page holds the filter's rows, newest first, none twice, none lost, even
    with the newest ids taken by other rows (a backlog)."""
    [(_, sent)] = schedule_messages("old", recipients("flaky", [f"ok/{i}" for i in range(230)]))
    Dispatch.objects.filter(pk__in=[d.pk for d in sent]).update(status="sent")
    schedule_messages("backlog", recipients("flaky", [f"ok/b{i}" for i in range(120)]))
    url = reverse("admin:dispatcher_dispatch_changelist")
    seen: list[int] = []
    for number in (1, 2, 3):
        response = staff.get(url, {"status__exact": "sent", "p": number})
        rows = list(response.context["cl"].result_list)
        assert all(d.status == "sent" for d in rows)
        seen += [d.pk for d in rows]
    assert seen == sorted((d.pk for d in sent), reverse=True)
