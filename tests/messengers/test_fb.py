"""Facebook pages against a fake Graph API on loopback."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from dispatcher.api import register_messenger_objects
from messengers.exceptions import PermanentError
from messengers.fb import FacebookMessenger, get_page_tokens
from tests.fakes.facebook import FakeGraph, graph_error

from .conftest import delay, deliver, errors

pytestmark = pytest.mark.django_db

PAGE_TOKEN = "EAAB-page-token-secret-0001"
VERSION = "v21.0"


@pytest.fixture
def fake(serve):
    app = FakeGraph(VERSION, "1122334455", PAGE_TOKEN)
    app.server = serve(app)
    app.base_url = app.server.url
    register_messenger_objects(FacebookMessenger(PAGE_TOKEN, api_base=app.server.url))
    return app


def test_text_is_posted_as_message_to_the_token_page(fake):
    [dispatch] = deliver("fb", "Hi there!", "")
    assert dispatch.status == "sent"
    [request] = fake.server.received
    assert (request.method, request.path) == ("POST", f"/{VERSION}/me/feed")
    assert request.form == {"message": "Hi there!", "access_token": PAGE_TOKEN}
    assert "access_token" not in request.url  # the token travels in the body
    assert dispatch.result["post_id"].endswith("_1")  # the Graph API's id of the post


def test_a_url_is_posted_as_link_to_the_configured_page_with_appsecret_proof(fake):
    register_messenger_objects(FacebookMessenger(PAGE_TOKEN, "1122334455", api_version="v21.0",
                                                 app_secret="app-secret-777", api_base=fake.server.url))
    [dispatch] = deliver("fb", "https://example.org/news/1", "")
    assert dispatch.status == "sent"
    [request] = fake.server.received
    assert request.path == f"/{VERSION}/1122334455/feed"
    proof = hmac.new(b"app-secret-777", PAGE_TOKEN.encode(), hashlib.sha256).hexdigest()
    assert request.form == {"link": "https://example.org/news/1", "access_token": PAGE_TOKEN,
                            "appsecret_proof": proof}


def test_api_version_is_configurable(fake):
    fake.version = "v22.0"
    register_messenger_objects(FacebookMessenger(PAGE_TOKEN, api_version="v22.0", api_base=fake.server.url))
    assert deliver("fb", "Hi", "")[0].status == "sent"
    assert fake.server.received[0].path == "/v22.0/me/feed"


@pytest.mark.parametrize(("code", "status"), [(1, 500), (2, 503)])
def test_unknown_and_service_errors_are_temporary(fake, code, status):
    fake.replies = [graph_error(code, "An unexpected error has occurred. Please retry your request later.",
                                status, is_transient=True)]
    [dispatch] = deliver("fb", "Hi", "")
    assert dispatch.status == "error"
    assert f"error {code}" in errors(dispatch)[0].text


@pytest.mark.parametrize("code", [4, 17, 32, 613])
def test_throttling_is_retried_after_the_default_delay(fake, code):
    fake.replies = [graph_error(code, "Application request limit reached")]
    [dispatch] = deliver("fb", "Hi", "")
    assert dispatch.status == "error"
    assert 590 <= delay(dispatch) <= 600
    assert "throttled" in errors(dispatch)[0].text


def test_throttling_delay_comes_from_the_usage_header(fake):
    usage = {"1122334455": [{"type": "pages", "call_count": 100, "total_cputime": 10, "total_time": 10,
                             "estimated_time_to_regain_access": 19}]}
    fake.replies = [graph_error(32, "Page request limit reached",
                                headers={"X-Business-Use-Case-Usage": json.dumps(usage)})]
    [dispatch] = deliver("fb", "Hi", "")
    assert 19 * 60 - 10 <= delay(dispatch) <= 19 * 60


@pytest.mark.parametrize(("code", "expected"), [
    (190, "page token expired or was revoked"), (10, "error 10"), (200, "error 200"),
    (299, "error 299"), (506, "error 506"),
])
def test_permission_token_and_duplicate_errors_are_permanent(fake, code, expected):
    fake.replies = [graph_error(code, "Refused")]
    [dispatch] = deliver("fb", "Hi", "")
    assert dispatch.status == "failed"
    assert expected in errors(dispatch)[0].text


def test_a_revoked_token_fails_without_showing_it(fake):
    register_messenger_objects(FacebookMessenger("EAAB-revoked-token-9999", api_base=fake.server.url))
    [dispatch] = deliver("fb", "Hi", "")
    assert dispatch.status == "failed"
    assert "error 190" in errors(dispatch)[0].text
    assert "EAAB-revoked-token-9999" not in errors(dispatch)[0].text


def test_page_tokens_from_app_credentials_and_a_user_token(fake):
    fake.app_id, fake.app_secret, fake.user_token = "app-1", "app-secret-xyz", "EAAshort-user-token"
    fake.pages = [{"id": str(i), "name": f"Page {i}", "access_token": f"EAApage-{i}", "category": "News"}
                  for i in range(3)]
    pages = get_page_tokens("app-1", "app-secret-xyz", "EAAshort-user-token", api_base=fake.server.url)
    assert [(p["id"], p["access_token"]) for p in pages] == [("0", "EAApage-0"), ("1", "EAApage-1"),
                                                             ("2", "EAApage-2")]
    exchange, first, second = fake.server.received
    assert exchange.path == f"/{VERSION}/oauth/access_token"
    assert exchange.query == {"grant_type": "fb_exchange_token", "client_id": "app-1",
                              "client_secret": "app-secret-xyz", "fb_exchange_token": "EAAshort-user-token"}
    assert first.query["access_token"] == second.query["access_token"] == fake.long_lived_user_token
    assert second.query["after"] == "2"  # the second page of /me/accounts was followed


def test_page_tokens_with_a_wrong_app_secret_raise(fake):
    fake.app_id, fake.app_secret, fake.user_token = "app-1", "app-secret-xyz", "EAAshort-user-token"
    with pytest.raises(PermanentError, match="error 101") as raised:
        get_page_tokens("app-1", "wrong-secret-abc", "EAAshort-user-token", api_base=fake.server.url)
    assert "wrong-secret-abc" not in str(raised.value)
