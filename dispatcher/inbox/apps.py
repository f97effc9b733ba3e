from django.apps import AppConfig


class InboxConfig(AppConfig):
    name = "dispatcher.inbox"
    label = "inbox"
    verbose_name = "Private messages"
    default_auto_field = "django.db.models.BigAutoField"
