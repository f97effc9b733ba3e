"""JSON log lines, one object per line, for log pipelines (Loki, ELK, CloudWatch...).

The delivery engine logs every outcome on the ``dispatcher.delivery`` logger
with ``extra={"dispatch_id", "messenger", "attempt", "outcome"}``. With the
plain formatter those fields are lost; :class:`JsonFormatter` emits them as
keys, so a log search like ``dispatch_id=1234`` or ``outcome="failed"``
works without parsing the message text.

Wire it in ``LOGGING`` (see docs/configuration.md, ``DISPATCHER_LOG_FORMAT``)::

    "formatters": {"json": {"()": "dispatcher.logging.JsonFormatter"}}
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

#: Fields the dispatcher puts on its records, always emitted first when present.
DISPATCH_FIELDS = ("dispatch_id", "messenger", "attempt", "outcome")

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Format a record as one line of JSON with its ``extra`` fields as top-level keys.

    Keys: ``ts`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger``,
    ``message``, then the dispatch fields and any other ``extra`` values, then
    ``exc_info``/``stack_info`` as text when present. Values that JSON cannot
    represent are written with ``str()``, so a log call never fails.
    """

    def __init__(self, *args: Any, static_fields: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Added to every line, e.g. {"service": "dispatcher-worker"}.
        self.static_fields = dict(static_fields or {})

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        data.update(self.static_fields)
        for key in DISPATCH_FIELDS:
            if key in record.__dict__:
                data[key] = record.__dict__[key]
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key not in data and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exc_info"] = record.exc_text or self.formatException(record.exc_info)
        if record.stack_info:
            data["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(data, default=str, ensure_ascii=False)
