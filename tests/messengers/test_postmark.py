"""E-mail through a fake Postmark API on loopback."""

from __future__ import annotations

import pytest

from dispatcher.api import recipients, register_messenger_objects
from dispatcher.messages import EmailHtmlMessage
from messengers.postmark import PostmarkMessenger
from tests.fakes.postmark import FakePostmark, postmark_error

from .conftest import deliver, errors

pytestmark = pytest.mark.django_db

TOKEN = "postmark-server-token-1234-abcd"


@pytest.fixture
def fake(serve):
    app = FakePostmark(TOKEN)
    app.server = serve(app)
    register_messenger_objects(PostmarkMessenger(TOKEN, "noreply@example.org", api_base=app.server.url))
    return app


def test_html_email_to_a_user(fake, django_user_model):
    user = django_user_model.objects.create(username="ann", email="ann@example.org")
    [dispatch] = deliver("postmark", EmailHtmlMessage("News", "<p>Hello <b>you</b></p>"), user)
    assert dispatch.status == "sent" and dispatch.address == "ann@example.org"
    [request] = fake.server.received
    assert (request.method, request.path) == ("POST", "/email")
    assert request.headers["x-postmark-server-token"] == TOKEN
    assert request.headers["accept"] == "application/json"
    email = request.json
    assert (email["From"], email["To"]) == ("noreply@example.org", "ann@example.org")
    assert email["Subject"] == "News"
    assert email["HtmlBody"] == "<p>Hello <b>you</b></p>" and email["TextBody"] == "Hello you"
    assert email["MessageStream"] == "outbound"
    assert email["Metadata"] == {"dispatch_id": str(dispatch.pk)}
    # Postmark's MessageID is kept: delivery receipts are matched by it.
    assert set(dispatch.result) == {"message_id"} and len(dispatch.result["message_id"]) == 36  # a UUID


def test_inactive_recipient_is_permanent(fake):
    fake.inactive.add("gone@example.org")
    [dispatch] = deliver("postmark", "Hi", "gone@example.org")
    assert dispatch.status == "failed"
    text = errors(dispatch)[0].text
    assert "ErrorCode 406" in text and "marked as inactive" in text


def test_other_422_is_permanent(fake):
    fake.replies = [postmark_error(422, 300, "Invalid email request")]
    [dispatch] = deliver("postmark", "Hi", "a@example.org")
    assert dispatch.status == "failed"
    assert "ErrorCode 300" in errors(dispatch)[0].text


@pytest.mark.parametrize("reply", [
    postmark_error(429, 429, "Rate limit exceeded"),
    postmark_error(500, 0, "Internal server error"),
    postmark_error(503, 100, "Maintenance"),
])
def test_rate_limit_and_server_errors_are_temporary(fake, reply):
    fake.replies = [reply]
    [dispatch] = deliver("postmark", "Hi", "a@example.org")
    assert dispatch.status == "error"
    assert f"HTTP {reply.status}" in errors(dispatch)[0].text


def test_wrong_server_token_is_permanent_and_not_shown(fake):
    register_messenger_objects(PostmarkMessenger("wrong-token-5555", "noreply@example.org",
                                                 api_base=fake.server.url))
    [dispatch] = deliver("postmark", "Hi", "a@example.org")
    assert dispatch.status == "failed"
    assert "server token was rejected" in errors(dispatch)[0].text
    assert "wrong-token-5555" not in errors(dispatch)[0].text


def test_addresses_are_e_mail_addresses(fake):
    from messengers.exceptions import InvalidAddress

    with pytest.raises(InvalidAddress):
        recipients("postmark", "not an address")
