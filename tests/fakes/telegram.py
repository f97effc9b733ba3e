"""A fake Telegram Bot API (``/bot<token>/<method>``) with its documented answers.

Chat behaviour comes from state the test sets: ``blocked``/``kicked`` chats
answer 403, ``missing`` ones 400 "chat not found", ``migrated`` ones 400 with
``parameters.migrate_to_chat_id``; ``replies`` are answered first, one per
sendMessage call (a 429 flood wait, a 502...). Texts over 4096 UTF-16 units
are refused, as Telegram does.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from .server import Received, Reply


def error(code: int, description: str, **parameters: Any) -> Reply:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return Reply(code, body)


def flood(retry_after: int) -> Reply:
    return error(429, f"Too Many Requests: retry after {retry_after}", retry_after=retry_after)


BAD_GATEWAY = Reply(502, "<html><head><title>502 Bad Gateway</title></head></html>",
                    {"Content-Type": "text/html"})


class FakeTelegram:
    def __init__(self, token: str):
        self.token = token
        self.blocked: set[int] = set()
        self.kicked: set[int] = set()
        self.missing: set[int | str] = set()
        self.migrated: dict[int, int] = {}
        self.replies: list[Reply] = []
        self.updates: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []  # accepted sendMessage parameters
        self.lock = threading.Lock()

    def __call__(self, request: Received) -> Reply:
        prefix = f"/bot{self.token}/"
        if not request.path.startswith(prefix):
            return error(401, "Unauthorized")
        method = request.path[len(prefix):]
        if method == "getUpdates":
            return Reply(200, {"ok": True, "result": self.updates})
        if method != "sendMessage":
            return error(404, "Not Found")
        return self.send_message(request.params)

    def send_message(self, params: dict[str, Any]) -> Reply:
        with self.lock:
            if self.replies:
                return self.replies.pop(0)
        chat_id = params.get("chat_id")
        text = params.get("text") or ""
        if chat_id is None:
            return error(400, "Bad Request: chat_id is empty")
        if chat_id in self.missing:
            return error(400, "Bad Request: chat not found")
        if chat_id in self.blocked:
            return error(403, "Forbidden: bot was blocked by the user")
        if chat_id in self.kicked:
            return error(403, "Forbidden: bot was kicked from the group chat")
        if chat_id in self.migrated:
            return error(400, "Bad Request: group chat was upgraded to a supergroup chat",
                         migrate_to_chat_id=self.migrated[chat_id])
        if not text.strip():
            return error(400, "Bad Request: message text is empty")
        if len(text.encode("utf-16-le")) // 2 > 4096:
            return error(400, "Bad Request: message is too long")
        with self.lock:
            self.sent.append(params)
            message_id = len(self.sent)
        chat = {"id": chat_id, "type": "private" if isinstance(chat_id, int) and chat_id > 0 else "channel"}
        return Reply(200, {"ok": True, "result": {
            "message_id": message_id, "date": int(time.time()), "chat": chat, "text": text,
        }})
