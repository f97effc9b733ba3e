from django.urls import include, path

from . import suppression_views, views

app_name = "dispatcher"

urlpatterns = [
    path("api/", include("dispatcher.inbox.api_urls")),
    path("ops/", include("dispatcher.dashboard.urls")),
    path("unsubscribe/<str:token>/", views.unsubscribe, name="unsubscribe"),
    path("unsubscribe/<str:token>/one-click/", views.unsubscribe_one_click, name="unsubscribe-one-click"),
    path("read/<str:token>.gif", views.read_pixel, name="read-pixel"),
    path("preferences/", views.preferences, name="preferences"),
    path("receipts/", include("dispatcher.receipts.urls")),
    path("suppressions/", suppression_views.suppressions, name="suppressions"),
    path("suppressions/remove/", suppression_views.remove, name="suppressions-remove"),
]


def get_dispatcher_urls(prefix: str = "dispatcher/", messages_prefix: str | None = "messages/") -> list:
    """The dispatcher's URLs for a site's ``urlpatterns``, in one line::

        urlpatterns = [...] + get_dispatcher_urls()

    mounts the unsubscribe and read links, the preferences page, the JSON API
    and the operators' dashboard under ``prefix`` (namespace ``dispatcher``),
    and the private-messages pages under ``messages_prefix`` (None leaves
    them out). ``get_sitemessage_urls`` is the same, under django-sitemessage's name.
    """
    patterns = [path(prefix, include("dispatcher.urls"))]
    if messages_prefix is not None:
        patterns.append(path(messages_prefix, include("dispatcher.inbox.urls")))
    return patterns


get_sitemessage_urls = get_dispatcher_urls
