"""Dispatcher: asynchronous notifications for Django on Celery."""
