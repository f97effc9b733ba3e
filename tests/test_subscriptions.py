"""Subscriptions: message types, preferences, model events, unsubscribe and read links."""

from __future__ import annotations

import re

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from dispatcher import links
from dispatcher.api import schedule_messages
from dispatcher.delivery import deliver_batch
from dispatcher.exceptions import NoRecipients
from dispatcher.model_events import handle_event, subscribe_to_model_event
from dispatcher.models import Dispatch, ModelEventSubscription, Subscription
from dispatcher.subscriptions import get_user_preferences_for_ui, subscribe
from tests.testapp.message_types import NewsletterMessage
from tests.testapp.models import Profile, Unwatched

pytestmark = pytest.mark.django_db


@pytest.fixture
def ann(django_user_model):
    return django_user_model.objects.create_user("ann", "ann@example.org", "pw")


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", "bob@example.org", "pw")


# -- message-type subscriptions ------------------------------------------------------------
def test_no_recipients_fans_out_to_subscribers(ann, bob):
    subscribe("newsletter", "smtp", ann)
    subscribe("newsletter", "smtp", bob)
    subscribe("newsletter", "smtp", "visitor@example.org")
    subscribe("plain", "smtp", "other@example.org")  # another type
    [(_, dispatches)] = schedule_messages(NewsletterMessage({"text": "Issue 1"}))
    assert sorted(d.address for d in dispatches) == ["ann@example.org", "bob@example.org",
                                                      "visitor@example.org"]
    assert {d.recipient for d in dispatches} == {ann, bob, None}


def test_fan_out_query_count_does_not_grow_with_subscribers(django_user_model):
    def queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            schedule_messages(NewsletterMessage({"text": "x"}))
        return len(ctx.captured_queries)

    for i in range(3):
        subscribe("newsletter", "smtp", f"a{i}@example.org")
    few = queries()
    users = django_user_model.objects.bulk_create(
        [django_user_model(username=f"u{i}", email=f"u{i}@example.org") for i in range(200)]
    )
    Subscription.objects.bulk_create(
        [Subscription(message_type="newsletter", messenger="smtp", recipient=u) for u in users]
    )
    assert queries() == few


def test_nobody_subscribed_is_a_clear_error():
    with pytest.raises(NoRecipients, match="nobody subscribes to 'newsletter'"):
        schedule_messages(NewsletterMessage({"text": "x"}))


def test_subscriptions_are_unique(ann):
    subscribe("newsletter", "smtp", ann)
    subscribe("newsletter", "smtp", ann)
    assert Subscription.objects.count() == 1
    with pytest.raises(IntegrityError), transaction.atomic():
        Subscription.objects.create(message_type="newsletter", messenger="smtp", recipient=ann)
    subscribe("newsletter", "smtp", "x@example.org")
    with pytest.raises(IntegrityError), transaction.atomic():
        Subscription.objects.create(message_type="newsletter", messenger="smtp", address="x@example.org")


# -- preferences ------------------------------------------------------------------------------
def test_preferences_offer_only_what_a_user_may_subscribe_to(ann):
    prefs = get_user_preferences_for_ui(ann)
    assert "mymessenger" not in [alias for alias, _ in prefs.messengers]  # allow_user_subscription=False
    by_type = {row.message_type: row for row in prefs.rows}
    assert "security_alert" not in by_type  # allow_user_subscription=False
    cells = {alias: available for alias, _, _, available in by_type["newsletter"].cells}
    assert cells["smtp"] is True and cells["flaky"] is False  # supported_messengers


def test_preferences_round_trip(client, ann):
    client.force_login(ann)
    page = client.get(reverse("dispatcher:preferences")).content.decode()
    assert 'value="newsletter:smtp"' in page
    response = client.post(reverse("dispatcher:preferences"),
                           {"pref_shown": ["newsletter:smtp", "hello:smtp"], "pref": ["newsletter:smtp"]})
    assert response.status_code == 302
    assert set(Subscription.objects.filter(recipient=ann).values_list("message_type", "messenger")) == {
        ("newsletter", "smtp")
    }
    page = client.get(reverse("dispatcher:preferences")).content.decode()
    assert re.search(r'value="newsletter:smtp"[^>]*checked', page)
    # Unticking a shown box removes it; a subscription the form did not show is kept.
    Subscription.objects.create(message_type="hello", messenger="flaky", recipient=ann)
    client.post(reverse("dispatcher:preferences"), {"pref_shown": ["newsletter:smtp"]})
    assert set(Subscription.objects.filter(recipient=ann).values_list("message_type", "messenger")) == {
        ("hello", "flaky")
    }


