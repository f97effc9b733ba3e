"""A fake VK API (``/method/<name>``): errors are HTTP 200 with an ``error`` object."""

from __future__ import annotations

import itertools
from typing import Any

from .server import Received, Reply


def vk_error(code: int, message: str, params: dict[str, str] | None = None, **extra: Any) -> Reply:
    request_params = [{"key": k, "value": v} for k, v in (params or {}).items() if k != "access_token"]
    return Reply(200, {"error": {"error_code": code, "error_msg": message,
                                 "request_params": request_params, **extra}})


class FakeVK:
    def __init__(self, token: str):
        self.token = token
        self.errors: list[tuple[int, str, dict[str, Any]]] = []  # answered first, one per call
        self.posts: list[dict[str, str]] = []
        self.ids = itertools.count(1)

    def __call__(self, request: Received) -> Reply:
        params = {**request.query, **request.form}
        if request.path != "/method/wall.post":
            return vk_error(3, "Unknown method passed", params)
        if params.get("access_token") != self.token:
            return vk_error(5, "User authorization failed: invalid access_token (4).", params)
        if not params.get("v"):
            return vk_error(8, "Invalid request: v (version) is required", params)
        if self.errors:
            code, message, extra = self.errors.pop(0)
            return vk_error(code, message, params, **extra)
        self.posts.append(params)
        return Reply(200, {"response": {"post_id": next(self.ids)}})
