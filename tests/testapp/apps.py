from django.apps import AppConfig


class TestAppConfig(AppConfig):
    name = "tests.testapp"
    label = "testapp"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # How an application registers its message types: in its ready().
        from dispatcher.api import register_message_types

        from .message_types import HelloMessage, NewsletterMessage, SecurityAlertMessage

        register_message_types(HelloMessage, NewsletterMessage, SecurityAlertMessage)
