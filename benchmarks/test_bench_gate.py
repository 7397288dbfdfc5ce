"""The regression gate as pytest: golden answers (exact) and speed against ``benchmarks/baseline.json``.

Run: ``pytest benchmarks/test_bench_gate.py`` (``--benchmark-scale large`` gates the large baseline).
Same checks as ``python run_sim.py bench check-golden`` and ``bench --compare benchmarks/baseline.json``,
one test per golden case and per benchmark, so a failure names what moved. Update with
``python run_sim.py bench update-golden`` / ``bench update-baseline [--large]`` (see benchmarks/README.md).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from simcore import bench

GOLDEN = {gc.id: gc for gc in bench.golden_cases()}
SPEED = {d.name: d for d in bench.benchmarks()}


@pytest.mark.parametrize("case_id", list(GOLDEN))
def test_golden_answer(case_id: str) -> None:
    path = bench.GOLDEN_DIR / f"{case_id}.json"
    if not path.is_file():
        pytest.fail(f"no {path.name}: run `python run_sim.py bench update-golden` and commit it")
    with tempfile.TemporaryDirectory() as tmp:
        doc = bench.golden_document(GOLDEN[case_id], Path(tmp))
    changes = bench.diff_values(bench._load_json(path), doc)
    assert not changes, f"{case_id}: answers changed (bench update-golden if intended):\n" + "\n".join(
        f"  {c.render()}" for c in changes
    )


@pytest.mark.parametrize("name", list(SPEED))
def test_speed_against_baseline(name: str, scale: str) -> None:
    d = SPEED[name]
    if scale not in d.scales:
        pytest.skip(f"{name} runs at {'/'.join(d.scales)} scale only")
    baseline = bench.load_baseline(bench.BASELINE_PATH) if bench.BASELINE_PATH.is_file() else {}
    records, verdicts = bench.run_suite(scale, [name], baseline, defs=[d])
    assert verdicts is not None
    table = bench.format_table(records, verdicts, scale, bench.THRESHOLD)
    print("\n" + table)
    assert "error" not in records[0], records[0].get("error")  # a benchmark that cannot run fails
    if verdicts[0].baseline is None:
        pytest.skip(f"no {scale} baseline for {name}: python run_sim.py bench update-baseline --{scale}")
    assert not verdicts[0].failed(bench.THRESHOLD), table
