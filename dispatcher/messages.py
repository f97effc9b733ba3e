"""Message types: what a message is, and how it renders for one recipient.

Rendering happens per dispatch, so anything recipient-specific (names,
unsubscribe links) is never shared between recipients.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.conf import settings
from django.template.loader import render_to_string
from django.utils.functional import lazy
from django.utils.html import strip_tags

from messengers.base import MessengerBase, Rendered

from . import links

#: Message context flag: the recipients are subscribers, so mails carry unsubscribe headers.
UNSUBSCRIBABLE = "_unsubscribe"


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
            return Rendered(subject=cls.get_subject(stored, text), text=text)
        context = cls.get_context(message_model, dispatch)
        text = render_to_string(template, context) if template else str(stored.get("text", ""))
        html = render_to_string(cls.html_template, context) if cls.html_template else ""
        if html and not text:
            text = strip_tags(html)
        return Rendered(subject=cls.get_subject(stored, text), text=text, html=html)

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
    """An e-mail with a subject and a plain-text body."""

    alias = "email_plain"
    title = "E-mail (text)"
    requires = "email"
    allow_user_subscription = False  # generic: see PlainTextMessage

    def __init__(self, subject: str, text_or_context: str | dict[str, Any], template_path: str | None = None):
        context = {"text": text_or_context} if isinstance(text_or_context, str) else dict(text_or_context)
        context["subject"] = subject
        super().__init__(context, template_path)


class EmailHtmlMessage(MessageBase):
    """An e-mail with an HTML body (and its text version for plain-text clients).

    Give the HTML itself, or a context dict and ``template_path``.
    """

    alias = "email_html"
    title = "E-mail (HTML)"
    requires = "email"
    allow_user_subscription = False  # generic: see PlainTextMessage

    def __init__(self, subject: str, html_or_context: str | dict[str, Any], template_path: str | None = None):
        if isinstance(html_or_context, str):
            context: dict[str, Any] = {"html": html_or_context}
        else:
            context = dict(html_or_context)
        context["subject"] = subject
        super().__init__(context, None)
        if template_path:
            self.context["_html_template"] = template_path

    @classmethod
    def render(cls, message_model: Any, dispatch: Any) -> Rendered:
        stored = message_model.context
        html_template = stored.get("_html_template") or cls.html_template
        if html_template:
            html = render_to_string(html_template, cls.get_context(message_model, dispatch))
        else:
            html = str(stored.get("html", ""))
        text = str(stored.get("text") or strip_tags(html))
        return Rendered(subject=cls.get_subject(stored, text), text=text, html=html)


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
    PlainTextMessage, EmailTextMessage, EmailHtmlMessage, ModelEventMessage,
]
