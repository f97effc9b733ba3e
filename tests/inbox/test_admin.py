"""The moderators' admin: accept at once, reject with a reason asked on an intermediate page."""

from __future__ import annotations

import pytest
from django.urls import reverse

from dispatcher.inbox.api import PrivateMessage, pm_write
from dispatcher.models import Dispatch

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:inbox_privatemessage_changelist"


@pytest.fixture
def staff(client, django_user_model):
    user = django_user_model.objects.create_superuser("admin", "admin@example.org", "pw")
    client.force_login(user)
    client.user = user
    return client


@pytest.fixture
def pending(users, settings):
    settings.DISPATCHER_INBOX_AUTO_MODERATE_AS = None
    return [
        pm_write(users.ann, users.bob, f"pending {i}", "body", auto_moderators=[lambda m: None])
        for i in range(2)
    ]


def test_changelist_filters_pending_messages(staff, users, pending):
    pm_write(users.cat, users.bob, "already accepted")
    page = staff.get(reverse(CHANGELIST), {"moderation_status__exact": "pending"}).content.decode()
    assert "pending 0" in page and "pending 1" in page and "already accepted" not in page


def test_accept_action(staff, users, pending):
    response = staff.post(reverse(CHANGELIST), {
        "action": "accept_messages", "_selected_action": [pending[0].pk],
    })
    assert response.status_code == 302
    accepted = PrivateMessage.objects.get(pk=pending[0].pk)
    assert (accepted.moderation_status, accepted.moderation_by) == ("accepted", staff.user)
    assert PrivateMessage.objects.get(pk=pending[1].pk).moderation_status == "pending"
    assert list(Dispatch.objects.values_list("address", flat=True)) == ["bob@example.org"]


def test_reject_action_asks_for_a_reason_first(staff, users, pending):
    selected = [m.pk for m in pending]
    page = staff.post(reverse(CHANGELIST), {"action": "reject_messages", "_selected_action": selected})
    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="reason"' in html and "pending 0" in html and "pending 1" in html
    # Nothing is decided yet.
    assert set(PrivateMessage.objects.values_list("moderation_status", flat=True)) == {"pending"}

    response = staff.post(reverse(CHANGELIST), {
        "action": "reject_messages", "_selected_action": selected, "apply": "1", "reason": "spam",
    })
    assert response.status_code == 302
    rows = PrivateMessage.objects.filter(pk__in=selected)
    assert {(m.moderation_status, m.moderation_reason, m.moderation_by_id) for m in rows} == {
        ("rejected", "spam", staff.user.pk)
    }
    # Each sender is told, with the reason; the recipient never hears of them.
    dispatches = Dispatch.objects.select_related("message")
    assert [d.address for d in dispatches] == ["ann@example.org", "ann@example.org"]
    assert {d.message.context["reason"] for d in dispatches} == {"spam"}


def test_moderation_fields_are_read_only_in_the_change_form(staff, pending):
    url = reverse("admin:inbox_privatemessage_change", args=[pending[0].pk])
    html = staff.get(url).content.decode()
    assert 'name="moderation_status"' not in html and 'name="moderation_reason"' not in html


def test_moderation_needs_the_change_permission(client, django_user_model, pending):
    viewer = django_user_model.objects.create_user("viewer", is_staff=True)
    from django.contrib.auth.models import Permission

    viewer.user_permissions.add(Permission.objects.get(codename="view_privatemessage"))
    client.force_login(viewer)
    client.post(reverse(CHANGELIST), {"action": "accept_messages", "_selected_action": [pending[0].pk]})
    assert PrivateMessage.objects.get(pk=pending[0].pk).moderation_status == "pending"
