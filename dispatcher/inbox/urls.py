"""The private-message pages, namespace ``inbox``: one ``include`` mounts them all::

    path("messages/", include("dispatcher.inbox.urls")),

The names are django-postman's (``postman:inbox`` is ``inbox:inbox``,
``postman:write`` is ``inbox:write``...; docs/inbox.md has the table). The
JSON API is the ``dispatcher:api`` namespace (``api_urls.py``).

Ids are matched as any path segment and parsed by the views, so that a
malformed or overflowing one is a 404 like an unknown one.
"""

from django.urls import path, re_path
from django.views.generic import RedirectView

from . import pages

app_name = "inbox"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="inbox:inbox"), name="index"),
    path("inbox/", pages.inbox, name="inbox"),
    path("sent/", pages.sent, name="sent"),
    path("archives/", pages.archives, name="archives"),
    path("trash/", pages.trash, name="trash"),
    # postman's write/<recipients>/: usernames separated by ":".
    re_path(r"^write/(?:(?P<recipients>[^/#]+)/)?$", pages.write, name="write"),
    path("reply/<str:message_id>/", pages.reply, name="reply"),
    path("view/<str:message_id>/", pages.view, name="view"),
    path("view/t/<str:thread_id>/", pages.view_conversation, name="view_conversation"),
    path("archive/", pages.archive, name="archive"),
    path("unarchive/", pages.unarchive, name="unarchive"),
    path("delete/", pages.delete, name="delete"),
    path("undelete/", pages.undelete, name="undelete"),
    path("mark-read/", pages.mark_read, name="mark-read"),
    path("mark-unread/", pages.mark_unread, name="mark-unread"),
    path("blocks/", pages.blocks, name="blocks"),
    path("blocks/unblock/", pages.unblock_users, name="unblock"),
]
