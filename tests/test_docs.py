"""
The docs' code samples work and their links resolve (README.md and docs/*.md).

Every ```python block is compiled and its imports executed. The blocks of a page then run in
order, in one namespace, against the simulator (``luma_default`` points at it), each as if inside a
DAG's ``with`` block: hook calls make real generations there, operators are built (and checked as
at parse time); a block that defines a DAG is run with ``dag.test()``; a ``test_...``
function a block defines is called with the pytest fixtures it names. A block preceded by
``<!-- docs-test: imports-only (why) -->`` only has its imports run (it needs context the page
leaves out, e.g. upstream tasks).
"""

from __future__ import annotations

import ast
import inspect
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.providers.common.compat.sdk import DAG

import airflow_provider_luma
from airflow_provider_luma.testing import LumaSimulator
from tests.support.connection import connection_json
from tests.support.dag_runner import run_dag_source

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(?P<lang>\w*)[^\n]*\n(?P<code>.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
MARKER = re.compile(r"<!-- docs-test: (?P<mode>[\w-]+)(?: \((?P<why>[^)]*)\))? -->\s*$")
#: ``[text](target)``, not an image (the same rule as docs/hooks/repository_files.py).
LINK = re.compile(r"(?<!!)\[(?P<text>[^\]\n]+)\]\((?P<target>[^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(?P<title>.+?) *#* *$", re.MULTILINE)
#: Where the docs' DAG samples write videos; a test run writes to its own folder instead.
SAMPLE_DESTINATION = "/tmp/luma-videos/"
START = pendulum.datetime(2025, 1, 1, tz="UTC")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: Path
    line: int
    lang: str
    code: str
    mode: str  # "run" or "imports-only"

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    text = page.read_text()
    found = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.search(before)
        mode = marker["mode"] if marker else "run"
        assert mode in ("run", "imports-only"), f"{page.name}: unknown docs-test mode {mode!r}"
        line = text.count("\n", 0, match.start()) + 1
        found.append(Block(page, line, match["lang"], match["code"], mode))
    return found


def python_blocks(page: Path | None = None) -> list[Block]:
    return [b for p in ([page] if page else PAGES) for b in blocks(p) if b.lang == "python"]


def compiled(block: Block) -> Any:
    # Top-level await is allowed: a sample may show the inside of an async function.
    return compile(block.code, block.name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def import_lines(block: Block) -> ast.Module:
    """The block's import statements (at any depth), as a module of their own."""
    imports = [node for node in ast.walk(ast.parse(block.code)) if isinstance(node, (ast.Import, ast.ImportFrom))]
    return ast.Module(body=imports, type_ignores=[])


# -- every block -------------------------------------------------------------------------------


@pytest.mark.parametrize("block", python_blocks(), ids=lambda b: b.name)
def test_every_python_sample_compiles_and_its_imports_run(block: Block) -> None:
    compiled(block)
    exec(compile(import_lines(block), block.name, "exec"), {})


def test_the_docs_have_samples_that_run() -> None:
    # The markers are the exception: most samples run.
    every = python_blocks()
    running = [b for b in every if b.mode == "run"]
    assert len(every) >= 10
    assert len(running) >= len(every) - 3, [b.name for b in every if b.mode != "run"]


# -- the samples of each page, run against the simulator ------------------------------------------


def pages_with_samples() -> list[Path]:
    return [page for page in PAGES if any(b.mode == "run" for b in python_blocks(page))]


@pytest.mark.parametrize("page", pages_with_samples(), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_samples_of_the_page_run_against_the_simulator(
    page: Path,
    simulator: LumaSimulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    # Universal waits poll every 2 s (the floor) instead of 10 s.
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", connection_json(simulator, poll_interval=2))
    namespace: dict[str, Any] = {"__name__": f"docs_sample_{page.stem.replace('-', '_')}"}
    for block in python_blocks(page):
        if block.mode != "run":
            exec(compile(import_lines(block), block.name, "exec"), namespace)
            continue
        dag_id = re.search(r"""DAG\(\s*(?:dag_id=)?["'](\w+)["']""", block.code)
        if dag_id is not None:
            request.getfixturevalue("airflow_db")
            run_dag_sample(block, dag_id[1], tmp_path)
            continue
        before = set(namespace)
        # As if inside a DAG's `with` block: task samples connect tasks, which needs a DAG.
        with DAG(dag_id=f"docs_{page.stem.replace('-', '_')}_{block.line}", schedule=None, start_date=START):
            exec(compiled(block), namespace)
        for name in sorted(set(namespace) - before):
            if name.startswith("test_") and callable(namespace[name]):
                function = namespace[name]
                fixtures = {p: request.getfixturevalue(p) for p in inspect.signature(function).parameters}
                function(**fixtures)


def run_dag_sample(block: Block, dag_id: str, tmp_path: Path) -> None:
    """Run the DAG the block defines with ``dag.test()``; its videos go to ``tmp_path``."""
    output = tmp_path / dag_id
    source = block.code.replace(SAMPLE_DESTINATION, f"{output}/")
    result = run_dag_source(source, dag_id)
    assert result.state == "success", (block.name, result.task_states)
    if SAMPLE_DESTINATION in block.code:
        videos = list(output.rglob("*.mp4"))  # an id may hold "/" (older releases nest it)
        assert videos, f"{block.name}: no video written"
        assert all(video.read_bytes()[4:8] == b"ftyp" for video in videos)


# -- links ---------------------------------------------------------------------------------------


def prose(text: str) -> str:
    """``text`` without its fenced code blocks."""
    return FENCE.sub("", text)


def slugs(text: str) -> set[str]:
    """The anchors of a Markdown file's headings, as MkDocs (toc) and GitHub make them."""
    found = set()
    for match in HEADING.finditer(prose(text)):
        title = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", match["title"])
        ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
        found.add(re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", ascii_title).strip().lower()))
        found.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", title.strip().lower())))
    return found


def broken_links(page: Path) -> list[str]:
    problems = []
    for match in LINK.finditer(prose(page.read_text())):
        target = match["target"]
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # https:, mailto: ...
        path_part, _, anchor = target.partition("#")
        path = (page.parent / path_part).resolve() if path_part else page
        if not path.is_relative_to(ROOT) or not path.exists():
            problems.append(f"{page.name}: {target} does not exist in the repository")
        elif anchor and path.suffix == ".md" and anchor not in slugs(path.read_text()):
            problems.append(f"{page.name}: {target}: no heading makes the anchor #{anchor}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_in_the_repository(page: Path) -> None:
    assert broken_links(page) == []


def test_the_link_check_finds_a_missing_file_and_anchor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    (tmp_path / "b.md").write_text("# A title, with `code`\n")
    page = tmp_path / "a.md"
    page.write_text("[ok](b.md#a-title-with-code) [web](https://x.org/y) [gone](c.md) [bad](b.md#nope)\n")
    assert broken_links(page) == [
        "a.md: c.md does not exist in the repository",
        "a.md: b.md#nope: no heading makes the anchor #nope",
    ]


# -- what points at the docs -------------------------------------------------------------------


def test_provider_info_how_to_guides_are_doc_pages() -> None:
    (integration,) = airflow_provider_luma.get_provider_info()["integrations"]
    guides = integration["how-to-guide"]
    assert guides
    assert all(guide.startswith("/docs/") for guide in guides)  # Airflow's convention for these paths
    assert all((ROOT / guide.lstrip("/")).is_file() for guide in guides), guides
    assert integration["integration-name"] == "Luma AI"


def test_the_connection_page_lists_every_extra_as_the_table_says() -> None:
    from airflow_provider_luma.connection_form import replace_docs_tables
    from airflow_provider_luma.settings_table import SETTINGS

    page = (ROOT / "docs" / "connection.md").read_text()
    assert replace_docs_tables(page) == page, (
        "the extras tables differ from the settings: python scripts/docs_tables.py"
    )
    rows = [line for line in page.splitlines() if line.startswith("| `")]
    documented = {name for row in rows for name in re.findall(r"`(\w+)`", row.split("|")[1])}
    assert {setting.name for setting in SETTINGS} <= documented


def test_every_doc_page_is_in_the_site_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    assert all(f": {page.name}" in nav for page in (ROOT / "docs").glob("*.md"))


def test_readme_keeps_the_two_commands_ci_and_people_run() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/demo" in readme
    # The README's test command runs the whole suite, and CI runs exactly that command.
    assert "bash scripts/test --all    # the whole test suite" in readme
    assert "bash scripts/test --all" in (ROOT / ".ci" / "run").read_text()
    assert "benchmarks/RESULTS.md" in readme
    assert "docs/fault-matrix.md" in readme
