"""Template tags: ``{% load dispatcher %}``.

``{% dispatcher_prefs_table %}`` renders the current user's preferences table
(checkboxes for a form that POSTs to a view calling
``set_user_preferences_from_request``). django-sitemessage's spelling works
as well: ``{% sitemessage_prefs_table from prefs template "my/table.html" %}``,
``prefs`` being what ``get_user_preferences_for_ui`` returned.
"""

from __future__ import annotations

from typing import Any

from django import template
from django.conf import settings
from django.template.base import FilterExpression, Parser, Token
from django.template.loader import get_template

from ..subscriptions import get_user_preferences_for_ui

register = template.Library()

DEFAULT_TEMPLATE = "dispatcher/prefs_table.html"
CLAUSES = ("from", "template")


@register.tag("sitemessage_prefs_table")
@register.tag("dispatcher_prefs_table")
def prefs_table(parser: Parser, token: Token) -> PrefsTableNode:
    name, *rest = token.split_contents()
    clauses: dict[str, FilterExpression] = {}
    while rest:
        if len(rest) < 2 or rest[0] not in CLAUSES or rest[0] in clauses:
            raise template.TemplateSyntaxError(
                f"{name} takes an optional 'from <preferences>' and an optional 'template \"<name>\"': "
                f'{{% {name} from prefs template "dispatcher/prefs_table.html" %}}'
            )
        clauses[rest[0]] = parser.compile_filter(rest[1])
        rest = rest[2:]
    return PrefsTableNode(name, clauses.get("from"), clauses.get("template"))


class PrefsTableNode(template.Node):
    def __init__(self, name: str, prefs: FilterExpression | None, template_name: FilterExpression | None):
        self.name = name
        self.prefs = prefs
        self.template_name = template_name

    def render(self, context: Any) -> str:
        if self.prefs is None:
            user = getattr(context.get("request"), "user", None)
            if user is None or not user.is_authenticated:
                return ""
            prefs = get_user_preferences_for_ui(user)
        else:
            prefs = self.prefs.resolve(context)
        if not (isinstance(prefs, tuple) and len(prefs) == 2):
            if settings.DEBUG:
                raise template.TemplateSyntaxError(
                    f"{self.name} expects what get_user_preferences_for_ui() returns, "
                    f"not {type(prefs).__name__}"
                )
            return ""
        name = self.template_name.resolve(context) if self.template_name else DEFAULT_TEMPLATE
        with context.push(dispatcher_prefs=prefs, sitemessage_user_prefs=prefs):
            return str(get_template(name or DEFAULT_TEMPLATE).render(context.flatten()))
