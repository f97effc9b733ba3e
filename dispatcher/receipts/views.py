"""The webhook endpoints providers post their receipts to.

Every answer is plain text. 403: not authenticated; 400: not what the
provider sends; 200: taken (recorded, a repeat, an event that is no receipt,
or a message that is not ours: answering 4xx would only make the provider
retry). Nothing is recorded unless the call is authenticated and well formed.
"""

from __future__ import annotations

import json
import logging

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from . import core, postmark, twilio

logger = logging.getLogger("dispatcher.receipts")


def _text(body: str, status: int = 200) -> HttpResponse:
    return HttpResponse(body, status=status, content_type="text/plain; charset=utf-8")


@csrf_exempt
@require_POST
def postmark_webhook(request: HttpRequest, token: str | None = None) -> HttpResponse:
    if not postmark.authorized(request.headers.get("Authorization"), token):
        response = _text("not authorized", 401 if token is None else 403)
        if token is None:
            response["WWW-Authenticate"] = 'Basic realm="dispatcher receipts"'
        return response
    try:
        payload = json.loads(request.body)
        parsed = postmark.parse(payload)
    except RecursionError:
        return _text("malformed: the JSON is nested too deep", 400)
    except (ValueError, postmark.Malformed) as exc:
        return _text(f"malformed: {exc}", 400)
    if parsed is None:
        return _text("ignored: not a delivery receipt")
    message_id, receipt = parsed
    dispatch = postmark.find(message_id)
    if dispatch is None:
        logger.info("postmark: a %s for unknown MessageID %s", receipt.event, message_id)
        return _text("unknown message")
    recorded = core.record(dispatch, receipt, "postmark")
    return _text("recorded" if recorded else "already recorded")


@csrf_exempt
@require_POST
def twilio_callback(request: HttpRequest) -> HttpResponse:
    if not request.content_type == "application/x-www-form-urlencoded":
        return _text("malformed: a status callback is form-encoded", 400)
    params = [(name, value) for name, values in request.POST.lists() for value in values]
    urls = [request.build_absolute_uri(), settings.SITE_URL.rstrip("/") + request.get_full_path()]
    given = request.headers.get("X-Twilio-Signature")
    if not twilio.verify(urls, params, given, request.POST.get("AccountSid")):
        return _text("invalid signature", 403)
    try:
        parsed = twilio.parse(request.POST)
    except twilio.Malformed as exc:
        return _text(f"malformed: {exc}", 400)
    if parsed is None:
        return _text("ignored: not a delivery receipt")
    sid, receipt = parsed
    dispatch = twilio.find(sid)
    if dispatch is None:
        logger.info("twilio: a %s for unknown MessageSid %s", receipt.event, sid)
        return _text("unknown message")
    recorded = core.record(dispatch, receipt, "twilio")
    return _text("recorded" if recorded else "already recorded")
