"""A fake Postmark ``POST /email`` with its ErrorCode answers."""

from __future__ import annotations

import uuid

from .server import Received, Reply


def postmark_error(status: int, code: int, message: str) -> Reply:
    return Reply(status, {"ErrorCode": code, "Message": message})


class FakePostmark:
    def __init__(self, server_token: str):
        self.server_token = server_token
        self.inactive: set[str] = set()
        self.replies: list[Reply] = []
        self.emails: list[dict] = []

    def __call__(self, request: Received) -> Reply:
        if request.headers.get("x-postmark-server-token") != self.server_token:
            return postmark_error(401, 10, "Request does not contain a valid Server token.")
        if request.path != "/email" or request.method != "POST":
            return Reply(404, "Not found")
        if "application/json" not in request.headers.get("content-type", ""):
            return postmark_error(422, 409, "JSON Required")
        if self.replies:
            return self.replies.pop(0)
        email = request.json
        if not email.get("From") or not email.get("To"):
            return postmark_error(422, 300, "Invalid email request: missing From or To")
        if email["To"] in self.inactive:
            return postmark_error(
                422, 406, "You tried to send to recipient(s) that have been marked as inactive. Found "
                f"inactive addresses: {email['To']}. Inactive recipients are ones that have generated "
                "a hard bounce, a spam complaint, or a manual suppression.")
        self.emails.append(email)
        return Reply(200, {"To": email["To"], "SubmittedAt": "2025-01-01T00:00:00Z",
                           "MessageID": str(uuid.uuid4()), "ErrorCode": 0, "Message": "OK"})
