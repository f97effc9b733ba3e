"""Let bulk writes on SQLite use the parameter limit the library really has.

Django 5.2 assumes SQLite's historic limit of 999 bound parameters, which cuts
a 1,000-recipient ``bulk_create`` into a dozen INSERTs. SQLite 3.32+ allows
32,766 (Debian's build 250,000): read the real limit when a connection opens.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from django.db.backends.signals import connection_created
from django.dispatch import receiver


@receiver(connection_created)
def _raise_param_limit(sender: Any, connection: Any, **kwargs: Any) -> None:
    if connection.vendor != "sqlite":
        return
    limit = connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    connection.features.max_query_params = min(limit, 32766)
