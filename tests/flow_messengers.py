"""A messenger for the flow-control tests: each address says what happens.

``ok/...`` is sent, ``temp/...`` a temporary error, ``limited:<s>/...`` a
``RateLimited`` error asking to wait ``s`` seconds, ``slow:<ms>/...`` sent
after ``ms`` milliseconds. It records what it was asked to send, when, and
from which ``for_batch`` copy, in lists the copies share with the registered
object (a shallow copy shares them): the tests read them after a batch.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from messengers.base import MessengerBase
from messengers.exceptions import RateLimited, TemporaryError


class CountingMessenger(MessengerBase):
    alias = "counting"
    title = "Counting"

    def __init__(self) -> None:
        self.addresses: list[str] = []
        self.sent_at: list[float] = []
        self.copies: list[int] = []
        self.flight = {"now": 0, "max": 0, "opened": 0, "closed": 0}
        self.lock = threading.Lock()

    @property
    def max_in_flight(self) -> int:
        return self.flight["max"]

    @property
    def opened(self) -> int:
        return self.flight["opened"]

    @property
    def closed(self) -> int:
        return self.flight["closed"]

    def before_send(self) -> None:
        with self.lock:
            self.flight["opened"] += 1

    def after_send(self) -> None:
        with self.lock:
            self.flight["closed"] += 1

    def send(self, message_cls: Any, message_model: Any, dispatch_models: Any) -> None:
        for envelope in dispatch_models:
            with self.lock:
                self.addresses.append(envelope.address)
                self.copies.append(id(self))
                self.flight["now"] += 1
                self.flight["max"] = max(self.flight["max"], self.flight["now"])
            try:
                instruction = envelope.address.split("/")[0]
                if instruction == "temp":
                    self.mark_error(envelope, TemporaryError("scripted temporary failure"))
                elif instruction.startswith("limited:"):
                    seconds = float(instruction.split(":")[1])
                    self.mark_error(envelope, RateLimited(f"slow down for {seconds}s", retry_after=seconds))
                else:
                    if instruction.startswith("slow:"):
                        time.sleep(int(instruction[5:]) / 1000)
                    with self.lock:
                        self.sent_at.append(time.monotonic())
                    self.mark_sent(envelope)
            finally:
                with self.lock:
                    self.flight["now"] -= 1
