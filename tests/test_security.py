"""The standing check: every URL the project mounts, against hostile callers.

Each URL is requested as an anonymous visitor, as an ordinary user and as
staff, with wrong methods, bad ids, missing CSRF tokens, and oversized,
malformed, deeply nested and unstorable bodies. Whatever the answer, it is
never a 500; where JSON is promised it is JSON; a GET (HEAD, OPTIONS)
changes nothing; a POST without a CSRF token changes nothing where CSRF
applies; and nobody sees another user's private data.

Every URL must have a row in ``ROUTES`` (the admin's are Django's, covered as
a family): :func:`test_every_mounted_url_is_in_the_table` fails for a new view
until it is added, with what it promises.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.test import Client
from django.urls import get_resolver, reverse
from django.urls.resolvers import URLPattern, URLResolver

from dispatcher import links
from dispatcher.api import schedule_messages
from dispatcher.feed.models import Notification
from dispatcher.inbox.api import PrivateMessage, pm_write
from dispatcher.inbox.models import Block
from dispatcher.model_events import subscribe_to_model_event
from dispatcher.models import Dispatch, DispatchError, Message, ModelEventSubscription, Subscription
from dispatcher.subscriptions import subscribe
from tests.testapp.message_types import NewsletterMessage
from tests.testapp.models import Profile

pytestmark = pytest.mark.django_db

#: In everything that belongs to bob alone: nobody else may ever be shown it.
SECRET = "BOBSECRET"
CSRF_SECRET = "s" * 32  # a CSRF cookie value and the header that matches it
BAD_IDS = ["abc", "-1", "0", "1.5", "99999999999999999999999", "\x00", "%2e%2e"]


# -- the world the requests run in -------------------------------------------------------------
def make_world(django_user_model: Any) -> SimpleNamespace:
    make = django_user_model.objects.create_user
    ann = make("ann", "ann@example.org", "pw")
    bob = make("bob", f"{SECRET.lower()}@example.org", "pw")
    cat = make("cat", "cat@example.org", "pw")
    staff = django_user_model.objects.create_superuser("staff", "staff@example.org", "pw")
    to_ann = pm_write(bob, ann, "hello ann", "a message ann may read")
    from_ann = pm_write(ann, bob, "hello bob", "a message ann wrote")
    bobs = pm_write(bob, cat, f"{SECRET} subject", f"{SECRET} body")  # ann is no party to it
    subscribe("newsletter", "smtp", ann)
    subscribe("newsletter", "smtp", bob)
    [(newsletter, dispatches)] = schedule_messages(NewsletterMessage({"text": "Issue"}))
    anns_dispatch = next(d for d in dispatches if d.recipient_id == ann.pk)
    bobs_dispatch = next(d for d in dispatches if d.recipient_id == bob.pk)
    DispatchError.objects.create(dispatch=bobs_dispatch, attempt=1, error_class="X", text="boom")
    profile = Profile.objects.create(full_name="Public", bio=f"{SECRET} bio", user=bob)
    event_sub = subscribe_to_model_event(Profile, "edit", bob, object_id=profile.pk)
    anns_item = Notification.objects.create(recipient=ann, subject="for ann", text="ann's own")
    bobs_item = Notification.objects.create(recipient=bob, subject=f"{SECRET} item", text=f"{SECRET} text")
    return SimpleNamespace(anns_item=anns_item, bobs_item=bobs_item,
        ann=ann, bob=bob, cat=cat, staff=staff, to_ann=to_ann, from_ann=from_ann, bobs=bobs,
        newsletter=newsletter, anns_dispatch=anns_dispatch, bobs_dispatch=bobs_dispatch,
        profile=profile, event_sub=event_sub,
    )


def snapshot() -> tuple:
    """Everything a request could change that a GET must not."""
    return (
        list(PrivateMessage.objects.order_by("pk").values_list(
            "pk", "subject", "body", "read_at", "replied_at", "sender_archived", "recipient_archived",
            "sender_deleted_at", "recipient_deleted_at", "moderation_status")),
        list(Subscription.objects.order_by("pk").values_list("pk", "message_type", "messenger",
                                                             "recipient", "address")),
        list(ModelEventSubscription.objects.order_by("pk").values_list("pk", "active", "fired_count",
                                                                       "filters", "body_template")),
        list(Dispatch.objects.order_by("pk").values_list("pk", "status", "attempts", "next_attempt_at",
                                                         "queued_at")),
        list(Dispatch.objects.order_by("pk").values_list("pk", "read_at")),
        Message.objects.count(),
        list(Profile.objects.order_by("pk").values_list("pk", "full_name", "bio")),
        list(get_user_model().objects.order_by("pk").values_list(
            "pk", "username", "email", "is_active", "is_staff", "password")),
        list(Block.objects.order_by("pk").values_list("pk", "blocker", "blocked")),
        list(Notification.objects.order_by("pk").values_list("pk", "recipient", "read_at", "subject")),
    )


READ_AT = 4  # the index in snapshot() of the one thing the read pixel may change on a GET


# -- the table -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Route:
    """What one URL promises. ``kwargs`` gives the URL arguments of a valid
    request (from ann's side); ``bad`` the hostile ones."""

    answers: str  # "json", "html", "gif", "text" or "any"
    kwargs: Callable[[SimpleNamespace], dict[str, Any]] = lambda w: {}
    bad: Callable[[SimpleNamespace], list[dict[str, Any]]] = lambda w: []
    #: A GET with a documented effect: the snapshot index it may change.
    get_effect: int | None = None
    #: csrf_exempt by design (authorised otherwise): a POST without a token may act.
    csrf_exempt: bool = False
    #: Staff may see other users' data here (the admin, the operators' dashboard).
    staff_sees_all: bool = False
    #: Hostile bodies to send (the admin's forms get fewer: they are Django's).
    bodies: tuple[str, ...] = ("json", "nested", "surrogate", "nul", "big", "multipart", "garbage")
    #: The other wrong methods to try.
    methods: tuple[str, ...] = ("put", "patch", "delete")
    extra_paths: Callable[[SimpleNamespace], list[str]] = field(default=lambda w: [])


def pk(name: str, key: str = "pk") -> Callable[[SimpleNamespace], dict[str, Any]]:
    return lambda w: {key: getattr(w, name).pk}


def bad_ids(key: str) -> Callable[[SimpleNamespace], list[dict[str, Any]]]:
    # bob's message (ann is no party to it) is as bad an id as a malformed one.
    return lambda w: [{key: w.bobs.pk}] + [{key: value} for value in BAD_IDS]


def token(action: str) -> Callable[[SimpleNamespace], dict[str, Any]]:
    return lambda w: {"token": links.make_token(w.anns_dispatch.pk, action)}


def bad_tokens(action: str) -> Callable[[SimpleNamespace], list[dict[str, Any]]]:
    def make(w: SimpleNamespace) -> list[dict[str, Any]]:
        good = links.make_token(w.anns_dispatch.pk, action)
        other = links.make_token(w.anns_dispatch.pk, links.READ if action == links.UNSUBSCRIBE else
                                 links.UNSUBSCRIBE)
        return [{"token": t} for t in (good[:-3] + "AAA", other, "x", "\x00", "a" * 3000,
                                       links.make_token(10**30, action))]
    return make


def bad_item_ids(w: SimpleNamespace) -> list[dict[str, Any]]:
    return [{"pk": w.bobs_item.pk}] + [{"pk": value} for value in BAD_IDS]


API_BAD_PATHS = ["/dispatcher/api/nope/", "/dispatcher/api/messages/1/x/", "/dispatcher/api/messages",
                 "/dispatcher/api/%00/"]

ROUTES: dict[str, Route] = {
    "dispatcher:api:unread-count": Route("json"),
    "dispatcher:api:inbox": Route("json", extra_paths=lambda w: [
        "/dispatcher/api/messages/?folder=%00&limit=99999999999999999999",
        "/dispatcher/api/messages/?limit=-1&unread=%ff", "/dispatcher/api/messages/?folder=trash&limit=5"]),
    "dispatcher:api:send": Route("json"),
    "dispatcher:api:message": Route("json", pk("to_ann"), bad_ids("pk")),
    "dispatcher:api:thread": Route("json", pk("to_ann"), bad_ids("pk")),
    "dispatcher:api:mark-read": Route("json", pk("to_ann"), bad_ids("pk")),
    "dispatcher:api:archive": Route("json", pk("to_ann"), bad_ids("pk")),
    "dispatcher:api:unarchive": Route("json", pk("to_ann"), bad_ids("pk")),
    "dispatcher:api:delete": Route("json", pk("to_ann"), bad_ids("pk")),
    "dispatcher:api:undelete": Route("json", pk("to_ann"), bad_ids("pk")),
    "dispatcher:api:conversations": Route("json"),
    "dispatcher:api:conversation": Route(
        "json", pk("bob", "user_id"),
        lambda w: [{"user_id": w.cat.pk}] + [{"user_id": value} for value in BAD_IDS]),
    "dispatcher:api:not-found": Route("json", extra_paths=lambda w: API_BAD_PATHS),
    "dispatcher:dashboard": Route("html", staff_sees_all=True, extra_paths=lambda w: [
        "/dispatcher/ops/?limit=abc&messenger=%00", "/dispatcher/ops/?limit=99999999999999999999"]),
    "dispatcher:dashboard-retry": Route("any", staff_sees_all=True),
    "dispatcher:metrics": Route("text", staff_sees_all=True),
    "dispatcher:unsubscribe": Route("html", token(links.UNSUBSCRIBE), bad_tokens(links.UNSUBSCRIBE)),
    "dispatcher:unsubscribe-one-click": Route(
        "text", token(links.UNSUBSCRIBE), bad_tokens(links.UNSUBSCRIBE), csrf_exempt=True),
    "dispatcher:read-pixel": Route("gif", token(links.READ), bad_tokens(links.READ), get_effect=READ_AT),
    "dispatcher:preferences": Route("any"),
    # The private-message pages (HTML): ann's message to see, bob's as a bad id.
    "inbox:index": Route("any"),
    "inbox:inbox": Route("html", extra_paths=lambda w: [
        "/messages/inbox/?page=%00&unread=%ff", "/messages/inbox/?page=99999999999999999999"]),
    "inbox:sent": Route("html", extra_paths=lambda w: ["/messages/sent/?page=-1"]),
    "inbox:archives": Route("html"),
    "inbox:trash": Route("html"),
    "inbox:write": Route("html", extra_paths=lambda w: [
        "/messages/write/bob:%00/", "/messages/write/?to=%00&subject=%ff&body=" + "x" * 3000]),
    "inbox:reply": Route("html", pk("to_ann", "message_id"), bad_ids("message_id")),
    "inbox:view": Route("html", pk("to_ann", "message_id"), bad_ids("message_id")),
    "inbox:view_conversation": Route("html", pk("to_ann", "thread_id"), bad_ids("thread_id")),
    "inbox:archive": Route("any"),
    "inbox:unarchive": Route("any"),
    "inbox:delete": Route("any"),
    "inbox:undelete": Route("any"),
    "inbox:mark-read": Route("any"),
    "inbox:mark-unread": Route("any"),
    "inbox:blocks": Route("html"),
    "inbox:unblock": Route("any"),
    # The in-app feed: its page and JSON API; bob's item as a bad id.
    "feed:list": Route("html", extra_paths=lambda w: ["/notifications/?page=%00&unread=%ff"]),
    "feed:mark-read": Route("any"),
    "feed:mark-unread": Route("any"),
    "feed:mark-all-read": Route("any"),
    "feed:delete": Route("any"),
    "feed:api-unread-count": Route("json"),
    "feed:api-list": Route("json", extra_paths=lambda w: [
        "/notifications/api/notifications/?limit=-1&unread=%ff",
        "/notifications/api/notifications/?limit=%00"]),
    "feed:api-mark-all-read": Route("json"),
    "feed:api-detail": Route("json", pk("anns_item"), bad_item_ids),
    "feed:api-mark-read": Route("json", pk("anns_item"), bad_item_ids),
    "feed:api-delete": Route("json", pk("anns_item"), bad_item_ids),
    "feed:api-not-found": Route("json", extra_paths=lambda w: [
        "/notifications/api/nope/", "/notifications/api/notifications/1/x/", "/notifications/api/%00/"]),
    # The demo site's own pages.
    "home": Route("any"),
    "login": Route("html"),
    "logout": Route("any"),
    # Providers' webhooks: authorised by basic auth, a path token or Twilio's signature, not a session.
    "dispatcher:receipts-postmark": Route("text", csrf_exempt=True),
    "dispatcher:receipts-postmark-token": Route(
        "text", lambda w: {"token": "not-the-token"},
        lambda w: [{"token": t} for t in ("\x00", "a" * 3000, "%2e%2e")], csrf_exempt=True),
    "dispatcher:receipts-twilio": Route("text", csrf_exempt=True),
    # Staff's JSON for the suppression list (anonymous: the login page).
    "dispatcher:suppressions": Route("any", staff_sees_all=True, extra_paths=lambda w: [
        "/dispatcher/suppressions/?address=%00", "/dispatcher/suppressions/?address=" + "a" * 3000,
        "/dispatcher/suppressions/?address=x%40example.org&kind=%ff"]),
    "dispatcher:suppressions-remove": Route("any", staff_sees_all=True),
}

#: The admin is Django's: every URL it mounts is walked, with fewer bodies and methods.
ADMIN = Route("any", staff_sees_all=True, bodies=("garbage", "nul"), methods=("delete",))


# -- walking the URLs ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Mounted:
    name: str
    route: str
    pattern: URLPattern


def mounted() -> list[Mounted]:
    def walk(patterns: Iterable[Any], prefix: str, namespace: str) -> Iterator[Mounted]:
        for p in patterns:
            if isinstance(p, URLResolver):
                ns = f"{namespace}:{p.namespace}".strip(":") if p.namespace else namespace
                yield from walk(p.url_patterns, prefix + str(p.pattern), ns)
            else:
                name = f"{namespace}:{p.name}".strip(":") if p.name else ""
                yield Mounted(name, prefix + str(p.pattern), p)

    return list(walk(get_resolver().url_patterns, "", ""))


def route_for(m: Mounted) -> Route | None:
    if m.name.startswith("admin:") or m.route.startswith("admin/"):
        return ADMIN
    return ROUTES.get(m.name)


def test_every_mounted_url_is_in_the_table():
    missing = [f"{m.name or '(unnamed)'} {m.route}" for m in mounted() if route_for(m) is None]
    assert not missing, f"add these views to ROUTES in {__name__}: {missing}"
    stale = set(ROUTES) - {m.name for m in mounted()}
    assert not stale, f"ROUTES names views that are not mounted: {stale}"


def admin_kwargs(m: Mounted, w: SimpleNamespace) -> dict[str, Any] | None:
    keys = set(m.pattern.pattern.converters) | set(m.pattern.pattern.regex.groupindex)
    if not keys:
        return {}
    model_admin = getattr(m.pattern.callback, "model_admin", None)
    model = model_admin.model if model_admin is not None else None
    kwargs: dict[str, Any] = {}
    for key in keys:
        if key in ("object_id", "id"):
            first = model._default_manager.order_by("pk").first() if model is not None else None
            kwargs[key] = first.pk if first is not None else 1
        elif key == "app_label":
            kwargs[key] = "dispatcher"
        elif key == "content_type_id":
            kwargs[key] = ContentType.objects.get_for_model(Dispatch).pk
        elif key == "url":
            kwargs[key] = "nope/"
        else:
            return None
    return kwargs


def paths_for(m: Mounted, r: Route, w: SimpleNamespace) -> tuple[list[str], list[str]]:
    """The valid paths and the hostile ones of a mounted URL."""
    if r is ADMIN:
        kwargs = admin_kwargs(m, w)
        if kwargs is None:
            return [], []
        valid = [reverse(m.name, kwargs=kwargs)] if m.name else ["/" + m.route.lstrip("^").rstrip("$")
                                                                   .replace("(?P<url>.*)", "nope/")]
        bad = []
        for key in ("object_id", "id"):
            if m.name and key in kwargs:
                bad = [reverse(m.name, kwargs={**kwargs, key: v}) for v in ("-1", "\x00")]
        return valid, bad
    valid = [reverse(m.name, kwargs=r.kwargs(w))] if "^.*$" not in m.route else []
    bad = [reverse(m.name, kwargs=kw) for kw in r.bad(w)] + r.extra_paths(w)
    return valid, bad


# -- the requests ---------------------------------------------------------------------------------
def body(kind: str) -> tuple[bytes | str, str]:
    bodies: dict[str, tuple[bytes | str, str]] = {
        "json": (json.dumps({"recipient": "bob", "subject": "hi", "body": "x", "pref": "newsletter:smtp"}),
                 "application/json"),
        "nested": ("[" * 50_000 + "]" * 50_000, "application/json"),
        "surrogate": (r'{"recipient": "bob\ud800", "subject": "\udfff", "body": "\u0000"}',
                      "application/json"),
        "nul": ("recipient=bob&subject=a%00b&pref=newsletter%00&dispatch=%00&List-Unsubscribe=One-Click%00",
                "application/x-www-form-urlencoded"),
        "big": ("x=" + "y" * 3_000_000, "application/x-www-form-urlencoded"),
        "multipart": (b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n--b",
                      "multipart/form-data; boundary=b"),
        "garbage": (b"\xff\xfe\x00garbage{", "application/json"),
    }
    return bodies[kind]


def client_for(user: Any) -> Client:
    client = Client(enforce_csrf_checks=True, raise_request_exception=False)
    if user is not None:
        client.force_login(user)
    client.cookies[settings.CSRF_COOKIE_NAME] = CSRF_SECRET
    return client


@dataclass
class Findings:
    problems: list[str] = field(default_factory=list)

    def check(self, condition: bool, what: str) -> None:
        if not condition:
            self.problems.append(what)


def exercise(m: Mounted, r: Route, w: SimpleNamespace, findings: Findings) -> int:
    valid, bad = paths_for(m, r, w)
    identities = {"anonymous": None, "ann": w.ann, "staff": w.staff}
    count = 0
    for who, user in identities.items():
        for path in valid + bad:
            client = client_for(user)
            csrf = {"X-CSRFToken": CSRF_SECRET}

            def judge(response: Any, how: str, path: str = path, who: str = who) -> None:
                where = f"{who} {how} {path[:80]!r} -> {response.status_code}"
                findings.check(response.status_code < 500, f"server error: {where}")
                content_type = response.get("Content-Type", "")
                if r.answers == "json":
                    findings.check(content_type.startswith("application/json"),
                                   f"not JSON ({content_type}): {where}")
                if r.answers == "gif" and response.status_code == 200:
                    findings.check(content_type == "image/gif", f"not a GIF: {where}")
                if not (who == "staff" and r.staff_sees_all):
                    text = response.content.decode("utf-8", "replace")
                    findings.check(SECRET.lower() not in text.lower(), f"another user's data: {where}")

            before = snapshot()
            for method in ("get", "head", "options"):
                judge(getattr(client, method)(path), method.upper())
                count += 1
            after = snapshot()
            if r.get_effect is not None:
                before, after = (tuple(v for i, v in enumerate(state) if i != r.get_effect)
                                 for state in (before, after))
            findings.check(before == after, f"a GET changed state: {who} {path[:80]!r}")

            before = snapshot()
            data, content_type = body("json")
            judge(client.post(path, data, content_type=content_type), "POST without CSRF")
            count += 1
            if not r.csrf_exempt:
                findings.check(snapshot() == before,
                               f"a POST without CSRF changed state: {who} {path[:80]!r}")
            for method in r.methods:
                judge(getattr(client, method)(path, data, content_type=content_type, headers=csrf),
                      method.upper())
                count += 1
            for kind in r.bodies:
                data, content_type = body(kind)
                judge(client.post(path, data, content_type=content_type, headers=csrf), f"POST {kind}")
                count += 1
    return count


def all_mounted() -> list[Mounted]:
    return mounted()


@pytest.mark.parametrize("m", all_mounted(), ids=lambda m: m.name or m.route)
def test_hostile_requests(m, django_user_model):
    r = route_for(m)
    if r is None:
        pytest.fail(f"{m.name} {m.route} is not in ROUTES")
    w = make_world(django_user_model)
    findings = Findings()
    count = exercise(m, r, w, findings)
    assert count > 0
    assert not findings.problems, "\n".join(findings.problems[:40])
