"""A fake X API v2 that checks OAuth 1.0a signatures as X does.

Every request must carry a valid HMAC-SHA1 signature made with the
consumer and token secrets the fake knows, else 401. ``POST /2/tweets``
refuses a text it has seen (403 duplicate content); ``rate_limited_until``
(epoch seconds) turns calls into 429 with ``x-rate-limit-reset``.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from oauthlib.oauth1 import Client
from oauthlib.oauth1.rfc5849 import signature

from .server import Received, Reply


def problem(status: int, title: str, detail: str) -> Reply:
    return Reply(status, {"title": title, "detail": detail, "type": "about:blank", "status": status},
                 {"Content-Type": "application/problem+json"})


class FakeX:
    def __init__(self, consumer_key: str, consumer_secret: str, token: str, token_secret: str,
                 users: dict[str, str] | None = None):
        self.consumer_key, self.consumer_secret = consumer_key, consumer_secret
        self.token, self.token_secret = token, token_secret
        self.users = users or {}
        self.base_url = ""  # set by the test: the scheme://host:port clients sign with
        self.tweets: list[str] = []
        self.dms: list[tuple[str, str]] = []
        self.rate_limited_until: int | None = None
        self.oauth: list[dict[str, str]] = []  # the oauth_* fields of each request
        self.ids = itertools.count(1_000)

    def verify(self, request: Received) -> bool:
        header = request.headers.get("authorization", "")
        if not header.startswith("OAuth "):
            return False
        params = signature.collect_parameters(
            uri_query=request.url.partition("?")[2], headers={"Authorization": header},
            exclude_oauth_signature=False,
        )
        fields = {k: v for k, v in params if k.startswith("oauth_")}
        self.oauth.append(fields)
        if fields.get("oauth_consumer_key") != self.consumer_key or fields.get("oauth_token") != self.token:
            return False
        if fields.get("oauth_signature_method") != "HMAC-SHA1":
            return False
        if abs(time.time() - int(fields.get("oauth_timestamp", 0))) > 300 or not fields.get("oauth_nonce"):
            return False
        signed = [(k, v) for k, v in params if k != "oauth_signature"]
        base = signature.signature_base_string(
            request.method, signature.base_string_uri(self.base_url + request.path),
            signature.normalize_parameters(signed),
        )
        expected = signature.sign_hmac_sha1_with_client(base, Client(
            self.consumer_key, client_secret=self.consumer_secret,
            resource_owner_key=self.token, resource_owner_secret=self.token_secret))
        return expected == fields.get("oauth_signature")

    def __call__(self, request: Received) -> Reply:
        if not self.verify(request):
            return problem(401, "Unauthorized", "Unauthorized")
        if self.rate_limited_until:
            return Reply(429, {"title": "Too Many Requests", "detail": "Too Many Requests",
                               "type": "about:blank", "status": 429},
                         {"x-rate-limit-limit": "100", "x-rate-limit-remaining": "0",
                          "x-rate-limit-reset": str(self.rate_limited_until)})
        if request.method == "POST" and request.path == "/2/tweets":
            return self.tweet(request.json or {})
        if request.method == "GET" and request.path.startswith("/2/users/by/username/"):
            return self.lookup(request.path.rsplit("/", 1)[1])
        if request.method == "POST" and request.path.startswith("/2/dm_conversations/with/"):
            participant = request.path.split("/")[4]
            if participant not in self.users.values():
                return problem(400, "Invalid Request", "One or more parameters to your request was invalid.")
            self.dms.append((participant, (request.json or {}).get("text", "")))
            return Reply(201, {"data": {"dm_conversation_id": f"1-{participant}",
                                        "dm_event_id": str(next(self.ids))}})
        return problem(404, "Not Found Error", "not found")

    def tweet(self, payload: dict[str, Any]) -> Reply:
        text = payload.get("text", "")
        if text in self.tweets:
            return problem(403, "Forbidden", "You are not allowed to create a Tweet with duplicate content.")
        if len(text) > 280:
            return problem(400, "Invalid Request", "Tweet text is too long")
        self.tweets.append(text)
        return Reply(201, {"data": {"id": str(next(self.ids)), "text": text,
                                    "edit_history_tweet_ids": []}})

    def lookup(self, username: str) -> Reply:
        if username not in self.users:
            return Reply(200, {"errors": [{
                "value": username, "detail": f"Could not find user with username: [{username}].",
                "title": "Not Found Error", "resource_type": "user", "parameter": "username",
                "resource_id": username, "type": "https://api.twitter.com/2/problems/resource-not-found",
            }]})
        return Reply(200, {"data": {"id": self.users[username], "name": username.title(),
                                    "username": username}})
