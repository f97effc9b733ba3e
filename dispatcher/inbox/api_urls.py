"""JSON API, mounted as the ``dispatcher:api`` namespace (at /dispatcher/api/).

``reverse("dispatcher:api:unread-count")`` is django-postman's
``postman:api:unread-count``.
"""

from django.urls import path, re_path

from . import views

app_name = "api"

# Ids are matched as any path segment and parsed by the views, so that a
# malformed one ("abc", "-1") is a JSON 404 like an unknown one, not the
# site's HTML page.
urlpatterns = [
    path("messages/unread-count/", views.unread_count, name="unread-count"),
    path("messages/", views.message_list, name="inbox"),
    path("messages/send/", views.send, name="send"),
    path("messages/<str:pk>/", views.message_detail, name="message"),
    path("messages/<str:pk>/thread/", views.thread, name="thread"),
    path("messages/<str:pk>/read/", views.mark_read, name="mark-read"),
    path("messages/<str:pk>/archive/", views.archive, name="archive"),
    path("messages/<str:pk>/unarchive/", views.unarchive, name="unarchive"),
    path("messages/<str:pk>/delete/", views.delete, name="delete"),
    path("messages/<str:pk>/undelete/", views.undelete, name="undelete"),
    path("conversations/", views.conversations, name="conversations"),
    path("conversations/<str:user_id>/", views.conversation, name="conversation"),
    # Anything else under the API: a JSON 404.
    re_path(r"^.*$", views.not_found, name="not-found"),
]
