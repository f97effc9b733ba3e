"""JSON API, mounted as the ``dispatcher:api`` namespace (at /dispatcher/api/).

``reverse("dispatcher:api:unread-count")`` is django-postman's
``postman:api:unread-count``.
"""

from django.urls import path

from . import views

app_name = "api"

urlpatterns = [
    path("messages/unread-count/", views.unread_count, name="unread-count"),
    path("messages/", views.message_list, name="inbox"),
    path("messages/send/", views.send, name="send"),
    path("messages/<int:pk>/", views.message_detail, name="message"),
    path("messages/<int:pk>/thread/", views.thread, name="thread"),
    path("messages/<int:pk>/read/", views.mark_read, name="mark-read"),
    path("messages/<int:pk>/archive/", views.archive, name="archive"),
    path("messages/<int:pk>/unarchive/", views.unarchive, name="unarchive"),
    path("messages/<int:pk>/delete/", views.delete, name="delete"),
    path("messages/<int:pk>/undelete/", views.undelete, name="undelete"),
    path("conversations/", views.conversations, name="conversations"),
    path("conversations/<str:user_id>/", views.conversation, name="conversation"),
]
