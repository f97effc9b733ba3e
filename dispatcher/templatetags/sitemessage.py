"""``{% load sitemessage %}`` for templates written for django-sitemessage:
the same library as ``{% load dispatcher %}`` (``sitemessage_prefs_table``)."""

from .dispatcher import register

__all__ = ["register"]
