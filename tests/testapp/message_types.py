import os
import time
from datetime import timedelta
from pathlib import Path

from dispatcher.messages import MessageBase


class HelloMessage(MessageBase):
    """A templated e-mail, rendered per recipient."""

    alias = "hello"
    title = "Hello"
    template = "testapp/hello.txt"


class NewsletterMessage(MessageBase):
    """Users may subscribe to it, by e-mail only."""

    alias = "newsletter"
    title = "Newsletter"
    template = "testapp/newsletter.txt"
    supported_messengers = ("smtp",)


class SecurityAlertMessage(MessageBase):
    """Sent by the site; users may not subscribe to it themselves."""

    alias = "security_alert"
    title = "Security alert"
    allow_user_subscription = False


class PromoMessage(MessageBase):
    """Marketing: an unsubscribe link also suppresses the address for this type."""

    alias = "promo"
    title = "Promotions"
    template = "testapp/newsletter.txt"
    requires = "email"
    suppress_on_unsubscribe = True
    allow_user_subscription = False


class CommentDigestMessage(MessageBase):
    """One mail per comment is too many: comments are collected for 30 minutes."""

    alias = "comment"
    title = "New comments"
    digest = timedelta(minutes=30)
    digest_template = "testapp/comment_digest.txt"
    allow_user_subscription = False


class HeldDigestMessage(MessageBase):
    """A digest whose closing can be held inside its transaction, to kill the
    worker there: with TEST_DIGEST_HOLD=<path> in the environment, building a
    digest writes ``<path>.closing`` and waits (60 s at most) for ``<path>``
    to be removed."""

    alias = "held_digest"
    title = "Held digest"
    digest = timedelta(minutes=30)
    allow_user_subscription = False

    @classmethod
    def digest_context(cls, context: dict, window) -> dict:
        hold = os.environ.get("TEST_DIGEST_HOLD")
        if hold and Path(hold).exists():
            Path(hold + ".closing").write_text(str(os.getpid()))
            deadline = time.monotonic() + 60
            while Path(hold).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        return context
