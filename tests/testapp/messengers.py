"""A messenger driven by a script in the database, to make faults happen on cue.

Each address is an instruction: ``ok`` marks sent, ``temp`` raises a
temporary error, ``perm`` a permanent one, ``slow:<ms>`` sleeps then marks
sent. It is a real messenger class run by real workers; only the transport is
imaginary.
"""

import time

from messengers.base import MessengerBase
from messengers.exceptions import PermanentError, TemporaryError


class ScriptedMessenger(MessengerBase):
    alias = "flaky"
    title = "Scripted"

    def send(self, message_cls, message_model, dispatch_models):
        for dispatch in dispatch_models:
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
