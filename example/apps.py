from django.apps import AppConfig


class ExampleConfig(AppConfig):
    name = "example"
    label = "example"
    verbose_name = "Example app (development)"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Runs in web processes, `manage.py shell` and Celery workers alike,
        # so all of them know these message types and this messenger.
        from dispatcher.api import register_message_types, register_messenger_objects
        from dispatcher.model_events import watch_model

        from . import receivers  # noqa: F401  (connects the signal receivers)
        from .messages import CommentNotice, NewsletterMessage, WelcomeMessage
        from .messengers import MyMessenger
        from .models import Profile
        from .watching import may_watch_profile

        register_message_types(WelcomeMessage, NewsletterMessage, CommentNotice)
        register_messenger_objects(MyMessenger())
        watch_model(Profile, fields=["full_name", "location"], permission=may_watch_profile)
