"""The JSON API through Django's test client, with two users (and an intruder)."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from dispatcher.inbox.api import Inbox, PrivateMessage, pm_write
from dispatcher.models import Dispatch

pytestmark = pytest.mark.django_db


def url(name: str, *args) -> str:
    return reverse(f"dispatcher:api:{name}", args=args)


class Api:
    """A logged-in browser that sends the CSRF token the way a script would."""

    def __init__(self, user):
        self.client = Client(enforce_csrf_checks=True)
        self.client.force_login(user)
        self.user = user

    def get(self, name: str, *args, **params):
        return self.client.get(url(name, *args), params)

    def token(self) -> str:
        if "csrftoken" not in self.client.cookies:
            self.get("unread-count")  # any GET of the API sets the cookie
        return self.client.cookies["csrftoken"].value

    def post(self, name: str, *args, data=None, csrf: bool = True):
        headers = {"X-CSRFToken": self.token()} if csrf else {}
        return self.client.post(url(name, *args), json.dumps(data or {}),
                                content_type="application/json", headers=headers)


@pytest.fixture
def ann(users):
    return Api(users.ann)


@pytest.fixture
def bob(users):
    return Api(users.bob)


@pytest.fixture
def cat(users):
    return Api(users.cat)


def no_cache(response) -> bool:
    return "no-cache" in response["Cache-Control"] and "private" in response["Cache-Control"]


def test_unread_count(users, ann, bob):
    assert bob.get("unread-count").json() == {"unread_count": 0}
    for i in range(3):
        pm_write(users.ann, users.bob, f"m{i}")
    response = bob.get("unread-count")
    assert response.status_code == 200 and response.json() == {"unread_count": 3}
    assert no_cache(response)
    assert ann.get("unread-count").json() == {"unread_count": 0}


@pytest.mark.parametrize(
    ("method", "name", "args"),
    [
        ("get", "unread-count", ()), ("get", "inbox", ()), ("get", "message", (1,)),
        ("get", "thread", (1,)), ("get", "conversations", ()), ("get", "conversation", (1,)),
        ("post", "mark-read", (1,)), ("post", "send", ()), ("post", "delete", (1,)),
    ],
)
def test_anonymous_requests_get_401_json_never_cached(method, name, args):
    client = Client()  # CSRF not enforced: the 401 is about the missing login
    response = getattr(client, method)(url(name, *args))
    assert response.status_code == 401
    assert response.json() == {"error": "authentication required"}
    assert no_cache(response)


def test_inbox_list_unread_and_limit(users, bob):
    messages = [pm_write(users.ann, users.bob, f"m{i}", f"body {i}") for i in range(4)]
    Inbox.read_message(messages[0], users.bob)
    data = bob.get("inbox").json()
    assert data["folder"] == "inbox"
    assert [m["subject"] for m in data["messages"]] == ["m3", "m2", "m1", "m0"]
    first = data["messages"][0]
    assert (first["sender"], first["recipient"], first["body"], first["read_at"]) == (
        "ann", "bob", "body 3", None
    )
    assert "moderation_status" not in first  # moderation is the sender's business
    assert [m["subject"] for m in bob.get("inbox", unread="").json()["messages"]] == ["m3", "m2", "m1"]
    assert [m["subject"] for m in bob.get("inbox", unread="1", limit="2").json()["messages"]] == ["m3", "m2"]
    assert len(bob.get("inbox", unread="0").json()["messages"]) == 4


def test_limit_is_bounded(users, bob, settings):
    settings.DISPATCHER_INBOX_API_MAX_LIMIT = 5
    for value in ("0", "6", "-1", "many"):
        response = bob.get("inbox", limit=value)
        assert response.status_code == 400 and "limit" in response.json()["error"]
    for i in range(7):
        pm_write(users.ann, users.bob, f"m{i}", skip_notification=True)
    assert len(bob.get("inbox").json()["messages"]) == 5  # the default is bounded too
    assert len(bob.get("inbox", limit="5").json()["messages"]) == 5


def test_other_folders(users, ann):
    sent = pm_write(users.ann, users.bob, "sent")
    archived = pm_write(users.ann, users.bob, "archived", auto_archive=True)
    deleted = pm_write(users.ann, users.bob, "deleted", auto_delete=True)
    for folder, expected in (("sent", sent), ("archives", archived), ("trash", deleted)):
        data = ann.get("inbox", folder=folder).json()
        assert [m["id"] for m in data["messages"]] == [expected.pk]
    assert ann.get("inbox", folder="drafts").status_code == 400


def test_inbox_query_count_does_not_grow_with_the_list(users, bob):
    def queries(n: int) -> int:
        PrivateMessage.objects.all().delete()
        for i in range(n):
            pm_write(users.ann if i % 2 else users.cat, users.bob, f"m{i}", skip_notification=True)
        with CaptureQueriesContext(connection) as ctx:
            response = bob.get("inbox", limit="100")
        assert len(response.json()["messages"]) == n
        return len(ctx.captured_queries)

    assert queries(3) == queries(40)


def test_a_message_of_someone_else_is_404(users, ann, bob, cat):
    message = pm_write(users.ann, users.bob, "private", "for bob only")
    assert bob.get("message", message.pk).json()["message"]["body"] == "for bob only"
    assert ann.get("message", message.pk).json()["message"]["moderation_status"] == "accepted"
    for name in ("message", "thread"):
        response = cat.get(name, message.pk)
        assert response.status_code == 404 and response.json() == {"error": "no such message"}
    for name in ("mark-read", "archive", "delete"):
        assert cat.post(name, message.pk).status_code == 404
    assert cat.get("message", message.pk + 999).status_code == 404
    message.refresh_from_db()
    assert (message.read_at, message.recipient_archived, message.recipient_deleted_at) == (None, False, None)


def test_a_pending_message_is_404_for_its_recipient(users, bob, settings):
    settings.DISPATCHER_INBOX_AUTO_MODERATE_AS = None
    message = pm_write(users.ann, users.bob, "wait", auto_moderators=[lambda m: None])
    assert bob.get("message", message.pk).status_code == 404
    assert bob.post("mark-read", message.pk).status_code == 404


def test_reading_a_message_with_get_does_not_mark_it_read(users, bob):
    message = pm_write(users.ann, users.bob, "hi")
    bob.get("message", message.pk)
    bob.get("inbox")
    message.refresh_from_db()
    assert message.read_at is None


def test_mark_read_needs_post_and_csrf(users, ann, bob):
    message = pm_write(users.ann, users.bob, "hi")
    assert bob.client.get(url("mark-read", message.pk)).status_code == 405
    assert bob.post("mark-read", message.pk, csrf=False).status_code == 403  # no CSRF token
    message.refresh_from_db()
    assert message.read_at is None

    response = bob.post("mark-read", message.pk)
    assert response.status_code == 200 and response.json()["message"]["read_at"] is not None
    assert no_cache(response)
    assert bob.get("unread-count").json() == {"unread_count": 0}


def test_only_the_recipient_can_mark_read(users, ann):
    message = pm_write(users.ann, users.bob, "hi")
    response = ann.post("mark-read", message.pk)
    assert response.status_code == 403 and "only the recipient" in response.json()["error"]
    message.refresh_from_db()
    assert message.read_at is None


def test_send(users, ann, bob):
    response = ann.post("send", data={"recipient": "bob", "subject": "Hi", "body": "Hello Bob"})
    assert response.status_code == 201
    data = response.json()["message"]
    assert (data["sender"], data["recipient"], data["moderation_status"]) == ("ann", "bob", "accepted")
    assert bob.get("unread-count").json() == {"unread_count": 1}
    assert list(Dispatch.objects.values_list("address", flat=True)) == ["bob@example.org"]

    # A reply: the recipient comes from the parent, the thread too.
    reply = bob.post("send", data={"parent": data["id"], "body": "Hello Ann"}).json()["message"]
    assert (reply["recipient"], reply["parent_id"], reply["thread_id"]) == ("ann", data["id"], data["id"])
    assert ann.get("message", data["id"]).json()["message"]["replied_at"] is not None
    thread = ann.get("thread", data["id"]).json()["messages"]
    assert [m["body"] for m in thread] == ["Hello Bob", "Hello Ann"]


def test_send_as_a_form_post(users, ann):
    ann.get("unread-count")
    response = ann.client.post(url("send"), {"recipient_id": users.bob.pk, "subject": "Form"},
                               headers={"X-CSRFToken": ann.token()})
    assert response.status_code == 201 and response.json()["message"]["recipient"] == "bob"


def test_send_refuses_bad_requests(users, ann, cat):
    assert ann.post("send", data={"recipient": "bob", "subject": "x"}, csrf=False).status_code == 403
    assert ann.client.get(url("send")).status_code == 405
    for data, error in (
        ({"subject": "nobody"}, "recipient"),
        ({"recipient": "nobody", "subject": "x"}, "no such recipient"),
        ({"recipient": "ann", "subject": "x"}, "yourself"),
        ({"recipient": "bob"}, "subject or a body"),
        ({"recipient": "bob", "subject": ["a", "list"]}, "subject must be a string"),
        ({"recipient": "bob", "subject": "x" * 200}, "longer than 120"),
    ):
        response = ann.post("send", data=data)
        assert response.status_code == 400 and error in response.json()["error"], data
    message = pm_write(users.ann, users.bob, "between ann and bob")
    # cat cannot reply into a conversation she is not part of
    assert cat.post("send", data={"parent": message.pk, "body": "me too"}).status_code == 404
    assert PrivateMessage.objects.count() == 1


def test_send_applies_the_auto_moderators_setting(users, ann, settings):
    settings.DISPATCHER_INBOX_AUTO_MODERATORS = ["tests.inbox.test_views.no_shouting"]
    data = ann.post("send", data={"recipient": "bob", "subject": "HELLO"}).json()["message"]
    assert (data["moderation_status"], data["moderation_reason"]) == ("rejected", "no shouting")
    # No opinion: DISPATCHER_INBOX_AUTO_MODERATE_AS decides (None: a moderator will).
    data = ann.post("send", data={"recipient": "bob", "subject": "hello"}).json()["message"]
    assert data["moderation_status"] == "pending"
    settings.DISPATCHER_INBOX_AUTO_MODERATE_AS = True
    data = ann.post("send", data={"recipient": "bob", "subject": "hello"}).json()["message"]
    assert data["moderation_status"] == "accepted"


def no_shouting(message):
    return (0, "no shouting") if message.subject.isupper() else None


def test_conversations_and_conversation(users, ann, bob, cat):
    Inbox.send_message(users.ann, users.bob, "1")
    Inbox.send_message(users.bob, users.ann, "2")
    Inbox.send_message(users.cat, users.ann, "3")
    data = ann.get("conversations").json()["conversations"]
    assert [c["username"] for c in data] == ["cat", "bob"]
    assert no_cache(ann.get("conversations"))

    messages = ann.get("conversation", users.bob.pk).json()["messages"]
    assert [m["body"] for m in messages] == ["1", "2"]
    latest = ann.get("conversation", users.bob.pk, limit="1", reversed="1").json()["messages"]
    assert [m["body"] for m in latest] == ["2"]
    # A GET never marks anything read.
    assert ann.get("unread-count").json() == {"unread_count": 2}
    # cat sees only her own conversation with bob: none.
    assert cat.get("conversation", users.bob.pk).json() == {"messages": []}
    # An unknown user id answers as an unrelated user does: nothing tells them apart.
    assert ann.get("conversation", "999999").json() == {"messages": []}
    assert ann.get("conversation", "abc").status_code == 404


def test_archive_and_delete_act_on_the_users_side_only(users, ann, bob):
    message = pm_write(users.ann, users.bob, "hi")
    assert bob.client.get(url("delete", message.pk)).status_code == 405
    data = bob.post("delete", message.pk).json()["message"]
    assert data["deleted"] is True
    assert bob.get("inbox").json()["messages"] == []
    assert [m["id"] for m in bob.get("inbox", folder="trash").json()["messages"]] == [message.pk]
    assert [m["id"] for m in ann.get("inbox", folder="sent").json()["messages"]] == [message.pk]
    bob.post("undelete", message.pk)
    bob.post("archive", message.pk)
    assert [m["id"] for m in bob.get("inbox", folder="archives").json()["messages"]] == [message.pk]
    bob.post("unarchive", message.pk)
    assert [m["id"] for m in bob.get("inbox").json()["messages"]] == [message.pk]
