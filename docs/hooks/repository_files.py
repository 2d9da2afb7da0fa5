"""
MkDocs hook: pages may link to files of the repository outside ``docs/`` (``../CHANGELOG.md``).

The repository is browsed on its own (links work there as written); the site only holds ``docs/``,
so in strict mode such a link would fail the build. Here a link to a file that exists in the
repository becomes plain text naming the file; a link to one that does not exist is left for
MkDocs to report (and fail on). A block between ``<!-- include: PATH -->`` and
``<!-- end include -->`` is replaced by the file at ``PATH`` (relative to the page), so the site
shows e.g. the changelog itself. ``tests/test_docs.py`` checks every relative link resolves.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

#: ``[text](target)``, not an image; the target has no spaces.
LINK = re.compile(r"(?<!!)\[(?P<text>[^\]\n]+)\]\((?P<target>[^)\s]+)\)")
INCLUDE = re.compile(r"<!-- include: (?P<path>\S+) -->.*?<!-- end include -->", re.DOTALL)
FENCE = re.compile(r"^```.*?^```[ \t]*$", re.DOTALL | re.MULTILINE)


def repository_file(page_file: Path, target: str, docs_dir: Path) -> Path | None:
    """The repository file outside ``docs_dir`` that ``target`` names, or ``None``."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith(("#", "/")):
        return None
    path = (page_file.parent / target.split("#", 1)[0]).resolve()
    root = docs_dir.parent
    if path.is_relative_to(docs_dir) or not path.is_relative_to(root) or not path.exists():
        return None
    return path.relative_to(root)


def outside_links_as_text(markdown: str, page_file: Path, docs_dir: Path) -> str:
    """``markdown`` with links to repository files outside ``docs_dir`` turned into plain text."""

    def replace(match: re.Match[str]) -> str:
        file = repository_file(page_file, match["target"], docs_dir)
        if file is None:
            return match[0]
        text = match["text"]
        if text.strip("`") == file.as_posix():
            return f"`{file.as_posix()}` (in the repository)"
        return f"{text} (`{file.as_posix()}` in the repository)"

    # Leave fenced code alone: only prose links are rewritten.
    pieces, last = [], 0
    for fence in FENCE.finditer(markdown):
        pieces.append(LINK.sub(replace, markdown[last : fence.start()]))
        pieces.append(fence[0])
        last = fence.end()
    pieces.append(LINK.sub(replace, markdown[last:]))
    return "".join(pieces)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    docs_dir = Path(config["docs_dir"]).resolve()
    page_file = docs_dir / page.file.src_path

    def include(match: re.Match[str]) -> str:
        return (page_file.parent / match["path"]).resolve().read_text()

    return outside_links_as_text(INCLUDE.sub(include, markdown), page_file, docs_dir)
