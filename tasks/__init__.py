"""Celery tasks: thin glue over ``dispatcher`` functions."""
