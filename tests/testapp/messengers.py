"""A messenger driven by a script, to make faults happen on cue.

Each address is an instruction: ``ok`` marks sent, ``temp`` a temporary
error, ``perm`` a permanent one, ``slow:<ms>`` sleeps then marks sent
(anything after a ``/`` is free text, to make addresses unique). ``fail_in``
makes the messenger itself break: ``before_send`` raises there, ``send``
raises after marking ``fail_after`` dispatches sent, ``after_send`` raises
there, and ``interrupt`` raises KeyboardInterrupt after ``fail_after`` sends.
It is a real messenger class run by real workers; only the transport is
imaginary.
"""

import time

from messengers.base import MessengerBase
from messengers.exceptions import PermanentError, TemporaryError


class ScriptedMessenger(MessengerBase):
    alias = "flaky"
    title = "Scripted"

    def __init__(self, fail_in: str | None = None, fail_after: int = 0):
        self.fail_in = fail_in
        self.fail_after = fail_after

    def before_send(self):
        if self.fail_in == "before_send":
            raise TemporaryError("scripted failure in before_send")

    def after_send(self):
        if self.fail_in == "after_send":
            raise RuntimeError("scripted failure in after_send")

    def send(self, message_cls, message_model, dispatch_models):
        for n, dispatch in enumerate(dispatch_models):
            if n == self.fail_after and self.fail_in == "send":
                raise RuntimeError("scripted failure in send")
            if n == self.fail_after and self.fail_in == "interrupt":
                raise KeyboardInterrupt
            instruction = dispatch.address.split("/")[0]
            if instruction == "temp":
                self.mark_error(dispatch, TemporaryError("scripted temporary failure"))
            elif instruction == "perm":
                self.mark_failed(dispatch, PermanentError("scripted permanent failure"))
            elif instruction.startswith("slow:"):
                time.sleep(int(instruction[5:]) / 1000)
                self.mark_sent(dispatch)
            else:
                self.mark_sent(dispatch)
