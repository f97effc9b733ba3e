"""Defaults for the settings a site leaves unset (dispatcher/conf.py)."""

from __future__ import annotations

import ast

from dispatcher import conf
from tests.services import BASE


def test_unset_settings_get_their_default_and_set_ones_are_kept(settings):
    del settings.DISPATCHER_BATCH_SIZE
    del settings.SITE_URL
    settings.DISPATCHER_RETRY_LIMIT = 3
    conf.apply_defaults()
    assert settings.DISPATCHER_BATCH_SIZE == 500
    assert settings.SITE_URL == "http://127.0.0.1:8000"
    assert settings.DISPATCHER_RETRY_LIMIT == 3


def test_every_setting_the_code_reads_directly_has_a_default():
    """A site sets only what it needs: a setting read as ``settings.X`` (not
    with getattr and a default) must be in conf.DEFAULTS, or the site breaks."""
    read = set()
    for folder in ("dispatcher", "tasks"):
        for path in (BASE / folder).rglob("*.py"):
            read |= {
                node.attr for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id == "settings"
                and (node.attr.startswith("DISPATCHER_") or node.attr == "SITE_URL")
            }
    assert {"DISPATCHER_BATCH_SIZE", "SITE_URL"} <= read, "the walk finds nothing: is it still right?"
    assert read - set(conf.DEFAULTS) == set()
