"""The suppression list over HTTP, for staff (``/dispatcher/suppressions/``).

JSON in and out; a logged-in staff session with the model permissions
(``dispatcher.view_suppression``, ``add_suppression``, ``delete_suppression``)
and, for changes, Django's CSRF token, as every other form of the site:

- ``GET ?address=...[&kind=...]``: the entries for an address (at most 100);
- ``POST {"messenger" or "kind", "address", "reason", "message_type", "detail"}``:
  add one (201, or 200 with the entry already there);
- ``POST remove/ {"messenger" or "kind", "address"[, "message_type"]}``: take
  the address off the list (the user fixed their mailbox): ``{"removed": n}``.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from .models import Suppression
from .suppression import kind_of, normalize, suppress, unsuppress
from .validation import has_control_characters

MAX_RESULTS = 100


def _entry(entry: Suppression) -> dict[str, Any]:
    return {"id": entry.pk, "kind": entry.kind, "address": entry.address, "message_type": entry.message_type,
            "reason": entry.reason, "detail": entry.detail, "created": entry.created.isoformat(),
            "dispatch": entry.dispatch_id}


def _denied(request: HttpRequest, action: str) -> JsonResponse | None:
    if not request.user.is_staff or not request.user.has_perm(f"dispatcher.{action}_suppression"):
        return JsonResponse({"error": f"needs staff and dispatcher.{action}_suppression"}, status=403)
    return None


def _body(request: HttpRequest) -> dict[str, Any]:
    if request.content_type == "application/json":
        try:
            data = json.loads(request.body or b"{}")
        except RecursionError:
            raise ValueError("the JSON is nested too deep") from None
        if not isinstance(data, dict):
            raise ValueError("the body must be a JSON object")
        return data
    return request.POST.dict()


def _text(data: dict[str, Any], name: str, limit: int, required: bool = False) -> str:
    value = data.get(name, "")
    if not isinstance(value, str) or (name != "detail" and has_control_characters(value)):
        raise ValueError(f"{name} must be one line of text")
    if required and not value.strip():
        raise ValueError(f"{name} is required")
    if len(value) > limit:
        raise ValueError(f"{name} is too long (at most {limit} characters)")
    return value


def _kind(data: dict[str, Any]) -> str:
    messenger = _text(data, "messenger", 50) or _text(data, "kind", 50)
    if not messenger:
        raise ValueError("give the messenger (or the kind) of the address")
    return kind_of(messenger)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def suppressions(request: HttpRequest) -> JsonResponse:
    if request.method == "GET":
        if denied := _denied(request, "view"):
            return denied
        address = request.GET.get("address", "")
        if not address or has_control_characters(address) or len(address) > 500:
            return JsonResponse({"error": "give ?address= (one line of text)"}, status=400)
        entries = Suppression.objects.filter(address__in={address.strip(), address.strip().lower()})
        if request.GET.get("kind"):
            entries = entries.filter(kind=request.GET["kind"])
        return JsonResponse({"suppressions": [_entry(e) for e in entries.order_by("id")[:MAX_RESULTS]]})
    if denied := _denied(request, "add"):
        return denied
    try:
        data = _body(request)
        kind = _kind(data)
        address = _text(data, "address", 500, required=True)
        reason = _text(data, "reason", 20) or Suppression.Reason.MANUAL
        if reason not in Suppression.Reason.values:
            raise ValueError(f"reason is one of {', '.join(Suppression.Reason.values)}")
        message_type = _text(data, "message_type", 100)
        detail = _text(data, "detail", 2000)
    except ValueError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    existed = Suppression.objects.filter(kind=kind, address=normalize(kind, address),
                                         message_type=message_type).exists()
    entry = suppress(kind, address, reason, message_type=message_type, detail=detail or f"by {request.user}")
    return JsonResponse(_entry(entry), status=200 if existed else 201)


@never_cache
@login_required
@require_POST
def remove(request: HttpRequest) -> JsonResponse:
    if denied := _denied(request, "delete"):
        return denied
    try:
        data = _body(request)
        kind = _kind(data)
        address = _text(data, "address", 500, required=True)
        message_type = data.get("message_type")
        if message_type is not None:
            message_type = _text(data, "message_type", 100)
    except ValueError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    return JsonResponse({"removed": unsuppress(kind, address, message_type)})
