"""Tell users about their private messages, through the dispatcher itself.

A new (accepted) message notifies its recipient; a rejected one notifies its
sender. Each goes through ``schedule_messages`` to the user's messenger
(``DISPATCHER_INBOX_NOTIFY_MESSENGER``, ``"smtp"`` unless set; a visitor's
address always goes by ``smtp``), inside the caller's transaction: the
notification rows commit or roll back with the message, and the deliver tasks
are published only once they are committed.

Messages with the same content (a broadcast) share one notification
``Message`` with one dispatch per recipient, so a broadcast to a thousand
users costs a handful of queries, not a thousand.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ObjectDoesNotExist
from django.urls import NoReverseMatch, reverse
from django.utils.text import Truncator

from dispatcher.api import Recipient, recipients, schedule_messages
from dispatcher.exceptions import InvalidRecipient, UnknownMessenger
from dispatcher.messages import MessageBase
from messengers.exceptions import InvalidAddress

from .models import PrivateMessage, Status

logger = logging.getLogger("dispatcher.inbox.notifications")

DEFAULT_MESSENGER = "smtp"
#: Visitors are known by an e-mail address only.
VISITOR_MESSENGER = "smtp"


def current_site() -> Any:
    """The current ``Site`` when django.contrib.sites is installed (and SITE_ID
    set), else None: the sites framework is optional, as in django-postman."""
    if not apps.is_installed("django.contrib.sites"):
        return None
    from django.contrib.sites.models import Site

    try:
        return Site.objects.get_current()
    except (ImproperlyConfigured, ObjectDoesNotExist):
        return None


#: Context key: {notified user id: path of their message's page}.
LINKS = "pm_links"


def message_path(message_id: int) -> str:
    """The path of a message's page, or "" when the site does not mount the pages."""
    try:
        return reverse("inbox:view", args=[message_id])
    except NoReverseMatch:
        return ""


def absolute(path: str) -> str:
    return f"{str(settings.SITE_URL).rstrip('/')}{path}" if path else ""


class _InboxNotification(MessageBase):
    """Rendered per recipient with the seed's ``site`` in the context, and
    ``message_url``: the page of the private message this recipient is told
    about (each copy of a broadcast has its own)."""

    allow_user_subscription = False

    @classmethod
    def get_context(cls, message_model: Any, dispatch: Any) -> dict[str, Any]:
        context = super().get_context(message_model, dispatch)
        context["site"] = current_site()
        links = message_model.context.get(LINKS) or {}
        context["message_url"] = absolute(links.get(str(dispatch.recipient_id), ""))
        return context


class NewPrivateMessage(_InboxNotification):
    """To the recipient: you have a new private message."""

    alias = "inbox_new_message"
    title = "New private message"
    template = "inbox/notification/new_message.txt"


class RejectedPrivateMessage(_InboxNotification):
    """To the sender: a moderator (or an auto-moderator) rejected your message."""

    alias = "inbox_rejected_message"
    title = "Private message rejected"
    template = "inbox/notification/rejected.txt"


MESSAGE_TYPES: list[type[MessageBase]] = [NewPrivateMessage, RejectedPrivateMessage]


def messenger_for(user: Any) -> str:
    """The alias of the messenger that notifies ``user``.

    ``DISPATCHER_INBOX_NOTIFY_MESSENGER`` is an alias, or a callable taking the
    user and returning one (to follow a per-user preference).
    """
    setting: str | Callable[[Any], str | None] = getattr(
        settings, "DISPATCHER_INBOX_NOTIFY_MESSENGER", DEFAULT_MESSENGER
    )
    if callable(setting):
        return setting(user) or DEFAULT_MESSENGER
    return setting


