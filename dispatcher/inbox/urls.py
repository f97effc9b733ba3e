"""The ``inbox`` namespace, mounted at /messages/.

The private messages have no HTML pages of their own (yet): applications use
the Python API (``dispatcher.inbox.api``) and the JSON API
(``dispatcher:api``, see ``api_urls.py`` and docs/inbox.md).
"""

app_name = "inbox"

urlpatterns: list = []
