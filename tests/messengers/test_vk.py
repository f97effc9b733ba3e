"""VK against a fake VK API on loopback: errors arrive as HTTP 200."""

from __future__ import annotations

import pytest

from dispatcher.api import recipients, register_messenger_objects
from messengers.exceptions import InvalidAddress
from messengers.vk import VKontakteMessenger
from tests.fakes.vk import FakeVK

from .conftest import delay, deliver, errors

pytestmark = pytest.mark.django_db

TOKEN = "vk1.a.community-token-secret-42"


@pytest.fixture
def fake(serve):
    app = FakeVK(TOKEN)
    app.server = serve(app)
    register_messenger_objects(VKontakteMessenger(TOKEN, api_base=app.server.url + "/method/"))
    return app


def test_community_wall_post(fake):
    [dispatch] = deliver("vk", "Hi there!", "-12345")
    assert dispatch.status == "sent"
    [request] = fake.server.received
    assert (request.method, request.path) == ("POST", "/method/wall.post")
    assert request.form == {"owner_id": "-12345", "from_group": "1", "message": "Hi there!",
                            "v": "5.199", "access_token": TOKEN}
    assert request.query == {}  # the token is never in the URL
    assert set(dispatch.result) == {"post_id"} and dispatch.result["post_id"]


def test_user_wall_and_configured_owner(fake):
    register_messenger_objects(VKontakteMessenger(TOKEN, owner_id=-777, api_base=fake.server.url + "/method"))
    sent = deliver("vk", "Hi", ["", "100"])
    assert [d.status for d in sent] == ["sent", "sent"]
    assert [(p["owner_id"], p["from_group"]) for p in fake.posts] == [("-777", "1"), ("100", "0")]


def test_address_must_be_an_owner_id():
    register_messenger_objects(VKontakteMessenger(TOKEN))
    with pytest.raises(InvalidAddress):
        recipients("vk", "club12345")
    with pytest.raises(InvalidAddress, match="no owner_id"):
        recipients("vk", "")


@pytest.mark.parametrize(("code", "message", "min_delay"), [
    (6, "Too many requests per second", 0.5),
    (9, "Flood control", 3500),
    (29, "Rate limit reached", 3500),
    (10, "Internal server error", 0),
])
def test_temporary_errors(fake, code, message, min_delay):
    fake.errors = [(code, message, {})]
    [dispatch] = deliver("vk", "Hi", "-12345")
    assert dispatch.status == "error"
    assert delay(dispatch) >= min_delay
    assert f"error {code}: {message}" in errors(dispatch)[0].text


@pytest.mark.parametrize(("code", "message"), [
    # messengers.redact masks the word after "authorization": VK's text is kept from "failed" on.
    (5, "failed: access_token has expired."),
    (15, "Access denied: no access to call this method"),
    (100, "One of the parameters specified was missing or invalid"),
    (214, "Access to adding post denied"),
    (219, "Advertisement post was recently added"),
    (222, "Hyperlinks are forbidden"),
])
def test_permanent_errors(fake, code, message):
    fake.errors = [(code, message, {})]
    [dispatch] = deliver("vk", "Hi", "-12345")
    assert dispatch.status == "failed"
    text = errors(dispatch)[0].text
    assert f"error {code}: " in text and message in text


def test_captcha_fails_with_what_an_operator_should_do(fake):
    fake.errors = [(14, "Captcha needed", {"captcha_sid": "548273", "captcha_img": "https://api.vk.ru/captcha.php?sid=548273"})]
    [dispatch] = deliver("vk", "Hi", "-12345")
    assert dispatch.status == "failed"
    text = errors(dispatch)[0].text
    assert "error 14: Captcha needed" in text
    assert "community (group) token" in text and "Retry now" in text


def test_wrong_token_is_permanent_and_not_shown(fake):
    wrong = VKontakteMessenger("vk1.a.wrong-token-000", api_base=fake.server.url + "/method/")
    register_messenger_objects(wrong)
    [dispatch] = deliver("vk", "Hi", "-12345")
    assert dispatch.status == "failed"
    assert "error 5" in errors(dispatch)[0].text and "wrong-token-000" not in errors(dispatch)[0].text


def test_default_api_base_is_api_vk_ru():
    assert VKontakteMessenger(TOKEN).url("wall.post") == "https://api.vk.ru/method/wall.post"