def _targets(people: Iterable[Any]) -> list[Recipient]:
    """Recipients for users and visitors' addresses; those that cannot be
    notified (inactive, no address, messenger not registered) are logged and
    left out, so a notification problem never loses the message itself."""
    result: list[Recipient] = []
    for person in people:
        if person is None or person == "":
            continue
        if isinstance(person, str):
            alias = VISITOR_MESSENGER
        else:
            if not getattr(person, "is_active", True):
                continue
            alias = messenger_for(person)
        try:
            result.extend(recipients(alias, person))
        except UnknownMessenger as exc:
            logger.error("private message notification to %s not sent: %s", person, exc)
        except (InvalidRecipient, InvalidAddress) as exc:
            logger.info("private message notification to %s not sent: %s", person, exc)
    return result


def _context(message: PrivateMessage, subject: str) -> dict[str, Any]:
    """What the template needs, stored as JSON with the notification: the
    worker renders it without reading the private message again."""
    context: dict[str, Any] = {
        "subject": subject,
        "pm_subject": message.subject,
        "body": message.body,
        "sender_name": message.sender_label,
        "sent_at": message.sent_at.isoformat(),
    }
    if message.moderation_status == Status.REJECTED:
        # One notification per rejected message: its own recipient and reason.
        context["pm_recipient"] = message.recipient_label
        context["reason"] = message.moderation_reason
    return context


def _links(messages: Sequence[PrivateMessage], who: Callable[[PrivateMessage], Any]) -> dict[str, str]:
    """{notified user id: path of the page of the message they are told about}."""
    links = {}
    for m in messages:
        person = who(m)
        path = message_path(m.pk) if not isinstance(person, str) and person is not None else ""
        if path:
            links[str(person.pk)] = path
    return links


def _schedule(
    message_cls: type[_InboxNotification],
    groups: dict[tuple, list[PrivateMessage]],
    who: Callable[[PrivateMessage], Any],
    subject: Callable[[PrivateMessage], str],
) -> int:
    count = 0
    for messages in groups.values():
        first = messages[0]
        targets = _targets(who(m) for m in messages)
        if not targets:
            continue
        context = _context(first, subject(first))
        links = _links(messages, who)
        if links:
            context[LINKS] = links
            # One link for channels that show a single one (the in-app feed's item):
            # the message itself, or the inbox for a broadcast's shared notification.
            single = next(iter(links.values())) if len(messages) == 1 else _inbox_path()
            if single:
                context["url"] = absolute(single)
        schedule_messages(message_cls(context), targets, sender=first.sender if first.sender_id else None)
        count += len(targets)
    return count


def _inbox_path() -> str:
    try:
        return reverse("inbox:inbox")
    except NoReverseMatch:
        return ""


def _new_subject(message: PrivateMessage) -> str:
    text = f"New message from {message.sender_label}"
    if message.subject:
        text += f": {message.subject}"
    return Truncator(text).chars(200)


def _rejected_subject(message: PrivateMessage) -> str:
    return Truncator(f"Your message to {message.recipient_label} was rejected").chars(200)


def notify_accepted(messages: Sequence[PrivateMessage]) -> int:
    """Notify the recipients of newly accepted messages; returns how many dispatches."""
    groups: dict[tuple, list[PrivateMessage]] = defaultdict(list)
    for m in messages:
        if m.moderation_status == Status.ACCEPTED:
            groups[(m.sender_id, m.email if not m.sender_id else "", m.subject, m.body)].append(m)
    return _schedule(NewPrivateMessage, groups, lambda m: m.recipient or m.email, _new_subject)


def notify_rejected(messages: Sequence[PrivateMessage]) -> int:
    """Notify the senders of newly rejected messages, with the reason."""
    groups: dict[tuple, list[PrivateMessage]] = {
        (m.pk,): [m] for m in messages if m.moderation_status == Status.REJECTED
    }
    return _schedule(RejectedPrivateMessage, groups, lambda m: m.sender or m.email, _rejected_subject)


def notify_users(messages: Sequence[PrivateMessage], initial_statuses: Sequence[str]) -> int:
    """Notify what a moderation decision changed: only messages that left
    ``pending`` (as in django-postman); the rest were notified before."""
    decided = [m for m, initial in zip(messages, initial_statuses, strict=True) if initial == Status.PENDING]
    return notify_accepted(decided) + notify_rejected(decided)
