"""Speed of whole training-step simulations: profile -> cluster -> simpy run -> power/thermal -> summary.

Run: ``pytest benchmarks/test_bench_training.py`` (quick, ~10 s) or with ``--benchmark-scale large`` for
the issue's target sizes. No trace is written (``benchmarks/test_bench_trace.py`` times that). Targets
(informational, recorded in ``benchmark.extra_info``): llama3-405b on 16,384 gen1 GPUs < 2 s per step;
on 131,072 gen3 GPUs < 3 s (large only); ``--fidelity full`` at 1,024 GPUs < 60 s (large only; quick runs
the same layout on 64 GPUs). The jobs are defined once, in ``simcore.bench`` (the ``bench`` command
measures the same ones against a calibration loop and the committed baseline).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from simcore.bench import SPEC_8B_PP4_1K, SPEC_8B_PP4_64, SPEC_405B_16K, SPEC_405B_131K, RunCase

FULL_64 = RunCase("gen1.yaml", SPEC_8B_PP4_64, fidelity="full")
FULL_1K = RunCase("gen1.yaml", SPEC_8B_PP4_1K, fidelity="full")

# name -> {scale: (case, target seconds or None, timed rounds, warm-up case or None)}
CASES: dict[str, dict[str, tuple[RunCase, float | None, int, RunCase | None]]] = {
    "llama3_8b_gen2_rack": {
        "quick": (RunCase("gen2.yaml", "llama3-8b"), None, 5, None),
        "large": (RunCase("gen2.yaml", "llama3-8b"), None, 10, None),
    },
    "llama3_405b_16k_gen1": {
        "quick": (RunCase("gen1.yaml", SPEC_405B_16K), 2.0, 3, None),
        "large": (RunCase("gen1.yaml", SPEC_405B_16K), 2.0, 5, None),
    },
    "llama3_405b_131k_gen3": {"large": (RunCase("gen3.yaml", SPEC_405B_131K), 3.0, 3, None)},
    "full_fidelity": {
        "quick": (FULL_64, None, 3, None),
        "large": (FULL_1K, 60.0, 1, FULL_64),  # one 1,024-GPU round: 20-40 s
    },
}


@pytest.mark.parametrize("name", list(CASES))
def test_bench_training_step(benchmark: Any, scale: str, name: str, tmp_path: Path) -> None:
    if scale not in CASES[name]:
        pytest.skip("large only: pytest benchmarks --benchmark-scale large")
    case, target_s, rounds, warmup = CASES[name][scale]
    t0 = time.perf_counter()
    first = (warmup or case).run(tmp_path)  # cold: first run in this process (memos, numba cache load)
    first_s = time.perf_counter() - t0
    result = benchmark.pedantic(case.run, args=(tmp_path,), rounds=rounds, iterations=1)
    s = result.summary
    wall = benchmark.stats.stats.min
    benchmark.extra_info.update(
        profile=case.profile,
        fidelity=case.fidelity,
        gpus=s["gpus"],
        parallelism=s["workload"]["parallelism"],
        simulated_step_time_s=s["step_time_s"],
        events=s["events"],
        collective_calls=sum(s["collective_algorithms"].values()),
        events_per_s=s["events"] / wall,
        wall_s_best=wall,
        wall_s_first_run=first_s if warmup is None else None,
        target_s=target_s,
        target_met=None if target_s is None else wall < target_s,
    )
    if warmup is None:
        assert s["events"] == first.summary["events"]  # deterministic work
    print(
        f"\n{name} ({scale}): {s['gpus']} GPUs, {s['events']:,} events, best {wall:.2f} s"
        + (f", first {first_s:.2f} s" if warmup is None else "")
        + (f" (target < {target_s:g} s)" if target_s else "")
    )
