"""The JSON API against a careless or hostile caller, through Django's test
client: every answer is JSON, no body makes it fail with a 500, ids are
whole numbers, and a conversation does not reveal whether a user exists."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

from dispatcher.inbox.api import InvalidMessage, PrivateMessage, pm_broadcast, pm_write
from dispatcher.models import Message

pytestmark = pytest.mark.django_db

API = "/dispatcher/api/"


def url(name: str, *args) -> str:
    return reverse(f"dispatcher:api:{name}", args=args)


class Api:
    def __init__(self, user):
        self.client = Client(enforce_csrf_checks=True)
        self.client.force_login(user)
        self.client.get(url("unread-count"))  # sets the CSRF cookie
        self.token = self.client.cookies["csrftoken"].value

    def post_raw(self, path: str, body: bytes | str, content_type: str = "application/json",
                 csrf: bool = True):
        headers = {"X-CSRFToken": self.token} if csrf else {}
        return self.client.generic("POST", path, body, content_type=content_type, headers=headers)

    def send(self, data) -> object:
        return self.post_raw(url("send"), json.dumps(data))


@pytest.fixture
def ann(users):
    return Api(users.ann)


def json_error(response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response["Content-Type"] == "application/json", response["Content-Type"]
    body = response.json()
    assert set(body) == {"error"}
    return body["error"]


def nothing_written() -> bool:
    return PrivateMessage.objects.count() == 0 and Message.objects.count() == 0


# -- 3. every answer is JSON -------------------------------------------------------------
@pytest.mark.parametrize(("method", "name", "args"), [
    ("get", "send", ()), ("post", "unread-count", ()), ("put", "message", (1,)),
    ("delete", "message", (1,)), ("patch", "mark-read", (1,)), ("options", "inbox", ()),
    ("head", "send", ()),
])
def test_wrong_method_is_a_json_405(ann, method, name, args):
    response = getattr(ann.client, method)(url(name, *args), headers={"X-CSRFToken": ann.token})
    assert response.status_code == 405
    assert response["Content-Type"] == "application/json"
    assert response["Allow"]
    if method != "head":
        assert "not allowed" in response.json()["error"]


def test_oversized_body_is_a_json_413(ann, settings):
    big = json.dumps({"recipient": "bob", "subject": "big", "body": "x" * 300_000})
    assert "larger than" in json_error(ann.post_raw(url("send"), big), 413)
    # Form-encoded and without a CSRF header: the CSRF check would read the body; it is refused first.
    form = "subject=" + "x" * 300_000
    json_error(ann.post_raw(url("send"), form, "application/x-www-form-urlencoded", csrf=False), 413)
    # Django's own limit, when lower than the API's, answers 413 too.
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    json_error(ann.post_raw(url("send"), json.dumps({"recipient": "bob", "body": "y" * 2000})), 413)
    assert nothing_written()


def test_csrf_failure_is_a_json_403(ann):
    response = ann.post_raw(url("send"), json.dumps({"recipient": "bob", "subject": "x"}), csrf=False)
    assert "CSRF" in json_error(response, 403)
    response = ann.post_raw(url("mark-read", 1), b"", csrf=False)
    assert "CSRF" in json_error(response, 403)
    assert nothing_written()


@pytest.mark.parametrize("bad_id", ["abc", "-1", "0", "1.5", "1e3", "99999999999999999999999", "%00", "%20"])
@pytest.mark.parametrize("name", ["message", "thread", "mark-read", "delete", "conversation"])
def test_malformed_ids_in_the_url_are_json_404s(ann, bad_id, name):
    path = url(name, "X").replace("/X/", f"/{bad_id}/")
    method = ann.client.get if name in ("message", "thread", "conversation") else (
        lambda p: ann.post_raw(p, b""))
    assert "no such" in json_error(method(path), 404)


@pytest.mark.parametrize("path", ["nope/", "messages/1/2/3/", "messages", "conversations/1/x/"])
def test_unknown_paths_under_the_api_are_json_404s(ann, path):
    json_error(ann.client.get(API + path), 404)
    json_error(ann.post_raw(API + path, b"{}", csrf=False), 404)


# -- 4. no body makes it answer 500 ---------------------------------------------------------
@pytest.mark.parametrize("body", [
    "[" * 100_000 + "]" * 100_000,
    '{"recipient": "bob", "subject": ' + "[" * 100_000 + "]" * 100_000 + "}",
    '{"recipient": "bob", "body": ' + '{"a":' * 20_000 + "1" + "}" * 20_000 + "}",
])
def test_deeply_nested_json_is_a_400(ann, body):
    assert "JSON" in json_error(ann.post_raw(url("send"), body), 400)
    assert nothing_written()


@pytest.mark.parametrize("body", [
    r'{"recipient": "bob", "subject": "\ud800"}',
    r'{"recipient": "bob", "body": "lone \udfff surrogate"}',
    r'{"recipient": "bob\ud800", "subject": "x"}',
    r'{"recipient": "bob", "body": "nul \u0000 byte"}',
    r'{"recipient": "bob", "subject": "nul \u0000"}',
    r'{"recipient": "bob\u0000", "subject": "x"}',
])
def test_unstorable_strings_are_a_400(ann, body):
    json_error(ann.post_raw(url("send"), body), 400)
    assert nothing_written()


def test_unstorable_form_fields_and_undecodable_bodies_are_400s(ann):
    form = "application/x-www-form-urlencoded"
    json_error(ann.post_raw(url("send"), "recipient=bob&body=a%00b", form), 400)
    json_error(ann.post_raw(url("send"), b'{"recipient": "bob", "body": "\xff\xfe"}'), 400)
    json_error(ann.post_raw(url("send"), b"--x\r\nbroken", "multipart/form-data; boundary=x"), 400)
    # Without a token in a header, the CSRF check reads the broken body: still JSON.
    json_error(ann.post_raw(url("send"), b"--x\r\nbroken", "multipart/form-data; boundary=x",
                            csrf=False), 403)
    json_error(ann.post_raw(url("send"), b"--x\r\nbroken", "multipart/form-data; boundary=",
                            csrf=False), 400)
    json_error(ann.post_raw(url("send"), b"not json"), 400)
    assert nothing_written()


# -- 5. ids are whole numbers; a conversation reveals no user ---------------------------------
@pytest.mark.parametrize("recipient_id", [1.5, "1.5", True, "1e0", -1, 0, "-2", " 2", 2**70, [2], {"a": 1}])
def test_recipient_id_must_be_a_whole_number(ann, users, recipient_id):
    if recipient_id == 1.5:
        recipient_id = users.bob.pk + 0.5  # would have been rounded down to bob
    json_error(ann.send({"recipient_id": recipient_id, "subject": "x"}), 400)
    assert nothing_written()


def test_whole_number_ids_work(ann, users):
    assert ann.send({"recipient_id": users.bob.pk, "subject": "x"}).status_code == 201
    assert ann.send({"recipient_id": str(users.bob.pk), "subject": "y"}).status_code == 201


def test_parent_must_be_a_whole_number(ann, users):
    m = pm_write(users.bob, users.ann, "hi")
    json_error(ann.send({"parent": m.pk + 0.25, "body": "re"}), 400)
    json_error(ann.send({"parent": True, "body": "re"}), 400)
    assert ann.send({"parent": m.pk, "body": "re"}).status_code == 201


def test_a_conversation_does_not_reveal_whether_a_user_exists(ann, users, django_user_model):
    inactive = django_user_model.objects.create_user("gone", "gone@example.org", is_active=False)
    unknown = max(django_user_model.objects.values_list("pk", flat=True)) + 1000
    answers = []
    for other in (unknown, inactive.pk, users.cat.pk):
        response = ann.client.get(url("conversation", other))
        answers.append((response.status_code, response["Content-Type"], response.content))
    assert answers[0] == answers[1] == answers[2] == (200, "application/json", b'{"messages": []}')


def test_send_to_an_inactive_user_answers_as_to_an_unknown_one(ann, django_user_model):
    inactive = django_user_model.objects.create_user("gone", "gone@example.org", is_active=False)
    by_id = json_error(ann.send({"recipient_id": inactive.pk, "subject": "x"}), 400)
    assert by_id == json_error(ann.send({"recipient_id": inactive.pk + 1000, "subject": "x"}), 400)
    assert json_error(ann.send({"recipient": "gone", "subject": "x"}), 400) == by_id
    assert nothing_written()


# -- 6. a subject is one line ----------------------------------------------------------------------
@pytest.mark.parametrize("subject", ["Hi\r\nBcc: victim@example.org", "Hi\nthere", "Hi\rthere", "tab\there",
                                     "esc\x1b[31m", "line\u2028separator", "nel\x85"])
def test_control_characters_in_a_subject_are_refused_when_written(ann, users, subject):
    with pytest.raises(InvalidMessage, match="one line"):
        pm_write(users.ann, users.bob, subject, "body")
    with pytest.raises(InvalidMessage, match="one line"):
        pm_broadcast(users.ann, [users.bob, users.cat], subject, "body")
    with pytest.raises(InvalidMessage, match="one line"):
        pm_write("visitor@example.org", users.bob, subject)
    assert "one line" in json_error(ann.send({"recipient": "bob", "subject": subject}), 400)
    assert nothing_written()


def test_a_body_keeps_its_lines(ann, users):
    m = pm_write(users.ann, users.bob, "Lunch?", "Line one\r\nLine two\n\tindented")
    assert PrivateMessage.objects.get(pk=m.pk).body == "Line one\r\nLine two\n\tindented"
