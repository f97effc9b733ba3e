"""The template language of user-supplied model-event templates.

A subscription's subject and body are templates a user may write, rendered
in a worker with the site's settings at hand. Django's full language reaches
far beyond the event: ``{% include %}`` reads any template of the site,
``{% debug %}`` prints the context and every loaded module, ``{% load %}``
brings in any tag library, ``{% url %}`` and ``{% csrf_token %}`` read site
state. This module is the tag library of a separate engine that knows only
tags working on the values they are given, and every built-in filter; no
loaders, no other libraries.
"""

from __future__ import annotations

from typing import Any

from django.template import Context, Library, Template, defaultfilters, defaulttags
from django.template.engine import Engine

#: Tags that only work on the context they are given.
ALLOWED_TAGS = (
    "autoescape", "comment", "cycle", "filter", "firstof", "for", "if", "ifchanged", "now",
    "resetcycle", "spaceless", "templatetag", "verbatim", "widthratio", "with",
)

register = Library()
for _name in ALLOWED_TAGS:
    register.tags[_name] = defaulttags.register.tags[_name]
register.filters.update(defaultfilters.register.filters)


class _SandboxEngine(Engine):
    # Engine prepends these to any builtins it is given; the sandbox has none of them.
    default_builtins: list[str] = []


_engine = _SandboxEngine(
    builtins=[__name__], libraries={}, loaders=[], autoescape=False, debug=False, app_dirs=False,
)


def compile_template(source: str) -> Template:
    """Compile a user-supplied template; TemplateSyntaxError for any tag not allowed."""
    return _engine.from_string(source)


def render(source: str, context: dict[str, Any]) -> str:
    return compile_template(source).render(Context(context, autoescape=False)).strip()
