"""A module as django-sitemessage's users write it (``<app>/sitemessages.py``):
imported at startup by the dispatcher, in web and worker processes alike."""

from dispatcher.api import register_message_types
from dispatcher.messages import MessageBase


class SeedStyleMessage(MessageBase):
    alias = "seed_style"
    title = "Registered in sitemessages.py"
    allow_user_subscription = False


register_message_types(SeedStyleMessage)
