"""Code blocks of the README, for tests that run them as they are written."""

from __future__ import annotations

import re

from tests.services import BASE


def section(title: str) -> str:
    """The text of the README section ``## <title>``, up to the next ``## ``."""
    text = (BASE / "README.md").read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, re.S | re.M)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def code_blocks(text: str, language: str = "python") -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.S | re.M)


def file_blocks(title: str) -> list[tuple[str, str]]:
    """The python blocks of a section that start with ``# <path>``: ``(path, code)``."""
    found = []
    for block in code_blocks(section(title)):
        first, _, _ = block.partition("\n")
        match = re.fullmatch(r"# ([\w./-]+\.py)", first.strip())
        assert match, f"a python block of {title!r} does not name its file on its first line: {first!r}"
        found.append((match.group(1), block))
    assert found, f"README section {title!r} has no python blocks"
    return found
