"""The private-message pages in headless Chromium, against pytest-django's live server:
write, read with the header's counter, reply with the quote, the conversation,
archive, trash, undelete; moderation as the sender sees it; refusals on the page."""

from __future__ import annotations

import pytest

from dispatcher.inbox.models import Block, PrivateMessage
from dispatcher.inbox.moderation import moderate

from .browser_steps import badge, find, finds, go, log_in, screenshot, wait

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _fast_polls(settings):
    settings.DISPATCHER_LIVE_POLL_SECONDS = 1


def test_write_read_reply_thread_archive_trash_undelete(driver, live_server, users):
    # ann writes to bob.
    log_in(driver, live_server, "ann")
    find(driver, "#write-link").click()
    wait(driver, lambda d: finds(d, "#write-form"))
    find(driver, "#id_recipients").send_keys("bob")
    find(driver, "#id_subject").send_keys("Lunch?")
    find(driver, "#id_body").send_keys("Shall we meet at noon? <b>Menu</b>: https://example.org/menu")
    find(driver, "#write-form button[type=submit]").click()
    wait(driver, lambda d: d.current_url.endswith("/messages/sent/"))
    assert "Message sent to bob." in find(driver, "#notices").text
    assert "Lunch?" in find(driver, "#messages").text
    original = PrivateMessage.objects.get()

    # bob sees it in his inbox, with the unread counter in the header.
    log_in(driver, live_server, "bob")
    wait(driver, lambda d: badge(d, "#inbox-unread") == "1")
    row = find(driver, f"#pm-{original.pk}")
    assert "unread" in row.get_attribute("class") and "ann" in row.text
    screenshot(driver, "inbox.png")

    # Opening it marks it read (the page POSTs that) and the counter goes.
    row.find_element("css selector", "a").click()
    wait(driver, lambda d: finds(d, f"#message-{original.pk}"))
    body = find(driver, f"#message-{original.pk} .body")
    assert "<b>Menu</b>" in body.text  # plain text, shown as typed
    assert body.find_element("css selector", "a").get_attribute("href") == "https://example.org/menu"
    wait(driver, lambda d: badge(d, "#inbox-unread") == "")
    original.refresh_from_db()
    assert original.read_at is not None

    # Reply, with the original quoted.
    find(driver, "#reply-link").click()
    wait(driver, lambda d: finds(d, "#reply-form"))
    assert find(driver, "#id_subject").get_attribute("value") == "Re: Lunch?"
    quoted = find(driver, "#id_body").get_attribute("value")
    assert "ann wrote on" in quoted and "> Shall we meet at noon?" in quoted
    # The page puts the caret above the quote: what is typed goes before it.
    find(driver, "#id_body").send_keys("Yes, see you there!")
    find(driver, "#reply-form button[type=submit]").click()

    # The conversation: both messages, oldest first.
    wait(driver, lambda d: "/messages/view/t/" in d.current_url)
    articles = finds(driver, "article.message")
    assert len(articles) == 2
    assert "Shall we meet at noon?" in articles[0].text and "Yes, see you there!" in articles[1].text
    screenshot(driver, "conversation.png")
    reply = PrivateMessage.objects.get(sender=users.bob)
    assert reply.body.replace("\r\n", "\n").startswith("Yes, see you there!\n\nann wrote on")  # form: CRLF
    assert (reply.parent_id, reply.thread_id) == (original.pk, original.pk)

    # Archive the original: it leaves the inbox for the archives.
    go(driver, live_server, f"/messages/view/{original.pk}/")
    find(driver, "#archive-button").click()
    wait(driver, lambda d: d.current_url.endswith("/messages/inbox/"))
    assert not finds(driver, f"#pm-{original.pk}")
    go(driver, live_server, "/messages/archives/")
    assert finds(driver, f"#pm-{original.pk}")

    # Select it in the archives and delete it: it is in the trash.
    find(driver, f'#pm-{original.pk} input[name="pks"]').click()
    find(driver, "#folder-form button[formaction$='/delete/']").click()
    wait(driver, lambda d: "moved to the trash" in find(d, "#notices").text)
    go(driver, live_server, "/messages/trash/")
    assert finds(driver, f"#pm-{original.pk}")

    # Undelete it from the trash: back in the archives.
    find(driver, f'#pm-{original.pk} input[name="pks"]').click()
    find(driver, "#folder-form button[formaction$='/undelete/']").click()
    wait(driver, lambda d: "restored" in find(d, "#notices").text)
    assert not finds(driver, f"#pm-{original.pk}")
    go(driver, live_server, "/messages/archives/")
    assert finds(driver, f"#pm-{original.pk}")
    original.refresh_from_db()
    assert (original.recipient_archived, original.recipient_deleted_at) == (True, None)
    assert (original.sender_archived, original.sender_deleted_at) == (False, None)  # ann's side untouched

    # Writing again, ann is offered bob as she types (the people she writes
    # with, from the JSON API), and nobody she never wrote with: not cat.
    log_in(driver, live_server, "ann", "/messages/write/")
    find(driver, "#id_recipients").send_keys("b")

    def offered(d) -> list[str]:
        # Read in one script: the list is rebuilt as answers come, so elements
        # fetched one by one can go stale between two reads.
        return d.execute_script(
            "return Array.from(document.querySelectorAll('#inbox-recipients-list option'), o => o.value)")

    wait(driver, lambda d: offered(d) == ["bob"])
    find(driver, "#id_recipients").send_keys("ob, c")
    wait(driver, lambda d: offered(d) == [])