def test_forged_preference_for_a_restricted_type_is_refused(client, ann):
    client.force_login(ann)
    response = client.post(reverse("dispatcher:preferences"), {
        "pref_shown": ["newsletter:smtp", "security_alert:smtp"],
        "pref": ["newsletter:smtp", "security_alert:smtp"],
    })
    assert response.status_code == 403
    assert Subscription.objects.count() == 0  # nothing changed, not even the allowed one


def test_preferences_need_login_and_csrf(ann):
    assert Client().get(reverse("dispatcher:preferences")).status_code == 302
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(ann)
    response = strict.post(reverse("dispatcher:preferences"),
                           {"pref_shown": ["newsletter:smtp"], "pref": ["newsletter:smtp"]})
    assert response.status_code == 403
    assert Subscription.objects.count() == 0


# -- unsubscribe and read links ------------------------------------------------------------------
@pytest.fixture
def delivered(smtp_server, ann, bob):
    subscribe("newsletter", "smtp", ann)
    subscribe("newsletter", "smtp", bob)
    [(_, dispatches)] = schedule_messages(NewsletterMessage({"text": "Issue 1"}))
    deliver_batch("smtp", [d.pk for d in dispatches])
    return {m["To"]: m for m in smtp_server.messages}


def test_each_recipient_gets_its_own_unsubscribe_link(delivered):
    ann_mail, bob_mail = delivered["ann@example.org"], delivered["bob@example.org"]
    for mail in (ann_mail, bob_mail):
        assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert mail["List-Unsubscribe"].startswith("<http")
    assert ann_mail["List-Unsubscribe"] != bob_mail["List-Unsubscribe"]
    ann_link = re.search(r"Unsubscribe: (\S+)", ann_mail.get_content()).group(1)
    bob_link = re.search(r"Unsubscribe: (\S+)", bob_mail.get_content()).group(1)
    assert ann_link != bob_link


def path_of(url: str) -> str:
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


def test_get_shows_a_form_and_only_post_unsubscribes(delivered, ann, bob):
    link = re.search(r"Unsubscribe: (\S+)", delivered["ann@example.org"].get_content()).group(1)
    client = Client(enforce_csrf_checks=True)
    page = client.get(path_of(link))
    assert page.status_code == 200 and b"<form method=\"post\">" in page.content
    assert Subscription.objects.filter(recipient=ann).exists()  # GET changed nothing
    token = page.cookies["csrftoken"].value
    assert client.post(path_of(link)).status_code == 403  # no CSRF token
    assert Subscription.objects.filter(recipient=ann).exists()
    done = client.post(path_of(link), {"csrfmiddlewaretoken": token})
    assert b"You are unsubscribed" in done.content
    assert not Subscription.objects.filter(recipient=ann).exists()
    assert Subscription.objects.filter(recipient=bob).exists()  # the other recipient is untouched


def test_one_click_unsubscribe(delivered, ann):
    url = path_of(delivered["ann@example.org"]["List-Unsubscribe"].strip("<>"))
    client = Client(enforce_csrf_checks=True)
    assert client.get(url).status_code == 405
    assert client.post(url, {"wrong": "body"}).status_code == 400
    assert client.post(url, {"List-Unsubscribe": "One-Click"}).status_code == 200
    assert not Subscription.objects.filter(recipient=ann).exists()


