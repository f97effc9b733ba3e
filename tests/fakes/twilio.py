"""A fake Twilio Messages API with HTTP Basic auth and Twilio's error bodies."""

from __future__ import annotations

import base64
import itertools
from typing import Any

from .server import Received, Reply


def twilio_error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, {"code": code, "message": message, "status": status,
                          "more_info": f"https://www.twilio.com/docs/errors/{code}"}, headers or {})


class FakeTwilio:
    def __init__(self, account_sid: str, auth_token: str):
        self.account_sid, self.auth_token = account_sid, auth_token
        self.invalid: set[str] = set()  # numbers answered with 21211
        self.replies: list[Reply] = []
        self.messages: list[dict[str, str]] = []
        self.ids = itertools.count(1)

    def __call__(self, request: Received) -> Reply:
        expected = "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if request.headers.get("authorization") != expected:
            return twilio_error(401, 20003, "Authenticate")
        path = f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"
        if request.path != path or request.method != "POST":
            return twilio_error(404, 20404, "The requested resource was not found")
        if self.replies:
            return self.replies.pop(0)
        form = request.form
        if form.get("To") in self.invalid:
            return twilio_error(400, 21211, f"Invalid 'To' Phone Number: {form['To']}")
        if not form.get("Body"):
            return twilio_error(400, 21602, "Message body is required.")
        self.messages.append(form)
        sid = f"SM{next(self.ids):032d}"
        body: dict[str, Any] = {"sid": sid, "status": "queued", "to": form["To"],
                                "from": form.get("From"), "body": form["Body"]}
        return Reply(201, body)
