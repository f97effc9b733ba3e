"""Pages a recipient reaches from a message: unsubscribe, mark read, preferences.

Links carry signed, expiring per-dispatch tokens. A GET never unsubscribes:
it shows a confirmation form that POSTs with CSRF. The RFC 8058 one-click
endpoint takes the mail provider's POST (which carries no cookie and no CSRF
token) and is authorised by the signed token alone.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from . import links
from .model_events import unsubscribe_dispatch_model_event
from .models import Dispatch, Subscription
from .registry import get_registered_message_types
from .signals import (
    dispatch_read,
    read_failed,
    send_link_signal,
    unsubscribe_failed,
    unsubscribed,
)
from .subscriptions import get_user_preferences_for_ui, set_user_preferences_from_request

PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)


def _dispatch_for(token: str, action: str) -> Dispatch:
    dispatch_id = links.read_token(token, action)
    dispatch = Dispatch.objects.select_related("message").filter(pk=dispatch_id).first()
    if dispatch is None:
        raise links.BadToken("this link is no longer valid")
    return dispatch


def unsubscribe_dispatch(dispatch: Dispatch) -> int:
    """Remove the subscription that made this dispatch; returns how many were removed.

    Only a subscription that existed when the dispatch was created can have
    made it. One made later (the user subscribed again after this message) is
    kept: a link stays valid for DISPATCHER_LINK_MAX_AGE, and an old mail's
    link must not undo a newer choice. The token was issued when the dispatch
    was rendered, after it was created, so this also spares every subscription
    made after the token was issued.
    """
    context = dispatch.message.context
    if context.get("model"):
        return unsubscribe_dispatch_model_event(dispatch, made_before=dispatch.created)
    who = Q(recipient_id=dispatch.recipient_id) if dispatch.recipient_id else Q(
        recipient__isnull=True, address=dispatch.address
    )
    return Subscription.objects.filter(
        who, message_type=dispatch.message.message_type, messenger=dispatch.messenger,
        created__lte=dispatch.created,
    ).delete()[0]


def _signal_sender(dispatch: Dispatch) -> Any:
    """Link signals are sent by the message type class (as django-sitemessage sends them)."""
    return get_registered_message_types().get(dispatch.message.message_type, Dispatch)


def _unsubscribe(request: HttpRequest, dispatch: Dispatch) -> None:
    removed = unsubscribe_dispatch(dispatch)
    send_link_signal(unsubscribed, _signal_sender(dispatch), request=request, message=dispatch.message,
                     dispatch=dispatch, removed=removed)


def _unsubscribe_failed(request: HttpRequest, exc: links.BadToken) -> None:
    send_link_signal(unsubscribe_failed, None, request=request, message=None, dispatch=None, reason=str(exc))


@never_cache
@require_http_methods(["GET", "POST"])
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    try:
        dispatch = _dispatch_for(token, links.UNSUBSCRIBE)
    except links.BadToken as exc:
        _unsubscribe_failed(request, exc)
        return render(request, "dispatcher/unsubscribe.html", {"error": str(exc)}, status=400)
    if request.method == "POST":
        _unsubscribe(request, dispatch)
        return render(request, "dispatcher/unsubscribe.html", {"done": True, "dispatch": dispatch})
    return render(request, "dispatcher/unsubscribe.html", {"dispatch": dispatch})


@csrf_exempt
@never_cache
@require_POST
def unsubscribe_one_click(request: HttpRequest, token: str) -> HttpResponse:
    if request.POST.get("List-Unsubscribe") != "One-Click":
        return HttpResponseBadRequest("expected List-Unsubscribe=One-Click")
    try:
        dispatch = _dispatch_for(token, links.UNSUBSCRIBE)
    except links.BadToken as exc:
        _unsubscribe_failed(request, exc)
        return HttpResponseBadRequest(str(exc))
    _unsubscribe(request, dispatch)
    return HttpResponse("unsubscribed", content_type="text/plain")


@never_cache
def read_pixel(request: HttpRequest, token: str) -> HttpResponse:
    """Mark a dispatch read. A GET, as an image in a mail must be; it only ever
    sets ``read_at`` once, from a signed token, and changes nothing else."""
    try:
        dispatch_id = links.read_token(token, links.READ)
    except links.BadToken as exc:
        send_link_signal(read_failed, None, request=request, message=None, dispatch=None, reason=str(exc))
        return HttpResponse(PIXEL, content_type="image/gif")
    first = bool(Dispatch.objects.filter(pk=dispatch_id, read_at__isnull=True).update(read_at=timezone.now()))
    if dispatch_read.receivers:  # the pixel stays one UPDATE when nobody listens
        dispatch = Dispatch.objects.select_related("message").filter(pk=dispatch_id).first()
        if dispatch is not None:
            send_link_signal(dispatch_read, _signal_sender(dispatch), request=request,
                             message=dispatch.message, dispatch=dispatch, first=first)
    return HttpResponse(PIXEL, content_type="image/gif")


@login_required
@never_cache
@require_http_methods(["GET", "POST"])
def preferences(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        try:
            set_user_preferences_from_request(request)
        except PermissionDenied as exc:
            return HttpResponse(str(exc), status=403, content_type="text/plain")
        return redirect("dispatcher:preferences")
    prefs = get_user_preferences_for_ui(request.user)
    context = {"messengers": prefs.messengers, "rows": prefs.rows}
    return render(request, "dispatcher/preferences.html", context)
