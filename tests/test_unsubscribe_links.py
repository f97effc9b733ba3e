"""An unsubscribe link removes the subscription that made its message, never
one made again afterwards, though the link stays valid for 60 days."""

from __future__ import annotations

import pytest
from django.test import Client

from dispatcher.api import schedule_messages
from dispatcher.delivery import deliver_batch
from dispatcher.model_events import (
    handle_event,
    subscribe_to_model_event,
    unsubscribe_from_model_event,
)
from dispatcher.models import Dispatch, ModelEventSubscription, Subscription
from dispatcher.subscriptions import subscribe, unsubscribe
from tests.testapp.message_types import NewsletterMessage
from tests.testapp.models import Profile

pytestmark = pytest.mark.django_db


@pytest.fixture
def ann(django_user_model):
    return django_user_model.objects.create_user("ann", "ann@example.org", "pw")


def one_click_path(mail) -> str:
    url = mail["List-Unsubscribe"].strip("<>")
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


def form_path(mail) -> str:
    link = next(line.split("Unsubscribe: ", 1)[1].strip() for line in mail.get_content().splitlines()
                if "Unsubscribe: " in line)
    return "/" + link.split("://", 1)[1].split("/", 1)[1]


def click(path: str) -> int:
    return Client(enforce_csrf_checks=True).post(path, {"List-Unsubscribe": "One-Click"}).status_code


def newsletter_mail(smtp_server):
    [(_, dispatches)] = schedule_messages(NewsletterMessage({"text": "Issue"}))
    deliver_batch("smtp", [d.pk for d in dispatches])
    return smtp_server.messages[-1]


def test_an_old_link_does_not_undo_a_later_subscription(smtp_server, ann):
    subscribe("newsletter", "smtp", ann)
    mail = newsletter_mail(smtp_server)
    assert click(one_click_path(mail)) == 200
    assert not Subscription.objects.filter(recipient=ann).exists()
    subscribe("newsletter", "smtp", ann)  # the user changes their mind
    assert click(one_click_path(mail)) == 200  # the link is still valid...
    assert Subscription.objects.filter(recipient=ann).exists()  # ...but made before: nothing removed


def test_a_link_issued_before_a_resubscription_does_not_remove_it(smtp_server, ann):
    subscribe("newsletter", "smtp", ann)
    mail = newsletter_mail(smtp_server)
    # Unsubscribed and subscribed again elsewhere (the preferences page) after the mail went out.
    unsubscribe("newsletter", "smtp", ann)
    subscribe("newsletter", "smtp", ann)
    assert click(one_click_path(mail)) == 200
    assert Subscription.objects.filter(recipient=ann).count() == 1
    # The confirmation form's POST follows the same rule.
    client = Client(enforce_csrf_checks=True)
    page = client.get(form_path(mail))
    client.post(form_path(mail), {"csrfmiddlewaretoken": page.cookies["csrftoken"].value})
    assert Subscription.objects.filter(recipient=ann).count() == 1


def test_a_raw_address_follows_the_same_rule(smtp_server):
    subscribe("newsletter", "smtp", "visitor@example.org")
    mail = newsletter_mail(smtp_server)
    unsubscribe("newsletter", "smtp", "visitor@example.org")
    subscribe("newsletter", "smtp", "visitor@example.org")
    click(one_click_path(mail))
    assert Subscription.objects.filter(address="visitor@example.org").exists()


def test_model_event_links_spare_a_later_subscription(smtp_server, ann):
    subscribe_to_model_event(Profile, "create", ann)
    profile = Profile.objects.create(full_name="Ana")
    assert handle_event("testapp.profile", str(profile.pk), "create") == 1
    deliver_batch("smtp", list(Dispatch.objects.values_list("pk", flat=True)))
    mail = smtp_server.messages[-1]
    unsubscribe_from_model_event(Profile, "create", ann)
    again = subscribe_to_model_event(Profile, "create", ann)
    assert click(one_click_path(mail)) == 200
    assert ModelEventSubscription.objects.get(pk=again.pk).active
    # A link for a subscription that still exists still works.
    first = ModelEventSubscription.objects.exclude(pk=again.pk).get()
    ModelEventSubscription.objects.filter(pk=first.pk).update(active=True)
    click(one_click_path(mail))
    assert not ModelEventSubscription.objects.get(pk=first.pk).active
    assert ModelEventSubscription.objects.get(pk=again.pk).active
