from django.apps import AppConfig


class TestAppConfig(AppConfig):
    name = "tests.testapp"
    label = "testapp"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # How an application registers its message types: in its ready().
        from dispatcher.api import register_message_types

        from .message_types import (
            CommentDigestMessage,
            HeldDigestMessage,
            HelloMessage,
            NewsletterMessage,
            PromoMessage,
            SecurityAlertMessage,
        )

        register_message_types(HelloMessage, NewsletterMessage, SecurityAlertMessage, PromoMessage,
                               CommentDigestMessage, HeldDigestMessage)

        # What a Profile notification may show, and to whom (the settings only name the model).
        from dispatcher.model_events import watch_model

        from .watching import PROFILE_FIELDS, may_watch_profile

        watch_model("testapp.profile", fields=PROFILE_FIELDS, permission=may_watch_profile)
