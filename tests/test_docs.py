"""Docs that are generated from the code must match it (so they cannot drift)."""

from __future__ import annotations

import re
from pathlib import Path

from simcore.schema import markdown_table
from workloads.spec import Batch, Parallelism

DOCS = Path(__file__).resolve().parent.parent / "docs"
HEADER = ["| field | type | default | meaning |", "| --- | --- | --- | --- |"]


def _section(text: str, name: str) -> str:
    m = re.search(rf"<!-- BEGIN GENERATED {name} -->\n(.*?)\n<!-- END GENERATED {name} -->", text, re.S)
    assert m, f"docs/workloads.md lacks the {name} markers"
    return m.group(1)


def test_workload_field_tables_match_the_schema():
    text = (DOCS / "workloads.md").read_text()
    assert _section(text, "PARALLELISM") == "\n".join(HEADER + markdown_table(Parallelism, "parallelism"))
    assert _section(text, "BATCH") == "\n".join(HEADER + markdown_table(Batch, "batch"))


def test_readme_links_point_at_existing_docs():
    readme = (DOCS.parent / "README.md").read_text()
    for name in re.findall(r"docs/([\w-]+\.md)", readme):
        assert (DOCS / name).is_file(), name
