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


def test_workloads_md_lists_every_job_key_the_replay_writes():
    """The documented job_* list is the replay's: a key the summary holds (job_steps was missing) is listed."""
    from simcore.reliability import JobPlan, replay_job

    plan = JobPlan(steps=10, step_time_s=1.0, checkpoint_s=1.0, checkpoint_every=5, nodes=1, node_mtbf_s=1e9)
    text = (DOCS / "workloads.md").read_text()
    section = text[text.index("## Multi-day jobs") :]
    for key in replay_job(plan).summary():
        assert f"`{key}`" in section, key


def test_the_nic_power_hint_quotes_the_shipped_profiles():
    """docs/profiles.md says nic_power does not follow nic_bandwidth and quotes what the shipped profiles set
    per NIC speed: every profile it names has that speed and a power in the quoted range."""
    from simcore.profile import load_profile

    text = " ".join((DOCS / "profiles.md").read_text().split())
    hint = text[text.index("- `nic_power` is a fixed power per NIC") :]
    hint = hint[: hint.index(" - ")]
    assert "does not follow `scale_out.nic_bandwidth`" in hint and "20 W per NIC" in hint
    claims = re.findall(r"(\d+)(?:-(\d+))? W (?:for|at) ([\d.]+ [GT]b/s)[^(]*\(([^)]*)\)", hint)
    assert len(claims) == 4
    checked = 0
    for low, high, speed, names in claims:
        for name in names.split(", "):
            if name.startswith("the "):
                continue
            p = load_profile(f"{name}.yaml")
            bits = float(speed.split()[0]) * (1e12 if speed.endswith("Tb/s") else 1e9)
            assert p.scale_out.nic_bandwidth * 8 == pytest.approx(bits), name
            assert float(low) <= p.rack.nic_power <= float(high or low), name
            checked += 1
    assert checked >= 7
