"""The private-message pages (namespace ``inbox``): django-postman's folders,
view, write and reply, with its URL names.

Every page is for the logged-in user (others are sent to ``LOGIN_URL``) and
shows only that user's messages: a message they neither sent nor received,
or one still pending for them, is a 404, so its existence is not revealed.
Pages are read with GET and never change anything (opening a message does
not mark it read: the page's script POSTs that, or the reader presses
"Mark as read"); every change is a POST through Django's CSRF check. Message
bodies are plain text, escaped, with web addresses made into links.

The templates (``inbox/*.html``) extend ``inbox/base.html``, which extends
``dispatcher/site_base.html``: override either in your site's templates to
fit the pages into your layout.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib import messages as notices
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.paginator import Page, Paginator
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import SimpleLazyObject
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from .api import Inbox, pm_write
from .exceptions import MessageNotFound, RecipientRefused
from .exchange import block, unblock
from .forms import ReplyForm, WriteForm, split_usernames
from .models import SUBJECT_MAX_LENGTH, Block, PrivateMessage
from .views import auto_moderators

DEFAULT_PAGE_SIZE = 20
ID_MAX = 2**63 - 1
_DIGITS = re.compile(r"[0-9]{1,19}")

FOLDERS = {
    "inbox": "Inbox",
    "sent": "Sent messages",
    "archives": "Archives",
    "trash": "Trash",
}


def page_size() -> int:
    return int(getattr(settings, "DISPATCHER_INBOX_PAGE_SIZE", DEFAULT_PAGE_SIZE))


def live_poll_seconds() -> int:
    return int(getattr(settings, "DISPATCHER_LIVE_POLL_SECONDS", 15))


def parse_id(value: Any) -> int | None:
    """A positive id from a URL or a form field, or None (never a rounded or overflowing one)."""
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        number = int(value)
        if 1 <= number <= ID_MAX:
            return number
    return None


def _ids(values: list[str]) -> list[int]:
    return [i for i in (parse_id(v) for v in values[:1000]) if i is not None]


def page_context(request: HttpRequest, **extra: Any) -> dict[str, Any]:
    """What every inbox page's template gets: the header's unread count
    (computed only if the template shows it) and the live-update interval."""
    user = request.user
    return {
        "inbox_unread_count": SimpleLazyObject(lambda: PrivateMessage.objects.unread_count(user)),
        "live_poll_seconds": live_poll_seconds(),
        **extra,
    }


def _message_or_404(request: HttpRequest, raw_id: str) -> PrivateMessage:
    pk = parse_id(raw_id)
    if pk is None:
        raise Http404("no such message")
    try:
        return Inbox.get_message(pk, request.user)
    except MessageNotFound:
        raise Http404("no such message") from None


def _next_url(request: HttpRequest, default: str) -> str:
    """The ``next`` field or parameter when it points into this site, else ``default``."""
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return default


def _notice(request: HttpRequest, text: str, level: int = notices.INFO) -> None:
    notices.add_message(request, level, text, fail_silently=True)


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _flag(request: HttpRequest, name: str) -> bool:
    return name in request.GET and request.GET[name].strip().lower() not in ("0", "false", "no", "off")


def _paginate(request: HttpRequest, queryset: Any) -> Page:
    return Paginator(queryset, page_size()).get_page(request.GET.get("page"))


# -- folders -----------------------------------------------------------------------------------
def _folder_view(name: str) -> Callable[[HttpRequest], HttpResponse]:
    @login_required
    @never_cache
    @require_safe
    def folder(request: HttpRequest) -> HttpResponse:
        user = request.user
        unread = name == "inbox" and _flag(request, "unread")
        if name == "inbox":
            queryset = PrivateMessage.objects.inbox(user, unread=unread)
        else:
            queryset = getattr(PrivateMessage.objects, name)(user)
        page = _paginate(request, queryset)
        context = page_context(
            request, folder=name, folder_title=FOLDERS[name], page=page, pm_messages=page.object_list,
            unread_only=unread, here=request.get_full_path(),
        )
        return render(request, f"inbox/{name}.html", context)

    folder.__name__ = name
    folder.__qualname__ = name
    return folder


inbox = _folder_view("inbox")
sent = _folder_view("sent")
archives = _folder_view("archives")
trash = _folder_view("trash")


# -- reading -----------------------------------------------------------------------------------
def _side_flags(message: PrivateMessage, user: Any) -> dict[str, Any]:
    is_sender = message.sender_id == user.pk
    side = "sender" if is_sender else "recipient"
    return {
        "is_sender": is_sender,
        "is_recipient": message.recipient_id == user.pk,
        "archived": getattr(message, f"{side}_archived"),
        "deleted": getattr(message, f"{side}_deleted_at") is not None,
    }


@login_required
@never_cache
@require_safe
def view(request: HttpRequest, message_id: str) -> HttpResponse:
    """One message. It is not marked read by this GET: the page's script POSTs
    ``mark-read`` (or the reader presses the button)."""
    message = _message_or_404(request, message_id)
    flags = _side_flags(message, request.user)
    context = page_context(
        request, message=message, pm_messages=[message], conversation=False,
        thread_id=message.thread_id, to_mark_read=[message.pk] if flags["is_recipient"] and message.is_new
        else [], here=request.get_full_path(), **flags,
    )
    return render(request, "inbox/view.html", context)


@login_required
@never_cache
@require_safe
def view_conversation(request: HttpRequest, thread_id: str) -> HttpResponse:
    """The whole conversation, oldest first, as the user may see it."""
    pk = parse_id(thread_id)
    if pk is None:
        raise Http404("no such conversation")
    try:
        thread = list(Inbox.thread(request.user, pk))
    except MessageNotFound:
        raise Http404("no such conversation") from None
    if not thread:
        raise Http404("no such conversation")
    user = request.user
    received = [m for m in thread if m.recipient_id == user.pk]
    last = thread[-1]
    context = page_context(
        request, message=last, pm_messages=thread, conversation=True, thread_id=last.thread_id or last.pk,
        to_mark_read=[m.pk for m in received if m.is_new], reply_to=received[-1] if received else last,
        here=request.get_full_path(), **_side_flags(last, user),
    )
    return render(request, "inbox/view.html", context)


# -- writing -----------------------------------------------------------------------------------
def _outcome_notice(request: HttpRequest, written: list[PrivateMessage]) -> None:
    sent_to = [m.recipient_label for m in written if m.is_accepted()]
    if sent_to:
        _notice(request, f"Message sent to {', '.join(sent_to)}.", notices.SUCCESS)
    pending = [m.recipient_label for m in written if m.is_pending()]
    if pending:
        _notice(request, f"Your message to {', '.join(pending)} is awaiting moderation.")
    for m in written:
        if m.is_rejected():
            reason = f": {m.moderation_reason}" if m.moderation_reason else "."
            _notice(request, f"Your message to {m.recipient_label} was rejected{reason}", notices.WARNING)


@login_required
@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def write(request: HttpRequest, recipients: str | None = None) -> HttpResponse:
    """Write to one or several users (postman's ``write``; ``write/bob:cat/``
    fills in the recipients, ``?subject=`` and ``?body=`` the rest)."""
    user = request.user
    if request.method == "POST":
        form = WriteForm(request.POST, sender=user)
        if form.is_valid():
            data = form.cleaned_data
            moderators = auto_moderators() or None
            try:
                with transaction.atomic():
                    written = [
                        pm_write(user, recipient, data["subject"], data["body"], auto_moderators=moderators)
                        for recipient in data["recipients"]
                    ]
            except RecipientRefused as exc:  # a block made between the check and the write
                form.add_error(None, str(exc))
            else:
                _outcome_notice(request, written)
                return redirect(_next_url(request, reverse("inbox:sent")))
    else:
        names = split_usernames(recipients or request.GET.get("to", ""))
        form = WriteForm(sender=user, initial={
            "recipients": ", ".join(names),
            "subject": request.GET.get("subject", "")[:SUBJECT_MAX_LENGTH],
            "body": request.GET.get("body", ""),
        })
    return render(request, "inbox/write.html", page_context(request, form=form, next=_next_url(request, "")))


def quote(message: PrivateMessage) -> str:
    """The body of a reply: the original, quoted, below a blank line to write on."""
    when = timezone.localtime(message.sent_at).strftime("%Y-%m-%d %H:%M")
    quoted = "\n".join(f"> {line}" if line else ">" for line in message.body.splitlines())
    return f"\n\n{message.sender_label} wrote on {when}:\n{quoted}\n"


def reply_subject(subject: str) -> str:
    if subject.lower().startswith("re:"):
        return subject
    return f"Re: {subject}"[:SUBJECT_MAX_LENGTH] if subject else ""


@login_required
@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def reply(request: HttpRequest, message_id: str) -> HttpResponse:
    """Answer a message, in its conversation, with the original quoted."""
    parent = _message_or_404(request, message_id)
    user = request.user
    if parent.recipient_id == user.pk:
        other: Any = parent.sender if parent.sender_id else parent.email
    else:
        other = parent.recipient if parent.recipient_id else parent.email
    if request.method == "POST":
        form = ReplyForm(request.POST)
        if form.is_valid():
            try:
                written = pm_write(user, other, form.cleaned_data["subject"], form.cleaned_data["body"],
                                   auto_moderators=auto_moderators() or None, parent=parent)
            except RecipientRefused as exc:
                form.add_error(None, exc.reason[:1].upper() + exc.reason[1:] + ".")
            else:
                if parent.recipient_id == user.pk:
                    Inbox.mark_read_for(user, [parent])
                _outcome_notice(request, [written])
                default = reverse("inbox:view_conversation", args=[written.thread_id or written.pk])
                return redirect(_next_url(request, default))
    else:
        form = ReplyForm(initial={"subject": reply_subject(parent.subject), "body": quote(parent)})
    other_label = other.get_username() if hasattr(other, "get_username") else other
    context = page_context(request, form=form, parent=parent, other=other_label, next=_next_url(request, ""))
    return render(request, "inbox/reply.html", context)


# -- changes, singly or for several selected messages -----------------------------------------
def _action(change: Callable[[Any, list[int]], int], done: str) -> Callable[[HttpRequest], HttpResponse]:
    @login_required
    @never_cache
    @require_POST
    def action(request: HttpRequest) -> HttpResponse:
        ids = _ids(request.POST.getlist("pks"))
        count = change(request.user, ids) if ids else 0
        if _wants_json(request):
            return JsonResponse({"changed": count,
                                 "unread_count": PrivateMessage.objects.unread_count(request.user)})
        if not ids:
            _notice(request, "Select at least one message first.", notices.WARNING)
        else:
            _notice(request, f"{count} message{'s' if count != 1 else ''} {done}.", notices.SUCCESS)
        return redirect(_next_url(request, reverse("inbox:inbox")))

    return action


archive = _action(PrivateMessage.objects.archive, "archived")
unarchive = _action(PrivateMessage.objects.unarchive, "moved back from the archives")
delete = _action(PrivateMessage.objects.delete_for, "moved to the trash")
undelete = _action(PrivateMessage.objects.undelete_for, "restored")
mark_read = _action(Inbox.mark_read_for, "marked read")
mark_unread = _action(Inbox.mark_unread_for, "marked unread")


# -- blocks ------------------------------------------------------------------------------------
@login_required
@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def blocks(request: HttpRequest) -> HttpResponse:
    """The users the user blocked; POST ``username`` blocks one more."""
    user = request.user
    error = ""
    if request.method == "POST":
        name = request.POST.get("username", "").strip()
        user_model = get_user_model()
        other = None
        if name and len(name) <= 150 and "\x00" not in name:
            other = user_model._default_manager.filter(
                is_active=True, **{user_model.USERNAME_FIELD: name}
            ).first()
        if other is None:
            error = "No such user."
        elif other.pk == user.pk:
            error = "You cannot block yourself."
        else:
            block(user, other)
            _notice(request, f"{other.get_username()} can no longer write to you.", notices.SUCCESS)
            return redirect(_next_url(request, reverse("inbox:blocks")))
    blocked = Block.objects.filter(blocker=user).select_related("blocked")
    return render(request, "inbox/blocks.html", page_context(request, blocks=blocked, error=error),
                  status=400 if error else 200)


@login_required
@never_cache
@require_POST
def unblock_users(request: HttpRequest) -> HttpResponse:
    """POST ``pks`` (user ids) lifts those blocks."""
    count = sum(unblock(request.user, pk) for pk in _ids(request.POST.getlist("pks")))
    if count:
        _notice(request, f"{count} user{'s' if count != 1 else ''} unblocked.", notices.SUCCESS)
    return redirect(_next_url(request, reverse("inbox:blocks")))
