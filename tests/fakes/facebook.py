"""A fake Graph API: page feed posts, the token exchange and ``/me/accounts``.

Errors come back as Graph does: a JSON ``error`` object with ``code``,
``type``, ``message`` and ``fbtrace_id``, with HTTP 400 (500 for code 1/2).
"""

from __future__ import annotations

import itertools
from typing import Any

from .server import Received, Reply


def graph_error(code: int, message: str, status: int = 400, subcode: int | None = None,
                headers: dict[str, str] | None = None, **extra: Any) -> Reply:
    error: dict[str, Any] = {"message": message, "type": "OAuthException", "code": code,
                             "fbtrace_id": "AbCdEf123", **extra}
    if subcode:
        error["error_subcode"] = subcode
    return Reply(status, {"error": error}, headers or {})


class FakeGraph:
    def __init__(self, version: str, page_id: str, page_token: str):
        self.version, self.page_id, self.page_token = version, page_id, page_token
        self.app_id = self.app_secret = self.user_token = ""
        self.long_lived_user_token = "EAAlonglived-user-token-123"
        self.pages: list[dict[str, Any]] = []  # what /me/accounts lists, two per answer page
        self.replies: list[Reply] = []
        self.posts: list[dict[str, str]] = []
        self.ids = itertools.count(1)
        self.base_url = ""

    def __call__(self, request: Received) -> Reply:
        prefix = f"/{self.version}/"
        if not request.path.startswith(prefix):
            return graph_error(2500, "Unknown path components", 400)
        path = request.path[len(prefix):]
        if path == "oauth/access_token":
            return self.exchange(request.query)
        if path == "me/accounts":
            return self.accounts(request.query)
        if path.endswith("/feed") and request.method == "POST":
            return self.feed(path.split("/")[0], request.form)
        return graph_error(100, "Unsupported request", 400)

    def feed(self, page: str, form: dict[str, str]) -> Reply:
        if form.get("access_token") != self.page_token:
            return graph_error(190, "Invalid OAuth access token - Cannot parse access token")
        if self.replies:
            return self.replies.pop(0)
        if page not in ("me", self.page_id):
            return graph_error(100, f"Unsupported post request. Object with ID '{page}' does not exist")
        if not form.get("message") and not form.get("link"):
            return graph_error(100, "Invalid parameter", error_user_msg="Missing message or attachment")
        self.posts.append(form)
        return Reply(200, {"id": f"{self.page_id}_{next(self.ids)}"})

    def exchange(self, query: dict[str, str]) -> Reply:
        if (query.get("grant_type"), query.get("client_id"), query.get("client_secret"),
                query.get("fb_exchange_token")) != ("fb_exchange_token", self.app_id, self.app_secret,
                                                    self.user_token):
            return graph_error(101, "Error validating application. Invalid application ID or secret.")
        return Reply(200, {"access_token": self.long_lived_user_token, "token_type": "bearer",
                           "expires_in": 5183944})

    def accounts(self, query: dict[str, str]) -> Reply:
        if query.get("access_token") != self.long_lived_user_token:
            return graph_error(190, "Invalid OAuth access token")
        start = int(query.get("after") or 0)
        body: dict[str, Any] = {"data": self.pages[start:start + 2],
                                "paging": {"cursors": {"before": str(start), "after": str(start + 2)}}}
        if start + 2 < len(self.pages):
            body["paging"]["next"] = (f"{self.base_url}/{self.version}/me/accounts?"
                                      f"access_token={self.long_lived_user_token}&limit=2&after={start + 2}")
        return Reply(200, body)