def test_tampered_and_expired_tokens_are_refused(delivered, ann, settings):
    dispatch = Dispatch.objects.get(address="ann@example.org")
    token = links.make_token(dispatch.pk, links.UNSUBSCRIBE)
    other = links.make_token(dispatch.pk + 1000, links.UNSUBSCRIBE)
    tampered = token[:-2] + ("aa" if token[-2:] != "aa" else "bb")
    spliced = other.split(":")[0] + ":" + token.split(":", 1)[1]
    read_token = links.make_token(dispatch.pk, links.READ)  # a token for another action
    client = Client()
    for bad in (tampered, spliced, read_token):
        response = client.post(reverse("dispatcher:unsubscribe", args=[bad]))
        assert response.status_code == 400
    # A token older than DISPATCHER_LINK_MAX_AGE: with a negative age limit,
    # a token signed this second is already too old.
    settings.DISPATCHER_LINK_MAX_AGE = -1
    response = client.post(reverse("dispatcher:unsubscribe", args=[token]))
    assert response.status_code == 400 and b"expired" in response.content
    assert Subscription.objects.filter(recipient=ann).exists()


def test_read_pixel_sets_read_at_once(delivered):
    dispatch = Dispatch.objects.get(address="ann@example.org")
    url = reverse("dispatcher:read-pixel", args=[links.make_token(dispatch.pk, links.READ)])
    response = Client().get(url)
    assert response["Content-Type"] == "image/gif"
    dispatch.refresh_from_db()
    first = dispatch.read_at
    assert first is not None
    Client().get(url)
    dispatch.refresh_from_db()
    assert dispatch.read_at == first
    assert Dispatch.objects.get(address="bob@example.org").read_at is None


# -- model events ----------------------------------------------------------------------------------
def test_unwatched_model_fires_nothing(django_capture_on_commit_callbacks, ann):
    with django_capture_on_commit_callbacks() as callbacks, CaptureQueriesContext(connection) as ctx:
        Unwatched.objects.create(name="x")
    assert len(callbacks) == 0
    assert len(ctx.captured_queries) == 1  # the INSERT, nothing else


def test_watched_model_without_subscribers_publishes_nothing(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        Profile.objects.create(full_name="Nobody watches")
    assert len(callbacks) == 0


def test_rolled_back_transaction_fires_nothing(django_capture_on_commit_callbacks, ann):
    subscribe_to_model_event("testapp.profile", "create", ann)
    with django_capture_on_commit_callbacks() as callbacks:
        try:
            with transaction.atomic():
                Profile.objects.create(full_name="Rolled back")
                raise RuntimeError("abort")
        except RuntimeError:
            pass
    assert len(callbacks) == 0
    with django_capture_on_commit_callbacks() as callbacks:
        Profile.objects.create(full_name="Committed")
    assert len(callbacks) == 1


def test_subscriptions_are_validated_when_saved(ann):
    with pytest.raises(ValidationError, match="not watched"):
        subscribe_to_model_event("testapp.unwatched", "create", ann)
    with pytest.raises(ValidationError, match="unknown field 'nope'"):
        subscribe_to_model_event("testapp.profile", "create", ann, body_template="{{ nope }}")
    with pytest.raises(ValidationError, match="subject_template"):
        subscribe_to_model_event("testapp.profile", "create", ann, subject_template="{% if %}")
    with pytest.raises(ValidationError, match="unknown fields in filters: colour"):
        subscribe_to_model_event("testapp.profile", "create", ann, filters={"colour": "red"})
    with pytest.raises(ValidationError, match="unknown action"):
        subscribe_to_model_event("testapp.profile", "explode", ann)
    assert ModelEventSubscription.objects.count() == 0


def test_event_renders_fields_and_honours_filters(ann):
    subscribe_to_model_event(
        "testapp.profile", "create", ann, filters={"location": "Ljubljana"},
        subject_template="New profile: {{ full_name }}", body_template="{{ full_name }} from {{ location }}",
    )
    subscribe_to_model_event("testapp.profile", "create", "all@example.org")
    here = Profile.objects.create(full_name="Ana", location="Ljubljana")
    there = Profile.objects.create(full_name="Ben", location="Maribor")
    assert handle_event("testapp.profile", str(here.pk), "create") == 2
    assert handle_event("testapp.profile", str(there.pk), "create") == 1
    ann_dispatch = Dispatch.objects.get(address="ann@example.org")
    assert ann_dispatch.message.context["subject"] == "New profile: Ana"
    assert ann_dispatch.message.context["text"] == "Ana from Ljubljana"
    assert Dispatch.objects.filter(address="all@example.org").count() == 2
