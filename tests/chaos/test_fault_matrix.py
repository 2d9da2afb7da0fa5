"""The fault matrix (docs/fault-matrix.md) names, on every row, tests that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MATRIX = ROOT / "docs" / "fault-matrix.md"
#: ``path::name`` (a function defined in that file) or a bare ``test_...`` name, in backticks.
REFERENCE = re.compile(r"`(?:(?P<path>tests/[\w/]+\.py)::)?(?P<name>\w+)`")
DEFINITION = re.compile(r"^\s*(?:async\s+)?def\s+(\w+)\s*\(", re.MULTILINE)


def matrix_rows(text: str) -> list[dict[str, str]]:
    """The table's rows as ``{column: cell}`` (header and separator left out)."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = []
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert len(cells) == len(header), f"a row with {len(cells)} cells, not {len(header)}: {line[:80]}"
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


def definitions() -> dict[str, set[str]]:
    """``{path relative to the repository: names of the functions it defines}`` for every file under tests/."""
    return {
        str(path.relative_to(ROOT)): set(DEFINITION.findall(path.read_text()))
        for path in sorted((ROOT / "tests").rglob("*.py"))
    }


def missing_tests(rows: list[dict[str, str]], defined: dict[str, set[str]]) -> list[str]:
    """What is wrong with the rows' ``Test(s)`` cells: references to nothing, rows without a test."""
    every_test = {name for names in defined.values() for name in names if name.startswith("test_")}
    problems = []
    for row in rows:
        what = row["What was tried"][:60]
        references = list(REFERENCE.finditer(row["Test(s)"]))
        for ref in references:
            path, name = ref["path"], ref["name"]
            if path is not None and name not in defined.get(path, set()):
                problems.append(f"{what}: {path}::{name} does not exist")
            elif path is None and name not in every_test:
                problems.append(f"{what}: no test named {name}")
        if not any(ref["name"].startswith("test_") for ref in references):
            problems.append(f"{what}: names no test")
    return problems


def test_every_row_of_the_fault_matrix_names_tests_that_exist():
    rows = matrix_rows(MATRIX.read_text())
    assert len(rows) >= 20
    assert missing_tests(rows, definitions()) == []


def test_the_check_finds_a_stale_or_missing_test_name():
    defined = {"tests/chaos/test_x.py": {"test_real", "helper"}}
    row = {"What was tried": "a fault"}
    assert missing_tests([{**row, "Test(s)": "`tests/chaos/test_x.py::test_real`"}], defined) == []
    assert missing_tests([{**row, "Test(s)": "`test_real`"}], defined) == []
    assert missing_tests([{**row, "Test(s)": "`tests/chaos/test_x.py::test_gone`"}], defined) == [
        "a fault: tests/chaos/test_x.py::test_gone does not exist"
    ]
    assert missing_tests([{**row, "Test(s)": "`test_gone`"}], defined) == ["a fault: no test named test_gone"]
    assert missing_tests([{**row, "Test(s)": "`tests/chaos/test_x.py::helper`"}], defined) == ["a fault: names no test"]
    assert missing_tests([{**row, "Test(s)": ""}], defined) == ["a fault: names no test"]


def test_the_readme_links_the_matrix_instead_of_copying_it():
    readme = (ROOT / "README.md").read_text()
    assert "docs/fault-matrix.md" in readme
    assert "| What was tried |" not in readme
    assert not (ROOT / "tests" / "chaos" / "MATRIX.md").exists()
