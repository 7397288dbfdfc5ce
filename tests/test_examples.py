"""Every workload in examples/ runs as its header says: a newcomer's first copy-and-edit must not fail
(the sweep files have their own tests in test_sweep.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from simcore.runner import RunOptions, run

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
WORKLOADS = sorted(p for p in EXAMPLES.glob("*.yaml") if not p.name.startswith("sweep-"))
SWEEPS = sorted(EXAMPLES.glob("sweep-*.yaml"))
# Each workload example with the profile its header names, shortened where it would take seconds.
PROFILE = {
    "llama3-70b-serving.yaml": "h100-dgx.yaml",
    "qwen3-30b-ep8.yaml": "b200-dgx.yaml",
    "nemotron-3-super-nvfp4.yaml": "gb300-nvl72.yaml",
    "llama3-70b-straggler.yaml": "gen2.yaml",
    "llama3-70b-hot-rack.yaml": "gen2.yaml",
}
SHORTER = {
    "llama3-70b-serving.yaml": ["requests.count=40"],
    "qwen3-30b-ep8.yaml": ["model.layers=4"],
    "llama3-70b-straggler.yaml": ["steps=1"],
    "llama3-70b-hot-rack.yaml": ["steps=1"],
    "nemotron-3-super-nvfp4.yaml": [
        "scale_up.domain_size=64",
        "rack.trays_per_rack=16",
        "batch.global_seqs=64",
    ],
}


def test_every_example_is_covered():
    assert {p.name for p in WORKLOADS} == set(PROFILE)
    assert {p.name for p in SWEEPS} == {"sweep-host-bound.yaml", "sweep-nic-tp.yaml"}  # test_sweep.py


@pytest.mark.parametrize("path", WORKLOADS, ids=lambda p: p.name)
def test_workload_examples_run(path, tmp_path):
    assert PROFILE[path.name] in path.read_text()  # the header's command names the profile used here
    opts = RunOptions(
        profile=PROFILE[path.name],
        workload=str(path),
        sets=SHORTER[path.name],
        steps=None if "serving" in path.name else 1,  # serving runs its request stream, not steps
        write_trace=False,
        out=str(tmp_path / "run"),
    )
    summary = run(opts).summary
    assert summary["tokens_per_s"] > 0 and summary["avg_it_power_w"] > 0
