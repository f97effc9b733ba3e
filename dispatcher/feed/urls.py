"""The in-app feed, namespace ``feed``: one ``include`` mounts the page and its JSON API::

    path("notifications/", include("dispatcher.feed.urls")),
"""

from django.urls import path, re_path

from . import pages, views

app_name = "feed"

urlpatterns = [
    path("", pages.notification_list, name="list"),
    path("read/", pages.mark_read, name="mark-read"),
    path("unread/", pages.mark_unread, name="mark-unread"),
    path("read-all/", pages.mark_all_read, name="mark-all-read"),
    path("delete/", pages.delete, name="delete"),
    # JSON
    path("api/unread-count/", views.unread_count, name="api-unread-count"),
    path("api/notifications/", views.notification_list, name="api-list"),
    path("api/notifications/read-all/", views.mark_all_read, name="api-mark-all-read"),
    path("api/notifications/<str:pk>/", views.detail, name="api-detail"),
    path("api/notifications/<str:pk>/read/", views.mark_read, name="api-mark-read"),
    path("api/notifications/<str:pk>/delete/", views.delete, name="api-delete"),
    re_path(r"^api/.*$", views.not_found, name="api-not-found"),
]
