"""The docs' example app: what the README's and docs' examples use, shipped so they run.

In development (``DJANGO_DEBUG=1``, as ``make run`` sets it) ``config/settings.py``
adds it to ``INSTALLED_APPS`` (``DISPATCHER_EXAMPLE_APP`` says otherwise). In a
project of your own, this code lives in your own app (``myapp/``): message
types, messengers and signal receivers are registered in its
``AppConfig.ready()``, which runs in every process (web, shell, Celery worker)
when it starts. A worker started before the code existed does not know it:
restart workers after adding a message type or a messenger.
"""
