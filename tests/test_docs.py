"""Docs that are generated from the code must match it (so they cannot drift)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from simcore.errors import ConfigError
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


def test_design_claims_only_the_serving_features_that_are_modelled():
    """docs/design.md's inference paragraph must agree with docs/inference.md and the loader: pp > 1 is an
    error and prefill/decode disaggregation is not modelled."""
    from workloads.inference import load_inference_spec

    design = " ".join((DOCS / "design.md").read_text().split())
    inference = " ".join((DOCS / "inference.md").read_text().split())
    assert "prefill/decode disaggregation" in inference.split("Not modelled yet", 1)[1]
    assert "optional prefill/decode disaggregation" not in design
    assert "prefill/decode disaggregation is not modelled" in design
    with pytest.raises(ConfigError, match="pipeline-parallel serving is not modelled"):
        load_inference_spec(
            {"kind": "inference", "model": "llama3-8b", "parallelism": {"pp": 2}}, file="s.yaml"
        )
    assert "(tp, pp, replicas)" not in design and "`pp` exists but must be 1" in design
