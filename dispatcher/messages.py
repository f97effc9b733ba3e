"""Message types: what a message is, and how it renders for one recipient.

Rendering happens per dispatch, so anything recipient-specific (names,
unsubscribe links) is never shared between recipients.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

from django.conf import settings
from django.template.loader import render_to_string
from django.utils.functional import lazy
from django.utils.html import strip_tags

from messengers.base import Attachment, MessengerBase, Rendered

from . import links
from .exceptions import InvalidArgument

#: Message context flag: the recipients are subscribers, so mails carry unsubscribe headers.
UNSUBSCRIBABLE = "_unsubscribe"
#: Message context key of the attachments (a list of dicts, the bytes in base64).
ATTACHMENTS = "_attachments"
#: Default of ``settings.DISPATCHER_MAIL_MAX_BYTES``: the most a mail's text,
#: HTML and attachments (before encoding) may weigh together.
DEFAULT_MAIL_MAX_BYTES = 10 * 1024 * 1024


class InvalidAttachment(InvalidArgument):
    """An attachment that is not a file name and bytes (or text), a Path or an ``Attachment``."""


class MailTooLarge(InvalidArgument):
    """A mail whose text, HTML and attachments weigh more than ``DISPATCHER_MAIL_MAX_BYTES``."""


def mail_max_bytes() -> int:
    return int(getattr(settings, "DISPATCHER_MAIL_MAX_BYTES", DEFAULT_MAIL_MAX_BYTES))


def to_attachment(item: Any) -> Attachment:
    """An :class:`Attachment` from what Django's ``EmailMessage.attach`` takes:
    ``(filename, content[, mimetype])`` with bytes or text, a ``Path``, or an
    ``Attachment``. A missing type is guessed from the name, as Django does."""
    if isinstance(item, Attachment):
        attachment = item
    elif isinstance(item, Path):
        try:
            content = item.read_bytes()
        except OSError as exc:
            raise InvalidAttachment(f"attachment {str(item)!r} cannot be read: {exc.strerror}") from None
        attachment = Attachment(item.name, content, _guess(item.name))
    elif isinstance(item, (tuple, list)) and len(item) in (2, 3):
        filename, content, mimetype = (*item, None) if len(item) == 2 else item
        if filename is not None and not isinstance(filename, str):
            raise InvalidAttachment(f"an attachment's name must be a string, not {type(filename).__name__}")
        if isinstance(content, str):
            content = content.encode("utf-8")
        if not isinstance(content, (bytes, bytearray, memoryview)):
            raise InvalidAttachment(
                f"the content of attachment {filename!r} must be bytes or text, not {type(content).__name__}"
            )
        attachment = Attachment(filename or None, bytes(content), mimetype or _guess(filename),
                                "attachment" if filename else None)
    else:
        raise InvalidAttachment(
            f"{type(item).__name__} is not an attachment: give (filename, content[, mimetype]), "
            "a pathlib.Path or a messengers.base.Attachment"
        )
    if not isinstance(attachment.mimetype, str) or attachment.mimetype.count("/") != 1:
        raise InvalidAttachment(
            f"attachment {attachment.filename!r}: {attachment.mimetype!r} is not a MIME type"
        )
    return attachment


def _guess(filename: str | None) -> str:
    return (mimetypes.guess_type(filename)[0] if filename else None) or "application/octet-stream"


def store_attachments(context: dict[str, Any], attachments: Iterable[Any] | None, *texts: Any) -> None:
    """Put ``attachments`` into a message context (base64), refusing a mail over the size limit.

    ``texts`` (the text and HTML given, when they are strings) count towards
    the limit with the attachments' bytes.
    """
    files = [to_attachment(a) for a in attachments or ()]
    size = sum(len(a.content) for a in files) + sum(
        len(t.encode("utf-8", "surrogatepass")) for t in texts if isinstance(t, str)
    )
    limit = mail_max_bytes()
    if size > limit:
        raise MailTooLarge(
            f"the mail weighs {size} bytes (text, HTML and attachments); at most {limit} are "
            "accepted (settings.DISPATCHER_MAIL_MAX_BYTES)"
        )
    if files:
        context[ATTACHMENTS] = [
            {"filename": a.filename, "mimetype": a.mimetype, "disposition": a.disposition,
             "content_id": a.content_id, "content": base64.b64encode(a.content).decode("ascii")}
            for a in files
        ]


def load_attachments(message_model: Any) -> tuple[Attachment, ...]:
    """The attachments stored in a message's context, decoded once per message object."""
    cached = getattr(message_model, "_dispatcher_attachments", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    stored = message_model.context.get(ATTACHMENTS) or []
    try:
        loaded = tuple(
            Attachment(item.get("filename"), base64.b64decode(item["content"], validate=True),
                       item.get("mimetype") or "application/octet-stream",
                       item.get("disposition"), item.get("content_id"))
            for item in stored
        )
    except (KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise ValueError(f"the message's stored attachments are damaged: {exc!r}") from None
    try:
        message_model._dispatcher_attachments = loaded
    except AttributeError:
        pass  # an object that takes no attributes: decoded again next time
    return loaded


class MessageBase:
    """Base class of message types.

    Subclass it, set ``alias`` and, for templated messages, ``template`` (and
    ``html_template``), then ``register_message_types(MyMessage)``.
    """

    alias: ClassVar[str] = ""
    title: ClassVar[str] = ""
    #: One line telling users what they get (shown under the title on the preferences page).
    description: ClassVar[str] = ""
    #: The key of the group the preferences page shows it in (DISPATCHER_MESSAGE_CATEGORIES).
    category: ClassVar[str] = ""
    #: Django template for the text body; None renders ``context["text"]``.
    template: ClassVar[str | None] = None
    #: Django template for an HTML body, for messengers that send HTML.
    html_template: ClassVar[str | None] = None
    priority: ClassVar[int] = 0
    #: Attempts before a dispatch is FAILED; None uses DISPATCHER_RETRY_LIMIT.
    send_retry_limit: ClassVar[int | None] = None
    allow_user_subscription: ClassVar[bool] = True
    #: The capability a messenger needs to carry this type (``"email"``):
    #: any messenger whose ``capabilities`` include it, under any alias.
    requires: ClassVar[str | None] = None
    #: Aliases of the messengers this type may go through; None: any. Kept
    #: for django-sitemessage's form; prefer ``requires``, which does not
    #: break when a messenger is configured twice (``smtp`` and ``smtp_bulk``).
    supported_messengers: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, context: dict[str, Any] | str | None = None, template_path: str | None = None):
        if isinstance(context, str):
            context = {"text": context}
        self.context: dict[str, Any] = dict(context or {})
        if template_path:
            self.context["_template"] = template_path

    @classmethod
    def get_retry_limit(cls) -> int:
        return cls.send_retry_limit or settings.DISPATCHER_RETRY_LIMIT

    @classmethod
    def supports(cls, messenger: MessengerBase) -> bool:
        """Whether this type can go through ``messenger`` (a registered messenger object)."""
        if cls.requires is not None and cls.requires not in messenger.capabilities:
            return False
        return cls.supported_messengers is None or messenger.alias in cls.supported_messengers

    @classmethod
    def get_context(cls, message_model: Any, dispatch: Any) -> dict[str, Any]:
        context = dict(message_model.context)
        context.update(
            message=message_model,
            dispatch=dispatch,
            recipient=dispatch.recipient if dispatch.recipient_id else None,
            address=dispatch.address,
            messenger=dispatch.messenger,
            site_url=settings.SITE_URL,
            # Per-dispatch signed links, computed only if the template uses them.
            unsubscribe_url=lazy(links.unsubscribe_url, str)(dispatch),
            read_pixel_url=lazy(links.read_pixel_url, str)(dispatch),
        )
        return context

    @classmethod
    def render(cls, message_model: Any, dispatch: Any) -> Rendered:
        """Render the message for one dispatch."""
        stored = message_model.context
        template = stored.get("_template") or cls.template
        if not template and not cls.html_template:
            # Fast path: plain texts need no template engine.
            text = str(stored.get("text", ""))
            return Rendered(subject=cls.get_subject(stored, text), text=text,
                            attachments=load_attachments(message_model) if ATTACHMENTS in stored else ())
        context = cls.get_context(message_model, dispatch)
        text = render_to_string(template, context) if template else str(stored.get("text", ""))
        html = render_to_string(cls.html_template, context) if cls.html_template else ""
        if html and not text:
            text = strip_tags(html)
        return Rendered(subject=cls.get_subject(stored, text), text=text, html=html,
                        attachments=load_attachments(message_model))

    @staticmethod
    def get_subject(context: dict[str, Any], text: str) -> str:
        subject = context.get("subject")
        if subject:
            return str(subject)
        first_line = text.strip().splitlines()[0] if text.strip() else ""
        return first_line[:78]


class PlainTextMessage(MessageBase):
    """A plain text; ``schedule_messages('Hi!', ...)`` makes one of these."""

    alias = "plain"
    title = "Plain text"
    #: A generic type, for the site's own sending: not offered to users on the
    #: preferences page unless a site says so (a subclass, or setting this to True).
    allow_user_subscription = False

    def __init__(self, text: str):
        super().__init__({"text": text})


class EmailTextMessage(MessageBase):
    """An e-mail with a subject and a plain-text body.

    ``attachments``: ``(filename, content[, mimetype])`` tuples (bytes or
    text), ``pathlib.Path`` objects or ``messengers.base.Attachment``; the
    whole mail may weigh at most ``DISPATCHER_MAIL_MAX_BYTES``.
    """

    alias = "email_plain"
    title = "E-mail (text)"
    requires = "email"
    allow_user_subscription = False  # generic: see PlainTextMessage

    def __init__(self, subject: str, text_or_context: str | dict[str, Any], template_path: str | None = None,
                 attachments: Iterable[Any] | None = None):
        context = {"text": text_or_context} if isinstance(text_or_context, str) else dict(text_or_context)
        context["subject"] = subject
        super().__init__(context, template_path)
        store_attachments(self.context, attachments, self.context.get("text"))


class EmailHtmlMessage(MessageBase):
    """An e-mail with an HTML body (and its text version for plain-text clients).

    Give the HTML itself, or a context dict and ``template_path``;
    ``attachments`` as for :class:`EmailTextMessage`.
    """

    alias = "email_html"
    title = "E-mail (HTML)"
    requires = "email"
    allow_user_subscription = False  # generic: see PlainTextMessage

    def __init__(self, subject: str, html_or_context: str | dict[str, Any], template_path: str | None = None,
                 attachments: Iterable[Any] | None = None):
        if isinstance(html_or_context, str):
            context: dict[str, Any] = {"html": html_or_context}
        else:
            context = dict(html_or_context)
        context["subject"] = subject
        super().__init__(context, None)
        if template_path:
            self.context["_html_template"] = template_path
        store_attachments(self.context, attachments, self.context.get("html"), self.context.get("text"))

    @classmethod
    def render(cls, message_model: Any, dispatch: Any) -> Rendered:
        stored = message_model.context
        html_template = stored.get("_html_template") or cls.html_template
        if html_template:
            html = render_to_string(html_template, cls.get_context(message_model, dispatch))
        else:
            html = str(stored.get("html", ""))
        text = str(stored.get("text") or strip_tags(html))
        return Rendered(subject=cls.get_subject(stored, text), text=text, html=html,
                        attachments=load_attachments(message_model))


class DjangoEmailMessage(MessageBase):
    """A mail handed to Django's mail API (``send_mail``, ``EmailMessage.send``)
    and sent through the dispatcher by ``dispatcher.mail.EmailBackend``.

    It carries what Django's SMTP backend would write: the subject, the text
    and HTML parts, the headers (From, To, Cc, Reply-To and the extra ones,
    already decoded) and the attachments. Each recipient (To, Cc and Bcc) is
    a dispatch of its own; the headers are the same for all of them.
    """

    alias = "django_email"
    title = "E-mail (Django mail)"
    requires = "email"
    allow_user_subscription = False

    def __init__(self, subject: str, text: str = "", html: str = "", headers: dict[str, str] | None = None,
                 attachments: Iterable[Any] | None = None):
        super().__init__({"subject": subject, "text": text, "html": html, "headers": dict(headers or {})})
        store_attachments(self.context, attachments, text, html)

    @classmethod
    def render(cls, message_model: Any, dispatch: Any) -> Rendered:
        stored = message_model.context
        return Rendered(subject=str(stored.get("subject") or ""), text=str(stored.get("text") or ""),
                        html=str(stored.get("html") or ""), headers=dict(stored.get("headers") or {}),
                        attachments=load_attachments(message_model))


class ModelEventMessage(MessageBase):
    """A notification about a model event (see ``dispatcher.model_events``).

    Subject and text are rendered from the object's fields when the event is
    evaluated; per-recipient links are added per dispatch.
    """

    alias = "model_event"
    title = "Model event"
    allow_user_subscription = False  # subscribed to through model-event subscriptions

    def __init__(self, subject: str, text: str, model: str, action: str, object_id: str):
        super().__init__({"subject": subject, "text": text, "model": model, "action": action,
                          "object_id": object_id, UNSUBSCRIBABLE: True})


BUILTIN_MESSAGE_TYPES: list[type[MessageBase]] = [
    PlainTextMessage, EmailTextMessage, EmailHtmlMessage, DjangoEmailMessage, ModelEventMessage,
]
