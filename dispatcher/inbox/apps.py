from django.apps import AppConfig


class InboxConfig(AppConfig):
    name = "dispatcher.inbox"
    label = "inbox"
    verbose_name = "Private messages"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The notification message types, registered in web processes and in
        # workers alike (workers render the notifications).
        from dispatcher.registry import register_message_types

        from .notifications import MESSAGE_TYPES

        register_message_types(*MESSAGE_TYPES)
