"""docs/writing-a-messenger.md runs as written: its example messenger and its tests.

The guide's code blocks that start with ``# myapp/messengers.py`` and
``# myapp/tests/test_acme.py`` are executed here as modules, and every
``test_*`` function of the second one is run against the real engine and
database. A guide that drifts from the code fails this test.
"""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from messengers import redact

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "writing-a-messenger.md"
BLOCKS = {
    block.split("\n", 1)[0][2:].strip(): block
    for block in re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.S)
    if block.startswith("# myapp/")
}
TESTS = sorted(re.findall(r"^def (test_\w+)\(", BLOCKS.get("myapp/tests/test_acme.py", ""), re.M))

pytestmark = pytest.mark.django_db


@pytest.fixture
def guide_modules() -> Iterator[dict]:
    """Import the guide's messenger as ``myapp.messengers`` and load its tests."""
    saved_secrets = set(redact._secrets)
    package = types.ModuleType("myapp")
    package.__path__ = []
    messengers = types.ModuleType("myapp.messengers")
    sys.modules.update({"myapp": package, "myapp.messengers": messengers})
    try:
        exec(compile(BLOCKS["myapp/messengers.py"], f"{GUIDE}:myapp/messengers.py", "exec"),
             messengers.__dict__)
        namespace: dict = {"__name__": "myapp.tests.test_acme"}
        exec(compile(BLOCKS["myapp/tests/test_acme.py"], f"{GUIDE}:test_acme.py", "exec"), namespace)
        yield namespace
    finally:
        sys.modules.pop("myapp.messengers", None)
        sys.modules.pop("myapp", None)
        redact._secrets.clear()
        redact._secrets.update(saved_secrets)


def test_the_guide_has_its_example():
    assert set(BLOCKS) == {"myapp/messengers.py", "myapp/tests/test_acme.py"}
    assert len(TESTS) >= 3


@pytest.mark.parametrize("name", TESTS)
def test_guide_example(guide_modules, name):
    guide_modules[name]()
