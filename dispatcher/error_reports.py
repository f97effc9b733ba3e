"""What an error page or a mailed error report may show.

Django's own filter hides settings named like keys, tokens and passwords, but
a broker or database URL (``redis://:password@host``) is named ``*_URL`` and
was shown in full, in the settings and, under ``runserver``, in the request's
environment. This filter hides those names too, and masks credentials inside
any string it shows (a proxy URL nested in a messenger's options, a local
variable holding a connection URL).

Use it with ``DEFAULT_EXCEPTION_REPORTER_FILTER =
"dispatcher.error_reports.CredentialsHidingFilter"``, and
``DEFAULT_EXCEPTION_REPORTER = "dispatcher.error_reports.CredentialsHidingReporter"``
for the exception's own text (a driver's error may quote the URL it failed on).
"""

from __future__ import annotations

import pprint
import re
from typing import Any

from django.http import HttpRequest
from django.views.debug import ExceptionReporter, SafeExceptionReporterFilter

from messengers.redact import redact


class CredentialsHidingFilter(SafeExceptionReporterFilter):
    """Hides credential-bearing settings, environment and local variables."""

    hidden_settings = re.compile(
        r"API|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|URL|BROKER|DATABASE|DSN|CREDENTIAL|AUTH"
        r"|LOGIN|PROXY|CONNECTION",
        flags=re.IGNORECASE,
    )

    def cleanse_setting(self, key: Any, value: Any) -> Any:
        cleansed = super().cleanse_setting(key, value)
        if isinstance(cleansed, str):
            return redact(cleansed)
        return cleansed

    def get_traceback_frame_variables(self, request: HttpRequest | None, tb_frame: Any) -> Any:
        # Local variables are shown too: a frame that holds a connection URL
        # (or a variable named like a password) must not print it.
        # Not recursive, unlike settings: locals may be large or refer to
        # themselves, and the report must never fail while reporting.
        cleansed = []
        for name, value in super().get_traceback_frame_variables(request, tb_frame):
            if self.hidden_settings.search(str(name)):
                value = self.cleansed_substitute
            elif isinstance(value, str):
                value = redact(value)
            else:
                # An exception or a connection object shows its URL in its repr.
                value = _Shown(redact(_pformat(value)))
            cleansed.append((name, value))
        return cleansed


class _Shown:
    """A value already formatted (and masked) for the report."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _pformat(value: Any) -> str:
    try:
        return pprint.pformat(value)
    except Exception as exc:  # as Django's own report does: a broken repr must not break it
        return f"Error in formatting: {exc.__class__.__name__}: {exc}"


class CredentialsHidingReporter(ExceptionReporter):
    """Masks credentials in the exception's message, which no filter sees."""

    def get_traceback_data(self) -> dict[str, Any]:
        data = super().get_traceback_data()
        if isinstance(data.get("exception_value"), str):
            data["exception_value"] = redact(data["exception_value"])
        return data
