"""What every JSON API of the site's users shares (the private messages'
``dispatcher:api`` and the in-app feed's): JSON answers only, for the
logged-in user, never cached, CSRF-checked POSTs, ids parsed strictly.

Every view made with :func:`json_api` answers JSON, whatever goes wrong: a
wrong method (405), no login (401), a failed CSRF check (403), a body too
large (413), a malformed body or a bad id (400/404), and even a bug (500,
reported as Django reports one). That is why the CSRF check runs here, and
not in the middleware, whose failure page is HTML.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any

from django.conf import settings
from django.core import signals
from django.core.exceptions import BadRequest as DjangoBadRequest
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import HttpRequest, HttpResponse, JsonResponse, UnreadablePostError
from django.http.multipartparser import MultiPartParserError
from django.middleware.csrf import CsrfViewMiddleware, get_token
from django.utils.log import log_response
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

#: Largest request body an API reads (bytes) unless its setting says otherwise.
DEFAULT_MAX_BODY_SIZE = 256 * 1024
#: Ids are positive BIGINTs: anything else cannot name a row (and would
#: overflow SQLite's integers rather than find nothing).
ID_MAX = 2**63 - 1
DIGITS = re.compile(r"[0-9]{1,19}")

View = Callable[..., HttpResponse]
#: (exception class, HTTP status, text or None for the exception's own text)
ErrorMapping = Sequence[tuple[type[BaseException], int, str | None]]


class BadRequest(Exception):
    """A query parameter or a field of the request is wrong."""


class NotFound(Exception):
    """The URL names nothing the user may see (a malformed id included)."""


def error(status: int, text: str) -> JsonResponse:
    return JsonResponse({"error": text}, status=status)


class _CsrfCheck(CsrfViewMiddleware):
    """Django's CSRF check, answering the reason instead of the HTML failure page."""

    def _reject(self, request: HttpRequest, reason: str) -> Any:
        return reason


def csrf_failure(request: HttpRequest) -> str | None:
    """Why the request fails Django's CSRF check, or None when it passes."""
    check = _CsrfCheck(lambda _request: HttpResponse())
    check.process_request(request)
    reason = check.process_view(request, None, (), {})  # type: ignore[arg-type]
    return reason if isinstance(reason, str) else None


def _declared_length(request: HttpRequest) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def json_api(max_body_setting: str, errors: ErrorMapping = ()) -> Callable[..., Callable[[View], View]]:
    """An ``api_view(*methods)`` decorator factory for one API.

    ``max_body_setting`` names the setting of the largest body it reads;
    ``errors`` maps the API's own exceptions to a status (and a fixed text,
    or None for the exception's text).
    """

    def max_body_size() -> int:
        return int(getattr(settings, max_body_setting, DEFAULT_MAX_BODY_SIZE))

    def checked(request: HttpRequest, methods: tuple[str, ...], view: View, *args: Any,
                **kwargs: Any) -> HttpResponse:
        if request.method not in methods:
            response = error(405, f"method {request.method} not allowed: use {', '.join(methods)}")
            response["Allow"] = ", ".join(methods)
            return response
        if not request.user.is_authenticated:
            response = error(401, "authentication required")
            response["WWW-Authenticate"] = 'Session realm="dispatcher"'
            return response
        if _declared_length(request) > max_body_size():
            return error(413, f"the request body is larger than {max_body_size()} bytes")
        if request.method in ("GET", "HEAD"):
            # What ensure_csrf_cookie does, without its check of the body before ours:
            # the CSRF middleware sets the cookie, so a script has a token to POST with.
            get_token(request)
        else:
            reason = csrf_failure(request)
            if reason is not None:
                return error(403, f"CSRF check failed: {reason}")
        return view(request, *args, **kwargs)

    def api_view(*methods: str) -> Callable[[View], View]:
        """JSON view for an authenticated user: 401 otherwise, every error as JSON, never cached."""

        def decorate(view: View) -> View:
            @wraps(view)
            def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
                try:
                    return checked(request, methods, view, *args, **kwargs)
                except NotFound as exc:
                    return error(404, str(exc))
                except BadRequest as exc:
                    return error(400, str(exc))
                except RequestDataTooBig:
                    return error(413, "the request body is too large")
                except (SuspiciousOperation, DjangoBadRequest, MultiPartParserError, UnreadablePostError):
                    return error(400, "the request body cannot be read")
                except Exception as exc:
                    for cls, status, text in errors:
                        if isinstance(exc, cls):
                            return error(status, text if text is not None else str(exc))
                    return server_error(request, exc)

            # The CSRF check runs in checked(), answering JSON.
            return csrf_exempt(never_cache(wrapped))

        return decorate

    return api_view


def server_error(request: HttpRequest, exc: Exception) -> HttpResponse:
    """A bug: reported as Django reports one (the log, mails to ADMINS, the
    test client), but answered in JSON like everything under an API."""
    signals.got_request_exception.send(sender=None, request=request)
    response = error(500, "internal error")
    log_response("%s: %s", response.reason_phrase, request.path, response=response, request=request,
                 exception=exc)
    return response


@csrf_exempt
@never_cache
def not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """Any other path under an API: a JSON 404, not the site's HTML page."""
    return error(404, "no such endpoint")


def parse_id(value: Any, what: str) -> int:
    """A positive whole number (an int, or its decimal digits), else BadRequest.

    ``1.5``, ``true``, ``"1e3"``, ``"-1"`` and ``" 2"`` are not ids: the
    database would otherwise round, cast or overflow them into another row.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and DIGITS.fullmatch(value):
        number = int(value)
    else:
        raise BadRequest(f"{what} must be a whole number")
    if not 1 <= number <= ID_MAX:
        raise BadRequest(f"{what} must be between 1 and {ID_MAX}")
    return number


def url_id(value: str, what: str) -> int:
    """An id from the URL; a malformed one names nothing: 404, as an unknown one."""
    try:
        return parse_id(value, "id")
    except BadRequest:
        raise NotFound(f"no such {what}") from None


def limit(request: HttpRequest, default: int, maximum: int) -> int:
    """``?limit=N``: a whole number from 1 to ``maximum`` (``default`` when absent)."""
    raw = request.GET.get("limit")
    if raw in (None, ""):
        return min(default, maximum)
    if not DIGITS.fullmatch(raw):
        raise BadRequest("limit must be a whole number")
    number = int(raw)
    if not 1 <= number <= maximum:
        raise BadRequest(f"limit must be between 1 and {maximum}")
    return number


def flag(request: HttpRequest, name: str) -> bool:
    """``?unread``, ``?unread=1`` or ``=true`` turn a flag on; ``=0``/``=false``/``=no`` off."""
    if name not in request.GET:
        return False
    return request.GET[name].strip().lower() not in ("0", "false", "no", "off")
