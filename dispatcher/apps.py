from django.apps import AppConfig


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
        from . import beat, model_events, sqlite  # noqa: F401  (connect their signal receivers)

        model_events.load_from_settings()

        from .dashboard.admin_link import install_admin_link

        install_admin_link()  # the admin index links to the dashboard
