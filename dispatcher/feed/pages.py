"""The feed page (``feed:list``) and its actions, for the logged-in user.

Reading changes nothing; marking read, all read or deleting is a POST
with CSRF (the page's script sends them without a reload, and the forms
work without it). Texts are plain, escaped, with web addresses made links.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.contrib import messages as notices
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.functional import SimpleLazyObject
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST, require_safe

from dispatcher.jsonapi import DIGITS, ID_MAX

from . import api

DEFAULT_PAGE_SIZE = 20


def _ids(values: Iterable[str]) -> list[int]:
    ids = []
    for value in list(values)[:1000]:
        if DIGITS.fullmatch(value) and 1 <= int(value) <= ID_MAX:
            ids.append(int(value))
    return ids


def _next_url(request: HttpRequest) -> str:
    candidate = request.POST.get("next", "")
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return reverse("feed:list")


@login_required
@never_cache
@require_safe
def notification_list(request: HttpRequest) -> HttpResponse:
    user = request.user
    unread = "unread" in request.GET
    size = int(getattr(settings, "DISPATCHER_FEED_PAGE_SIZE", DEFAULT_PAGE_SIZE))
    page = Paginator(api.feed(user, unread=unread), size).get_page(request.GET.get("page"))
    context = {
        "page": page,
        "notifications": page.object_list,
        "unread_only": unread,
        "here": request.get_full_path(),
        "feed_unread_count": SimpleLazyObject(lambda: api.unread_count(user)),
        "live_poll_seconds": int(getattr(settings, "DISPATCHER_LIVE_POLL_SECONDS", 15)),
    }
    return render(request, "feed/list.html", context)


def _action(change: Callable[[Any, list[int]], int], done: str,
            needs_ids: bool = True) -> Callable[[HttpRequest], HttpResponse]:
    @login_required
    @never_cache
    @require_POST
    def action(request: HttpRequest) -> HttpResponse:
        ids = _ids(request.POST.getlist("pks"))
        count = change(request.user, ids) if ids or not needs_ids else 0
        if "application/json" in request.headers.get("Accept", ""):
            return JsonResponse({"changed": count, "unread_count": api.unread_count(request.user)})
        text = f"{count} notification{'s' if count != 1 else ''} {done}."
        notices.add_message(request, notices.SUCCESS, text, fail_silently=True)
        return redirect(_next_url(request))

    return action


mark_read = _action(api.mark_read, "marked read")
mark_unread = _action(api.mark_unread, "marked unread")
mark_all_read = _action(lambda user, ids: api.mark_all_read(user), "marked read", needs_ids=False)
delete = _action(api.delete, "deleted")
