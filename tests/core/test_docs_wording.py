"""The help pages are reached through the node's info button / the right side panel's Info tab: the docs must not
send users to a "?" on the node, which no frontend draws."""
from __future__ import annotations

import re

from tests.conftest import REPO


def test_docs_point_to_the_info_button_not_a_question_mark():
    docs = [REPO / "README.md", *sorted((REPO / "web" / "docs").glob("*.md"))]
    for path in docs:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r'the "\?" on\s+the node|question mark', text), path.name
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert 'info button (ⓘ, "Node Info")' in readme and "right side panel's **Info** tab" in readme
