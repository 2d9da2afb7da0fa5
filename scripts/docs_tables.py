"""Rewrite the generated tables of ``docs/connection.md`` from the settings table.

    .venv/airflow-3.3.2/bin/python scripts/docs_tables.py     # any of the project's venvs

``tests/test_docs.py`` fails while the page and the table differ.
"""

from __future__ import annotations

from pathlib import Path

from airflow_provider_luma.connection_form import replace_docs_tables

PAGE = Path(__file__).resolve().parent.parent / "docs" / "connection.md"

if __name__ == "__main__":
    PAGE.write_text(replace_docs_tables(PAGE.read_text()))
    print(f"Wrote the extras tables of {PAGE}.")
