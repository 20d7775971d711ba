"""The README and docs link only inside the repository, and every link they make leads somewhere."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_readme_stays_inside_the_repository() -> None:
    text = (ROOT / "README.md").read_text()
    assert "../" not in text and "shared/DESIGN" not in text
    for target in LINK.findall(text):
        assert not re.match(r"[a-z]+://", target), f"README links outside the repository: {target}"


def test_every_relative_link_resolves() -> None:
    broken = []
    for page in _pages():
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            if not path.exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
            elif ROOT not in path.parents:
                broken.append(f"{page.relative_to(ROOT)} -> {target} (outside the repository)")
    assert broken == []


def test_readme_is_short_and_points_to_the_docs() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 120
    assert "make demo" in text and "make test" in text
    assert "docs/img/console.png" in text and "docs/img/ohif-seg-sr.png" in text  # the two screenshots
    for page in ("docs/admin-guide.md", "docs/ai-guide.md", "docs/reference.md", "docs/benchmarks.md"):
        assert page in text
