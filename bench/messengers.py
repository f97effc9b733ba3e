import time
from typing import Any

from messengers.base import MessengerBase


class SleepMessenger(MessengerBase):
    """Marks each dispatch sent after ``delay`` seconds, like a network call would take."""

    alias = "slow"

    def __init__(self, delay: float = 0.02):
        self.delay = delay

    def send(self, message_cls: Any, message_model: Any, dispatch_models: Any) -> None:
        for dispatch in dispatch_models:
            if self.delay:
                time.sleep(self.delay)
            self.mark_sent(dispatch)
