"""The feed's JSON API (namespace ``feed``, names ``api-*``), for scripts of the site.

The same rules as the private messages' API (:mod:`dispatcher.jsonapi`):
logged-in users only (401), JSON answers and errors, never cached, state
changes by POST with the CSRF token in ``X-CSRFToken``, someone else's
notification is a 404.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from dispatcher import jsonapi
from dispatcher.jsonapi import NotFound, not_found

from . import api
from .models import Notification

__all__ = ["not_found"]

DEFAULT_LIMIT = 20
DEFAULT_MAX_LIMIT = 100

api_view = jsonapi.json_api("DISPATCHER_FEED_API_MAX_BODY_SIZE")


def serialize(notification: Notification) -> dict[str, Any]:
    return {
        "id": notification.pk,
        "subject": notification.subject,
        "text": notification.text,
        "url": notification.url,
        "message_type": notification.message_type,
        "created": notification.created,
        "read_at": notification.read_at,
        "unread": notification.read_at is None,
    }


def _one(request: HttpRequest, pk: str) -> Notification:
    notification = api.feed(request.user).filter(pk=jsonapi.url_id(pk, "notification")).first()
    if notification is None:
        raise NotFound("no such notification")
    return notification


@api_view("GET")
def unread_count(request: HttpRequest) -> HttpResponse:
    """``{"unread_count": N}``: the bell's number, one indexed COUNT."""
    return JsonResponse({"unread_count": api.unread_count(request.user)})


@api_view("GET")
def notification_list(request: HttpRequest) -> HttpResponse:
    """Newest first; ``?unread`` keeps the unread ones, ``?limit`` bounds the list."""
    maximum = int(getattr(settings, "DISPATCHER_FEED_API_MAX_LIMIT", DEFAULT_MAX_LIMIT))
    limit = jsonapi.limit(request, DEFAULT_LIMIT, maximum)
    items = api.feed(request.user, unread=jsonapi.flag(request, "unread"))[:limit]
    return JsonResponse({
        "notifications": [serialize(n) for n in items],
        "unread_count": api.unread_count(request.user),
    })


@api_view("GET")
def detail(request: HttpRequest, pk: str) -> HttpResponse:
    return JsonResponse({"notification": serialize(_one(request, pk))})


@api_view("POST")
def mark_read(request: HttpRequest, pk: str) -> HttpResponse:
    notification = _one(request, pk)
    api.mark_read(request.user, [notification.pk])
    notification.refresh_from_db()
    return JsonResponse({"notification": serialize(notification),
                         "unread_count": api.unread_count(request.user)})


@api_view("POST")
def mark_all_read(request: HttpRequest) -> HttpResponse:
    changed = api.mark_all_read(request.user)
    return JsonResponse({"changed": changed, "unread_count": 0})


@api_view("POST")
def delete(request: HttpRequest, pk: str) -> HttpResponse:
    notification = _one(request, pk)
    api.delete(request.user, [notification.pk])
    return JsonResponse({"deleted": 1, "unread_count": api.unread_count(request.user)})
