from typing import Any

from django.apps import AppConfig

#: Modules of each installed app imported at startup (DISPATCHER_AUTODISCOVER_MODULES).
DEFAULT_APP_MODULES = ("dispatchers", "sitemessages")


def app_module_names(settings: Any) -> list[str]:
    names = list(getattr(settings, "DISPATCHER_AUTODISCOVER_MODULES", DEFAULT_APP_MODULES))
    seed_name = getattr(settings, "SITEMESSAGE_APP_MODULE_NAME", None)  # django-sitemessage's setting
    if seed_name and seed_name not in names:
        names.append(seed_name)
    return names


class DispatcherConfig(AppConfig):
    name = "dispatcher"
    verbose_name = "Dispatcher"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import conf, registry

        conf.apply_defaults()  # settings a site left unset (dispatcher/conf.py)
        # Messengers from settings.DISPATCHER_MESSENGERS and the built-in
        # message types. Apps register their own in their AppConfig.ready().
        registry.load_from_settings()
        from . import (  # noqa: F401  (connect their signal receivers)
            beat,
            counters,
            model_events,
            sqlite,
            suppression,
        )

        model_events.load_from_settings()

        # Each app's module where it registers message types and messengers
        # (django-sitemessage's sitemessages.py), imported in every process.
        from django.conf import settings
        from django.utils.module_loading import autodiscover_modules

        autodiscover_modules(*app_module_names(settings))

        from .dashboard.admin_link import install_admin_link

        install_admin_link()  # the admin index links to the dashboard
