"""The dispatcher's own name for an app's registration module (``<app>/dispatchers.py``)."""

from dispatcher.api import register_message_types
from dispatcher.messages import MessageBase


class DiscoveredMessage(MessageBase):
    alias = "discovered"
    title = "Registered in dispatchers.py"
    allow_user_subscription = False


register_message_types(DiscoveredMessage)
