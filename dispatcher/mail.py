"""Django's mail through the dispatcher.

In settings::

    EMAIL_BACKEND = "dispatcher.mail.EmailBackend"
    DISPATCHER_MAIL_MESSENGER = "smtp"        # the default: any messenger that carries e-mail

and every ``send_mail``, ``mail_admins``, ``EmailMessage.send()`` and
``EmailMultiAlternatives.send()`` of the site (password resets included)
becomes a :class:`~dispatcher.messages.DjangoEmailMessage`, scheduled like any
other message: a row before anything is sent, delivered by a worker, retried,
visible in the admin and on the dashboard.

The mail is the one Django's SMTP backend would write: Django builds its
headers (From, To, Cc, Reply-To, the extra ones), and the text part, the HTML
alternative and the attachments travel as they are. Every recipient (To, Cc
and Bcc) is a dispatch of its own, so one refused address neither holds up
nor repeats the others; a Bcc recipient gets the mail without a Bcc header.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from email.header import decode_header, make_header
from email.message import Message as MimeMessage
from email.mime.base import MIMEBase
from email.utils import getaddresses, parseaddr
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend

from messengers.base import Attachment

from .api import recipients, schedule_messages
from .exceptions import DispatcherError, InvalidAddress, InvalidArgument
from .messages import DjangoEmailMessage

__all__ = ["EmailBackend", "UnsupportedMail", "schedule_email", "to_dispatcher_message"]

#: Headers of Django's message that are not carried: the MIME structure is the
#: messenger's to write, and Date and Message-ID are written per dispatch
#: (a stable Message-ID per dispatch) unless the mail's own headers set them.
NOT_CARRIED = frozenset({"content-type", "content-transfer-encoding", "mime-version", "subject", "bcc"})
PER_DISPATCH = frozenset({"date", "message-id"})
ADDRESS_HEADERS = frozenset({"from", "sender", "to", "cc", "reply-to"})
_SPECIALS = re.compile(r'[][\\()<>@,:;".]')


class UnsupportedMail(InvalidArgument):
    """A mail the dispatcher cannot carry as Django would send it (an alternative
    that is not HTML, a second HTML alternative, a body that is neither text nor HTML)."""


def _decoded(value: Any) -> str:
    """A header value as text (RFC 2047 encoded-words decoded)."""
    return str(make_header(decode_header(str(value))))


def _decoded_addresses(value: Any) -> str:
    """An address list as text: each display name decoded on its own, and
    quoted when it needs to be, so a name with a comma stays one address."""
    written = []
    for name, address in getaddresses([str(value)]):
        if not address:
            continue
        name = _decoded(name) if name else ""
        if name and _SPECIALS.search(name):
            name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        written.append(f"{name} <{address}>" if name else address)
    return ", ".join(written)


def _headers(email_message: EmailMessage, mime: MimeMessage) -> dict[str, str]:
    own = {name.lower() for name in email_message.extra_headers}
    headers: dict[str, str] = {}
    for name, value in mime.items():
        lower = name.lower()
        if lower in NOT_CARRIED or (lower in PER_DISPATCH and lower not in own):
            continue
        headers[name] = _decoded_addresses(value) if lower in ADDRESS_HEADERS else _decoded(value)
    return headers


def _text(content: Any) -> str:
    return content.decode("utf-8") if isinstance(content, bytes) else str(content)


def _bodies(email_message: EmailMessage) -> tuple[str, str]:
    """The text and the HTML of a mail."""
    subtype = email_message.content_subtype
    if subtype not in ("plain", "html"):
        raise UnsupportedMail(
            f"the body of the mail is text/{subtype}: only text/plain and text/html are carried"
        )
    text, html = ("", email_message.body) if subtype == "html" else (email_message.body, "")
    for content, mimetype, *_ in getattr(email_message, "alternatives", None) or ():
        if mimetype != "text/html":
            raise UnsupportedMail(
                f"an alternative of type {mimetype}: only one text/html alternative is carried"
            )
        if html:
            raise UnsupportedMail("a second HTML alternative: only one text/html alternative is carried")
        html = _text(content)
    return _text(text), html


def _mime_attachment(part: MIMEBase) -> Attachment:
    """An attachment given as a MIME part (``EmailMessage.attach(MIMEImage(...))``)."""
    mimetype = part.get_content_type()
    if mimetype == "message/rfc822":
        inner = part.get_payload(0)
        content: bytes = inner.as_bytes() if isinstance(inner, MimeMessage) else b""
    elif part.is_multipart():
        raise UnsupportedMail(f"a {mimetype} attachment: attach its parts one by one")
    else:
        payload = part.get_payload(decode=True)
        content = payload if isinstance(payload, bytes) else b""
    content_id = part["Content-ID"]
    return Attachment(part.get_filename(), content, mimetype, part.get_content_disposition(),
                      str(content_id) if content_id else None)


def _attachments(email_message: EmailMessage) -> list[Attachment]:
    found = []
    for item in email_message.attachments:
        if isinstance(item, MIMEBase):
            found.append(_mime_attachment(item))
            continue
        filename, content, mimetype = item
        mimetype = mimetype or "application/octet-stream"
        if mimetype == "message/rfc822":
            if isinstance(content, EmailMessage):
                content = content.message()
            if isinstance(content, MimeMessage):
                content = content.as_bytes()
        if isinstance(content, str):
            content = content.encode("utf-8")
        disposition = "attachment" if filename else None
        found.append(Attachment(filename or None, bytes(content), mimetype, disposition))
    return found


def to_dispatcher_message(email_message: EmailMessage) -> DjangoEmailMessage:
    """The dispatcher's message for a Django ``EmailMessage``.

    Raises Django's ``BadHeaderError`` for a header with a line break (as
    Django's SMTP backend does), :class:`UnsupportedMail`, and
    :class:`~dispatcher.messages.MailTooLarge` above ``DISPATCHER_MAIL_MAX_BYTES``.
    """
    mime = email_message.message()  # Django's own headers, and its header checks
    text, html = _bodies(email_message)
    return DjangoEmailMessage(
        _decoded(mime["Subject"]) if mime["Subject"] is not None else "",
        text, html, _headers(email_message, mime), _attachments(email_message),
    )


def envelope_recipients(email_message: EmailMessage) -> list[str]:
    """The bare addresses of To, Cc and Bcc, each once."""
    seen: set[str] = set()
    found = []
    for entry in email_message.recipients():
        entry = str(entry).strip()
        parsed = parseaddr(entry)[1]
        # "Name <a@b>" gives its address; anything else is judged as written.
        address = parsed if parsed and (parsed == entry or entry.endswith(f"<{parsed}>")) else entry
        if address.lower() not in seen:
            seen.add(address.lower())
            found.append(address)
    return found


def schedule_email(email_message: EmailMessage, messenger: str | None = None, **options: Any) -> list:
    """Schedule a Django ``EmailMessage``: one dispatch per recipient.

    ``messenger`` defaults to ``settings.DISPATCHER_MAIL_MESSENGER`` (``"smtp"``);
    ``options`` go to :func:`~dispatcher.api.schedule_messages` (``priority``,
    ``send_at``, ``idempotency_key``). Returns its ``[(message, dispatches)]``,
    or ``[]`` for a mail without recipients.
    """
    addresses = envelope_recipients(email_message)
    if not addresses:
        return []
    alias = str(messenger or getattr(settings, "DISPATCHER_MAIL_MESSENGER", "smtp"))
    return schedule_messages(to_dispatcher_message(email_message), recipients(alias, addresses), **options)


class EmailBackend(BaseEmailBackend):
    """``EMAIL_BACKEND = "dispatcher.mail.EmailBackend"``: Django's mail as dispatches.

    ``send_messages`` returns how many mails were scheduled; with
    ``fail_silently`` a mail the dispatcher refuses (a bad address, too large)
    is skipped instead of raising. Login options Django passes
    (``auth_user``/``auth_password`` of ``send_mail``) are the messenger's
    business and are ignored here.
    """

    def __init__(self, fail_silently: bool = False, messenger: str | None = None, **kwargs: Any) -> None:
        super().__init__(fail_silently=fail_silently)
        self.messenger = messenger

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        scheduled = 0
        for email_message in email_messages:
            try:
                if schedule_email(email_message, self.messenger):
                    scheduled += 1
            except (DispatcherError, InvalidAddress):
                if not self.fail_silently:
                    raise
        return scheduled
