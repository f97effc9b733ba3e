"""The JSON API of private messages (namespace ``dispatcher:api``).

Every view answers JSON, for the logged-in user only: an anonymous request
gets 401, a message the user did not send or receive is a 404 (its existence
is not revealed), and no response is ever cached (they are per user).
Reading never changes anything: state changes are POSTs, protected by
Django's CSRF check like any form. GET responses set the CSRF cookie, so
a script that polls ``unread-count`` has the token it needs to POST.

Errors are JSON too, whatever goes wrong: a wrong method (405), a failed
CSRF check (403), a body too large (413), a malformed body or a bad id
(400/404), an unknown path under the API (404), and even a bug (500). That is
why the CSRF check runs here, in :func:`api_view`, and not in the
middleware, whose failure page is HTML.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.module_loading import import_string

from dispatcher import jsonapi
from dispatcher.jsonapi import BadRequest, NotFound, error, not_found, parse_id
from dispatcher.validation import is_unstorable

from .api import Inbox, pm_write
from .exceptions import InvalidMessage, MessageNotFound, MessagePermissionDenied
from .models import PrivateMessage

__all__ = ["BadRequest", "NotFound", "error", "not_found", "parse_id"]

DEFAULT_LIMIT = 50
DEFAULT_MAX_LIMIT = 100
#: Largest request body the API reads (bytes); more is a 413 before it is read.
DEFAULT_MAX_BODY_SIZE = jsonapi.DEFAULT_MAX_BODY_SIZE

View = Callable[..., HttpResponse]

#: JSON view for an authenticated user: 401 otherwise, every error as JSON, never cached.
api_view = jsonapi.json_api("DISPATCHER_INBOX_API_MAX_BODY_SIZE", errors=[
    (MessageNotFound, 404, "no such message"),
    (MessagePermissionDenied, 403, None),
    (InvalidMessage, 400, None),
])


def max_body_size() -> int:
    return int(getattr(settings, "DISPATCHER_INBOX_API_MAX_BODY_SIZE", DEFAULT_MAX_BODY_SIZE))


def _url_id(value: str, what: str = "message") -> int:
    """An id from the URL; a malformed one names nothing: 404, as an unknown one."""
    return jsonapi.url_id(value, what)


def _side(message: PrivateMessage, user: Any) -> str:
    return "sender" if message.sender_id == user.pk else "recipient"


def serialize(message: PrivateMessage, user: Any) -> dict[str, Any]:
    """A message as ``user`` sees it (their side's archived/deleted state)."""
    side = _side(message, user)
    data = {
        "id": message.pk,
        "subject": message.subject,
        "body": message.body,
        "sender": message.sender_label,
        "sender_id": message.sender_id,
        "recipient": message.recipient_label,
        "recipient_id": message.recipient_id,
        "sent_at": message.sent_at,
        "read_at": message.read_at,
        "replied_at": message.replied_at,
        "parent_id": message.parent_id,
        "thread_id": message.thread_id,
        "archived": getattr(message, f"{side}_archived"),
        "deleted": getattr(message, f"{side}_deleted_at") is not None,
    }
    if side == "sender":
        # Only the sender learns about moderation; a recipient sees accepted messages only.
        data["moderation_status"] = message.moderation_status
        data["moderation_reason"] = message.moderation_reason
    return data


def _limit(request: HttpRequest) -> int:
    maximum = getattr(settings, "DISPATCHER_INBOX_API_MAX_LIMIT", DEFAULT_MAX_LIMIT)
    return jsonapi.limit(request, DEFAULT_LIMIT, maximum)


def _flag(request: HttpRequest, name: str) -> bool:
    """``?unread``, ``?unread=1`` or ``=true`` turn a flag on; ``=0``/``=false``/``=no`` off."""
    return jsonapi.flag(request, name)


FOLDERS = ("inbox", "sent", "archives", "trash")


@api_view("GET")
def unread_count(request: HttpRequest) -> HttpResponse:
    """``{"unread_count": N}``: django-postman's ``unread-count``."""
    return JsonResponse({"unread_count": PrivateMessage.objects.unread_count(request.user)})


@api_view("GET")
def message_list(request: HttpRequest) -> HttpResponse:
    """A folder (``?folder=inbox|sent|archives|trash``, default inbox), newest
    first; ``?unread`` keeps unread inbox messages, ``?limit`` bounds the page."""
    folder = request.GET.get("folder", "inbox")
    if folder not in FOLDERS:
        raise BadRequest(f"folder must be one of {', '.join(FOLDERS)}")
    limit = _limit(request)
    if folder == "inbox":
        qs = PrivateMessage.objects.inbox(request.user, unread=_flag(request, "unread"))
    else:
        qs = getattr(PrivateMessage.objects, folder)(request.user)
        if _flag(request, "unread"):
            qs = qs.filter(recipient=request.user.pk, read_at__isnull=True)
    return JsonResponse({"folder": folder, "messages": [serialize(m, request.user) for m in qs[:limit]]})


@api_view("GET")
def message_detail(request: HttpRequest, pk: str) -> HttpResponse:
    """One message the user sent or received. Reading it here does not mark it
    read (a GET changes nothing): POST to ``mark-read`` for that."""
    message = Inbox.get_message(_url_id(pk), request.user)
    return JsonResponse({"message": serialize(message, request.user)})


@api_view("GET")
def thread(request: HttpRequest, pk: str) -> HttpResponse:
    """The conversation the message belongs to, oldest first."""
    messages = Inbox.thread(request.user, _url_id(pk))
    return JsonResponse({"messages": [serialize(m, request.user) for m in messages]})


@api_view("POST")
def mark_read(request: HttpRequest, pk: str) -> HttpResponse:
    """Mark a received message read (only its recipient may: 403 for its sender)."""
    message = Inbox.get_message(_url_id(pk), request.user)  # 404 for anyone else
    Inbox.mark_as_read(message, request.user)
    message.refresh_from_db(fields=["read_at"])
    return JsonResponse({"message": serialize(message, request.user)})


def _side_action(change: Callable[[Any, Any], int]) -> View:
    @api_view("POST")
    def view(request: HttpRequest, pk: str) -> HttpResponse:
        message = Inbox.get_message(_url_id(pk), request.user)
        change(request.user, message)
        message.refresh_from_db()
        return JsonResponse({"message": serialize(message, request.user)})

    return view


archive = _side_action(PrivateMessage.objects.archive)
unarchive = _side_action(PrivateMessage.objects.unarchive)
delete = _side_action(PrivateMessage.objects.delete_for)
undelete = _side_action(PrivateMessage.objects.undelete_for)


def _payload(request: HttpRequest) -> dict[str, Any]:
    if request.content_type == "application/json":
        try:
            data = json.loads(request.body or b"{}")
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
            raise BadRequest("the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise BadRequest("the body must be a JSON object")
        return data
    return request.POST.dict()


def _text(data: dict[str, Any], name: str) -> str:
    """A string field (empty when absent), refused when the database could not store it."""
    value = data.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string")
    if is_unstorable(value):
        raise BadRequest(f"{name} holds a NUL character or an invalid (lone surrogate) character")
    return value


def _recipient(data: dict[str, Any]) -> Any:
    """The active user named by ``recipient_id`` or ``recipient``; the same
    answer for an unknown and an inactive user."""
    user_model = get_user_model()
    users = user_model._default_manager.filter(is_active=True)
    try:
        if data.get("recipient_id") not in (None, ""):
            return users.get(pk=parse_id(data["recipient_id"], "recipient_id"))
        username = _text(data, "recipient")
        if username:
            return users.get(**{user_model.USERNAME_FIELD: username})
    except (user_model.DoesNotExist, ValidationError):
        raise BadRequest("no such recipient") from None
    return None


def auto_moderators() -> list[Callable[[PrivateMessage], Any]]:
    """``DISPATCHER_INBOX_AUTO_MODERATORS``: callables or dotted paths, applied
    to what users send through the API (users are not trusted callers)."""
    return [
        import_string(m) if isinstance(m, str) else m
        for m in getattr(settings, "DISPATCHER_INBOX_AUTO_MODERATORS", ())
    ]


@api_view("POST")
def send(request: HttpRequest) -> HttpResponse:
    """Write a message: ``recipient`` (username) or ``recipient_id``, ``subject``,
    ``body``; or ``parent`` (a message id) to reply in its thread. JSON or form
    fields. 201 with the message; its ``moderation_status`` says if it waits
    for a moderator."""
    data = _payload(request)
    user = request.user
    recipient = _recipient(data)
    parent = None
    if data.get("parent") not in (None, ""):
        parent = Inbox.get_message(parse_id(data["parent"], "parent"), user)
        if recipient is None:
            recipient = parent.recipient if parent.sender_id == user.pk else parent.sender
    if recipient is None:
        raise BadRequest("recipient or recipient_id is required")
    if recipient.pk == user.pk:
        raise BadRequest("you cannot write to yourself")
    subject, body = _text(data, "subject"), _text(data, "body")
    if not (subject.strip() or body.strip()):
        raise BadRequest("a message needs a subject or a body")
    message = pm_write(user, recipient, subject, body, auto_moderators=auto_moderators() or None,
                       parent=parent)
    return JsonResponse({"message": serialize(message, user)}, status=201)


@api_view("GET")
def conversations(request: HttpRequest) -> HttpResponse:
    """The users the user exchanged messages with, most recent first."""
    partners = Inbox.get_conversations(request.user)
    return JsonResponse({
        "conversations": [
            {"user_id": u.pk, "username": u.get_username(), "last_message_at": u.last_message_at}
            for u in partners
        ]
    })


@api_view("GET")
def conversation(request: HttpRequest, user_id: str) -> HttpResponse:
    """The messages between the user and ``user_id``; ``?limit`` (bounded) and
    ``?reversed`` (the latest first), as directmessages' ``get_conversation``.

    The other user is never looked up: an unknown, inactive or unrelated user
    id all answer an empty list, so the answer does not tell whether a user
    with that id exists.
    """
    messages = Inbox.get_conversation(request.user, _url_id(user_id, "user"), limit=_limit(request),
                                      newest_first=_flag(request, "reversed"))
    return JsonResponse({"messages": [serialize(m, request.user) for m in messages]})
