"""The private-message pages through Django's test client: folders, view,
write, reply, actions, blocks, and what each page refuses."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.template import Context, Template
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from dispatcher.inbox.api import PrivateMessage, pm_write
from dispatcher.inbox.models import Block

pytestmark = pytest.mark.django_db


def logged_in(user, csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


@pytest.fixture
def ann(users):
    return logged_in(users.ann)


@pytest.fixture
def bob(users):
    return logged_in(users.bob)


def text(response) -> str:
    return response.content.decode()


# -- folders and the header ------------------------------------------------------------------------
def test_inbox_lists_only_the_users_messages_with_the_unread_count(users, bob):
    pm_write(users.ann, users.bob, "Lunch?", "At noon?")
    pm_write(users.ann, users.cat, "Secret for cat", "not for bob")
    page = text(bob.get(reverse("inbox:inbox")))
    assert "Lunch?" in page and "Secret for cat" not in page
    assert re.search(r'id="inbox-unread"[^>]*>1</span>', page)
    assert 'class="unread"' in page


@pytest.mark.parametrize("folder", ["inbox", "sent", "archives", "trash"])
def test_every_folder_renders(users, ann, folder):
    m = pm_write(users.ann, users.bob, "hello", "there")
    PrivateMessage.objects.archive(users.ann, [m]) if folder == "archives" else None
    PrivateMessage.objects.delete_for(users.ann, [m]) if folder == "trash" else None
    response = ann.get(reverse(f"inbox:{folder}"))
    assert response.status_code == 200
    assert ("hello" in text(response)) == (folder != "inbox")


def test_pages_need_a_login(users):
    response = Client().get(reverse("inbox:inbox"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_pagination(users, bob, settings):
    settings.DISPATCHER_INBOX_PAGE_SIZE = 3
    for i in range(7):
        pm_write(users.ann, users.bob, f"message {i}", "x")
    first = text(bob.get(reverse("inbox:inbox")))
    assert "Page 1 of 3" in first and "message 6" in first and "message 3" not in first
    last = text(bob.get(reverse("inbox:inbox"), {"page": "3"}))
    assert "message 0" in last and "message 6" not in last
    assert bob.get(reverse("inbox:inbox"), {"page": "abc"}).status_code == 200  # the first page


def test_sender_sees_the_moderation_status(users, ann):
    pm_write(users.ann, users.bob, "waiting", "x", auto_moderators=[lambda m: None])
    pm_write(users.ann, users.bob, "refused", "x", auto_moderators=[lambda m: (0, "no ads")])
    page = text(ann.get(reverse("inbox:sent")))
    assert "awaiting moderation" in page
    assert "rejected: no ads" in page


# -- reading ---------------------------------------------------------------------------------------
def test_view_shows_an_escaped_body_with_safe_links_and_does_not_mark_read(users, bob):
    m = pm_write(users.ann, users.bob, "<b>hi</b>",
                 "<script>alert(1)</script>\nsee https://example.org/x?a=1&b=2 or javascript:alert(2)")
    page = text(bob.get(reverse("inbox:view", args=[m.pk])))
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;hi&lt;/b&gt;" in page
    assert '<a href="https://example.org/x?a=1&amp;b=2" rel="nofollow">' in page
    assert 'href="javascript' not in page
    m.refresh_from_db()
    assert m.read_at is None  # a GET changes nothing
    assert 'id="mark-read-form"' in page


@pytest.mark.parametrize("bad", ["abc", "-1", "0", "1.5", "99999999999999999999999"])
def test_malformed_ids_are_404s(users, bob, bad):
    assert bob.get(f"/messages/view/{bad}/").status_code == 404
    assert bob.get(f"/messages/reply/{bad}/").status_code == 404
    assert bob.get(f"/messages/view/t/{bad}/").status_code == 404


def test_another_users_message_is_a_404(users, bob):
    theirs = pm_write(users.ann, users.cat, "for cat", "x")
    pending = pm_write(users.ann, users.bob, "pending", "x", auto_moderators=[lambda m: None])
    for message in (theirs, pending):
        assert bob.get(reverse("inbox:view", args=[message.pk])).status_code == 404
        assert bob.get(reverse("inbox:reply", args=[message.pk])).status_code == 404
        assert bob.get(reverse("inbox:view_conversation", args=[message.pk])).status_code == 404


def test_conversation_shows_the_thread_oldest_first(users, bob):
    first = pm_write(users.ann, users.bob, "Lunch?", "At noon?")
    pm_write(users.bob, users.ann, "Re: Lunch?", "Yes!", parent=first)
    pm_write(users.ann, users.bob, "Re: Lunch?", "Great", parent=first)
    page = text(bob.get(reverse("inbox:view_conversation", args=[first.pk])))
    assert page.index("At noon?") < page.index("Yes!") < page.index("Great")


# -- writing ---------------------------------------------------------------------------------------
def test_write_to_several_users(users, ann):
    response = ann.post(reverse("inbox:write"), {"recipients": "bob, cat", "subject": "Hi", "body": "all"})
    assert response.status_code == 302 and response["Location"] == reverse("inbox:sent")
    assert sorted(PrivateMessage.objects.values_list("recipient__username", flat=True)) == ["bob", "cat"]
    page = text(ann.get(reverse("inbox:sent")))
    assert "Message sent to bob, cat." in page


def test_write_prefills_postman_style(users, ann):
    page = text(ann.get(reverse("inbox:write", args=["bob:cat"]), {"subject": "About <x>"}))
    assert 'value="bob, cat"' in page and 'value="About &lt;x&gt;"' in page


@pytest.mark.parametrize("data, error", [
    ({"recipients": "nobody", "subject": "x"}, "No such user: nobody."),
    ({"recipients": "ann", "subject": "x"}, "You cannot write to yourself."),
    ({"recipients": "bob", "subject": "x" * 121}, "Ensure this value has at most 120 characters"),
    ({"recipients": "bob", "subject": "two\nlines"}, "The subject must be one line"),
    ({"recipients": "bob", "subject": "x", "body": "bell\x07"}, "holds control characters"),
    ({"recipients": "bob", "subject": "x", "body": "nul\x00"}, "Null characters are not allowed"),
    ({"recipients": "bob", "subject": "", "body": "  "}, "Write a subject or a message."),
    ({"recipients": "", "subject": "x"}, "This field is required."),
    ({"recipients": ",".join(f"u{i}" for i in range(11)), "subject": "x"}, "At most 10 recipients"),
])
def test_write_shows_what_is_wrong(users, ann, data, error):
    response = ann.post(reverse("inbox:write"), data)
    assert response.status_code == 200
    assert error in text(response)
    assert not PrivateMessage.objects.exists()


def test_a_too_long_body_is_refused(users, ann, settings):
    settings.DISPATCHER_INBOX_BODY_MAX_LENGTH = 20
    response = ann.post(reverse("inbox:write"), {"recipients": "bob", "body": "x" * 21})
    assert "Ensure this value has at most 20 characters" in text(response)
    assert not PrivateMessage.objects.exists()


def test_write_applies_the_sites_auto_moderators(users, ann, settings):
    settings.DISPATCHER_INBOX_AUTO_MODERATORS = [lambda m: (0, "no links") if "http" in m.body else None]
    settings.DISPATCHER_INBOX_AUTO_MODERATE_AS = True
    ann.post(reverse("inbox:write"), {"recipients": "bob", "subject": "x", "body": "http://spam"})
    page = text(ann.get(reverse("inbox:sent")))
    assert "Your message to bob was rejected: no links" in page
    assert "rejected: no links" in page


def test_next_must_stay_on_the_site(users, ann):
    response = ann.post(reverse("inbox:write"),
                        {"recipients": "bob", "subject": "x", "next": "https://evil.example/"})
    assert response["Location"] == reverse("inbox:sent")


def test_reply_quotes_the_original_and_joins_the_thread(users, bob):
    original = pm_write(users.ann, users.bob, "Lunch?", "At noon?\nOr later?")
    form = text(bob.get(reverse("inbox:reply", args=[original.pk])))
    assert 'value="Re: Lunch?"' in form
    assert "ann wrote on" in form and "&gt; At noon?\n&gt; Or later?" in form
    response = bob.post(reverse("inbox:reply", args=[original.pk]),
                        {"subject": "Re: Lunch?", "body": "Yes!\n\n> At noon?"})
    reply = PrivateMessage.objects.get(sender=users.bob)
    assert response["Location"] == reverse("inbox:view_conversation", args=[original.pk])
    assert (reply.recipient, reply.parent_id, reply.thread_id) == (users.ann, original.pk, original.pk)
    original.refresh_from_db()
    assert original.read_at is not None and original.replied_at is not None


# -- actions ---------------------------------------------------------------------------------------
def test_actions_on_several_selected_messages_touch_only_the_users_side(users, bob):
    mine = [pm_write(users.ann, users.bob, f"m{i}", "x") for i in range(3)]
    theirs = pm_write(users.ann, users.cat, "cat's", "x")
    ids = [m.pk for m in mine[:2]] + [theirs.pk, "abc", "-3"]
    bob.post(reverse("inbox:mark-read"), {"pks": ids})
    assert PrivateMessage.objects.filter(read_at__isnull=False).count() == 2
    bob.post(reverse("inbox:mark-unread"), {"pks": ids})
    assert not PrivateMessage.objects.filter(read_at__isnull=False).exists()
    response = bob.post(reverse("inbox:archive"), {"pks": ids, "next": reverse("inbox:archives")})
    assert response["Location"] == reverse("inbox:archives")
    assert set(PrivateMessage.objects.archives(users.bob)) == set(mine[:2])
    bob.post(reverse("inbox:delete"), {"pks": ids})
    assert set(PrivateMessage.objects.trash(users.bob)) == set(mine[:2])
    bob.post(reverse("inbox:undelete"), {"pks": [mine[0].pk]})
    assert set(PrivateMessage.objects.trash(users.bob)) == {mine[1]}
    bob.post(reverse("inbox:unarchive"), {"pks": [mine[0].pk]})
    assert mine[0] in PrivateMessage.objects.inbox(users.bob)
    theirs.refresh_from_db()
    assert (theirs.read_at, theirs.recipient_archived, theirs.recipient_deleted_at) == (None, False, None)
    assert PrivateMessage.objects.archives(users.ann).count() == 0  # the sender's side is untouched


def test_actions_answer_json_to_scripts(users, bob):
    m = pm_write(users.ann, users.bob, "x", "y")
    response = bob.post(reverse("inbox:mark-read"), {"pks": [m.pk]}, headers={"Accept": "application/json"})
    assert response.json() == {"changed": 1, "unread_count": 0}


@pytest.mark.parametrize("name", ["archive", "unarchive", "delete", "undelete", "mark-read", "mark-unread",
                                  "unblock"])
def test_state_changes_are_posts_with_csrf(users, name):
    m = pm_write(users.ann, users.bob, "x", "y")
    client = logged_in(users.bob, csrf=True)
    assert client.get(reverse(f"inbox:{name}"), {"pks": m.pk}).status_code == 405
    assert client.post(reverse(f"inbox:{name}"), {"pks": m.pk}).status_code == 403
    m.refresh_from_db()
    assert (m.read_at, m.recipient_archived, m.recipient_deleted_at) == (None, False, None)


def test_write_and_reply_need_csrf(users):
    m = pm_write(users.ann, users.bob, "x", "y")
    client = logged_in(users.bob, csrf=True)
    assert client.post(reverse("inbox:write"), {"recipients": "ann", "subject": "x"}).status_code == 403
    assert client.post(reverse("inbox:reply", args=[m.pk]), {"subject": "x"}).status_code == 403
    assert client.post(reverse("inbox:blocks"), {"username": "ann"}).status_code == 403
    assert PrivateMessage.objects.count() == 1 and not Block.objects.exists()


# -- blocks and the exchange filter ----------------------------------------------------------------
def test_a_blocked_sender_is_refused_everywhere(users, ann, bob):
    response = bob.post(reverse("inbox:blocks"), {"username": "ann"})
    assert response.status_code == 302
    assert Block.objects.filter(blocker=users.bob, blocked=users.ann).exists()
    assert "ann" in text(bob.get(reverse("inbox:blocks")))
    page = text(ann.post(reverse("inbox:write"), {"recipients": "bob, cat", "subject": "hi"}))
    assert "You cannot write to bob: this user does not accept messages from you." in page
    assert not PrivateMessage.objects.exists()  # not even to cat: the form is refused whole
    earlier = pm_write(users.bob, users.ann, "before", "x", check_exchange=False)
    response = ann.post(reverse("inbox:reply", args=[earlier.pk]), {"subject": "Re", "body": "x"})
    assert "This user does not accept messages from you." in text(response)
    bob.post(reverse("inbox:unblock"), {"pks": [users.ann.pk]})
    assert ann.post(reverse("inbox:write"), {"recipients": "bob", "subject": "hi"}).status_code == 302


@pytest.mark.parametrize("username, error", [
    ("nobody", "No such user."), ("bob", "You cannot block yourself."),
])
def test_block_errors(users, bob, username, error):
    response = bob.post(reverse("inbox:blocks"), {"username": username})
    assert response.status_code == 400 and error in text(response)


def test_the_exchange_filter_reason_is_shown_on_the_write_page(users, ann, settings):
    def only_to_cat(sender, recipient, recipients):
        return None if recipient.username == "cat" else "you may only write to cat here"

    settings.DISPATCHER_INBOX_EXCHANGE_FILTER = only_to_cat
    page = text(ann.post(reverse("inbox:write"), {"recipients": "bob", "subject": "hi"}))
    assert "You cannot write to bob: you may only write to cat here." in page
    assert ann.post(reverse("inbox:write"), {"recipients": "cat", "subject": "hi"}).status_code == 302


# -- the unread helpers ----------------------------------------------------------------------------
def test_unread_tags_cost_one_query(users, rf):
    pm_write(users.ann, users.bob, "a", "x")
    pm_write(users.ann, users.bob, "b", "x")
    template = Template("{% load inbox_tags postman_tags %}{% inbox_unread %}|"
                        "{% postman_unread as n %}{{ n }}")
    with CaptureQueriesContext(connection) as queries:
        assert template.render(Context({"user": users.bob})) == "2|2"
    assert len(queries) == 2  # one per tag
    from django.contrib.auth.models import AnonymousUser

    assert template.render(Context({"user": AnonymousUser()})) == "|"


def test_postmans_filters_work_in_a_ported_template(users):
    """A folder template carried over from django-postman renders as it did there."""
    from datetime import timedelta

    from django.utils import timezone

    message = pm_write(users.ann, users.bob, "a", "x")
    template = Template('{% load postman_tags %}{{ m.sender|or_me:user }}>{{ m.recipient|or_me:user }} '
                        '{{ m.sent_at|compact_date:"G:i,j b,j/n/y" }} {{ 5|sub:2 }} {{ "x"|sub:2 }}')
    shown = template.render(Context({"m": message, "user": users.ann}))
    assert shown == f"&lt;me&gt;>bob {timezone.localtime(message.sent_at):%-H:%M} 3 x"
    long_ago = message.sent_at - timedelta(days=800)
    assert Template('{% load postman_tags %}{{ d|compact_date:"G:i,j b,j/n/y" }}').render(
        Context({"d": long_ago})) == f"{timezone.localtime(long_ago):%-d/%-m/%y}"


def test_the_context_processor_is_lazy(users, rf):
    from dispatcher.inbox.context_processors import inbox

    pm_write(users.ann, users.bob, "a", "x")
    request = rf.get("/")
    request.user = users.bob
    with CaptureQueriesContext(connection) as queries:
        context = inbox(request)
    assert len(queries) == 0
    with CaptureQueriesContext(connection) as queries:
        assert int(str(context["postman_unread_count"])) == 1
    assert len(queries) == 1


def plan_of(count) -> str:
    """The plan of the one query ``count()`` runs; on PostgreSQL with sequential
    scans off, as a small test table would otherwise be scanned whatever the indexes."""
    with CaptureQueriesContext(connection) as queries:
        count()
    [query] = queries.captured_queries
    prefix = "EXPLAIN " if connection.vendor == "postgresql" else "EXPLAIN QUERY PLAN "
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET enable_seqscan = off")
        try:
            cursor.execute(prefix + query["sql"])
            return "\n".join(" ".join(str(c) for c in row) for row in cursor.fetchall())
        finally:
            if connection.vendor == "postgresql":
                cursor.execute("SET enable_seqscan = on")


def test_the_unread_count_is_one_indexed_query(users):
    pm_write(users.ann, users.bob, "a", "x")
    plan = plan_of(lambda: PrivateMessage.objects.unread_count(users.bob))
    if connection.vendor == "postgresql":
        assert "pm_unread_idx" in plan  # the small partial index of unread rows
    else:
        assert "USING INDEX" in plan or "USING COVERING INDEX" in plan  # SQLite picks one of ours
