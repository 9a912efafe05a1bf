"""Code blocks of the repository's markdown files (README.md, docs/*.md), for the tests that run
what the documentation shows."""
from __future__ import annotations

import re


def code_blocks(text: str, language: str) -> list[str]:
    """The bodies of the fenced ```<language> blocks of a markdown text, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def block_containing(text: str, language: str, needle: str, where: str) -> str:
    """The one ```<language> block of ``text`` (the file ``where``) that contains ``needle``."""
    blocks = [b for b in code_blocks(text, language) if needle in b]
    assert len(blocks) == 1, f"expected one ```{language} block with {needle!r} in {where}, found {len(blocks)}"
    return blocks[0]