def test_moderation_as_the_sender_sees_it(driver, live_server, users, settings):
    settings.DISPATCHER_INBOX_AUTO_MODERATORS = [
        lambda m: (0, "no links, please") if "http" in m.body else None
    ]
    settings.DISPATCHER_INBOX_AUTO_MODERATE_AS = None  # no opinion: a moderator decides
    log_in(driver, live_server, "ann")
    for subject, body in (("Offer", "Buy at http://spam.example"), ("Hello", "How are you?")):
        go(driver, live_server, "/messages/write/bob/")
        find(driver, "#id_subject").send_keys(subject)
        find(driver, "#id_body").send_keys(body)
        find(driver, "#write-form button[type=submit]").click()
        wait(driver, lambda d: d.current_url.endswith("/messages/sent/"))
    sent = find(driver, "#messages").text
    assert "rejected: no links, please" in sent
    assert "awaiting moderation" in sent
    hello = PrivateMessage.objects.get(subject="Hello")
    assert hello.is_pending()

    log_in(driver, live_server, "bob")
    assert not finds(driver, "#messages")  # nothing reached bob yet
    moderate([hello], accept=True, moderator=users.cat)
    go(driver, live_server, "/messages/inbox/")
    assert finds(driver, f"#pm-{hello.pk}") and badge(driver, "#inbox-unread") == "1"


def test_refusals_are_shown_on_the_write_page(driver, live_server, users, settings):
    # bob blocks cat on his blocks page.
    log_in(driver, live_server, "bob", "/messages/blocks/")
    find(driver, "#block-username").send_keys("cat")
    find(driver, "#block-form button").click()
    wait(driver, lambda d: "cat can no longer write to you." in find(d, "#notices").text)
    assert Block.objects.filter(blocker=users.bob, blocked=users.cat).exists()

    # The site's exchange filter: nobody writes to ann.
    settings.DISPATCHER_INBOX_EXCHANGE_FILTER = (
        lambda sender, recipient, recipients: "ann takes no messages" if recipient.username == "ann" else None
    )
    log_in(driver, live_server, "cat", "/messages/write/")
    find(driver, "#id_recipients").send_keys("bob, ann")
    find(driver, "#id_subject").send_keys("Hi")
    find(driver, "#write-form button[type=submit]").click()
    wait(driver, lambda d: finds(d, "#errors-recipients"))
    errors = find(driver, "#errors-recipients").text
    assert "You cannot write to bob: this user does not accept messages from you." in errors
    assert "You cannot write to ann: ann takes no messages." in errors
    # The form keeps what was typed.
    assert find(driver, "#id_recipients").get_attribute("value") == "bob, ann"
    screenshot(driver, "write-refused.png")
    assert not PrivateMessage.objects.exists()
