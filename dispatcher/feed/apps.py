from django.apps import AppConfig


class FeedConfig(AppConfig):
    """In-app notifications: the ``inapp`` messenger and each user's feed."""

    name = "dispatcher.feed"
    label = "feed"
    verbose_name = "In-app notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The messenger, in web processes (scheduling validates addresses) and
        # workers (they deliver); a site may configure "inapp" itself instead.
        from dispatcher.registry import get_registered_messenger_objects, register_messenger_objects

        from . import beat, tasks  # noqa: F401  (the sweep's periodic task after migrate; its Celery task)
        from .messenger import InAppMessenger

        if "inapp" not in get_registered_messenger_objects():
            register_messenger_objects(InAppMessenger())
