"""A webhook receiver that checks the HMAC-SHA256 signature independently.

The path picks the answer: ``/ok`` 200, ``/accepted`` 202, ``/gone`` 410,
``/bad`` 400, ``/busy`` 503, ``/limited`` 429 with Retry-After, ``/moved``
302, ``/slow`` answers after ``slow_seconds``.
"""

from __future__ import annotations

import hashlib
import hmac

from .server import Received, Reply

ANSWERS = {
    "/ok": Reply(200, "ok"),
    "/accepted": Reply(202),
    "/gone": Reply(410, "gone"),
    "/bad": Reply(400, "bad"),
    "/busy": Reply(503, "busy"),
    "/limited": Reply(429, "slow down", {"Retry-After": "45"}),
    "/moved": Reply(302, "", {"Location": "/ok"}),
}


class WebhookReceiver:
    def __init__(self, secret: str, slow_seconds: float = 3.0):
        self.secret = secret
        self.slow_seconds = slow_seconds
        self.valid: list[bool] = []  # signature check of each request

    def check(self, request: Received) -> bool:
        timestamp = request.headers.get("x-dispatcher-timestamp", "")
        mac = hmac.new(self.secret.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256)
        given = request.headers.get("x-dispatcher-signature", "")
        return hmac.compare_digest("sha256=" + mac.hexdigest(), given)

    def __call__(self, request: Received) -> Reply:
        valid = self.check(request)
        self.valid.append(valid)
        if not valid:
            return Reply(401, "bad signature")
        path = request.path.rstrip("/") or "/ok"
        if path.endswith("/slow"):
            return Reply(200, "late", delay=self.slow_seconds)
        for suffix, reply in ANSWERS.items():
            if path.endswith(suffix):
                return Reply(reply.status, reply.body, dict(reply.headers))
        return Reply(200, "ok")
