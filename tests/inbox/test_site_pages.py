"""The pages people reach on the demo site: login, the header, preferences."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from dispatcher.messages import MessageBase
from dispatcher.registry import register_message_types
from dispatcher.subscriptions import get_user_preferences_for_ui

pytestmark = pytest.mark.django_db


class Digest(MessageBase):
    alias = "digest"
    title = "Weekly digest"
    description = "The week's best discussions, every Monday."
    category = "community"


class Security(MessageBase):
    alias = "login_alert"
    title = "New sign-in"
    description = "When your account is used from a new device."
    category = "account"


class Misc(MessageBase):
    alias = "misc"
    title = "Odds and ends"


def test_an_ordinary_user_logs_in_and_reaches_inbox_notifications_and_preferences(users):
    client = Client()
    response = client.get("/", follow=True)
    assert response.redirect_chain[-1][0].startswith(reverse("login"))
    page = client.post(reverse("login") + "?next=/", {"username": "bob", "password": "pw"}, follow=True)
    assert page.redirect_chain[-1][0] == reverse("inbox:inbox")
    html = page.content.decode()
    for link in ('id="nav-inbox"', 'id="nav-bell"', 'id="nav-preferences"', 'id="inbox-unread"',
                 'id="feed-unread"', 'href="/notifications/"', 'href="/dispatcher/preferences/"'):
        assert link in html
    assert client.get(reverse("dispatcher:preferences")).status_code == 200
    assert client.post(reverse("logout")).status_code == 302
    assert client.get(reverse("inbox:inbox")).status_code == 302


def test_a_wrong_password_is_said_on_the_page(users):
    page = Client().post(reverse("login"), {"username": "bob", "password": "nope"})
    assert page.status_code == 200 and 'id="login-error"' in page.content.decode()


def test_generic_types_are_not_offered_to_users(users):
    offered = {row.message_type for row in get_user_preferences_for_ui(users.ann).rows}
    assert not offered & {"plain", "email_plain", "email_html"}


def test_preferences_are_grouped_by_the_sites_categories_with_descriptions(users, settings):
    settings.DISPATCHER_MESSAGE_CATEGORIES = {"account": "Your account", "community": "Community"}
    register_message_types(Digest, Security, Misc)
    client = Client()
    client.force_login(users.ann)
    html = client.get(reverse("dispatcher:preferences")).content.decode()
    assert "E-mail (text)" not in html and "Plain text" not in html
    positions = [html.index(f"<h2>{title}</h2>") for title in ("Your account", "Community", "Other")]
    assert positions == sorted(positions)
    assert html.index("New sign-in") < positions[1] < html.index("Weekly digest") < positions[2]
    assert "The week&#x27;s best discussions, every Monday." in html
    assert html.index("Odds and ends") > positions[2]
    assert 'id="nav-bell"' in html  # styled like the inbox pages: the same header
