"""Shared fixtures: profiles are loaded once per session (pint registry build is the slow part)."""

from __future__ import annotations

from pathlib import Path

import pytest

from simcore.profile import Profile, load_profile


@pytest.fixture(scope="session")
def gen2() -> Profile:
    return load_profile("gen2.yaml")


PP_SPEC = """\
kind: training
preset: llama3-8b
parallelism: {tp: 8, pp: 2, dp: 4, cp: 1, ep: 1, vp: 1, sequence_parallel: true, zero: 1, recompute: selective}
batch: {global_seqs: 16, micro: 1}
precision: bf16
steps: 2
"""


@pytest.fixture(scope="session")
def real_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real pipelined run (tp8 pp2 dp4, two steps) on gen2, shared by the trace/report/export tests."""
    from simcore.runner import RunOptions, run

    d = tmp_path_factory.mktemp("pp_run")
    (d / "pp.yaml").write_text(PP_SPEC)
    run(RunOptions(profile="gen2.yaml", workload=str(d / "pp.yaml"), out=d / "out"))
    return d / "out" / "trace.h5"
