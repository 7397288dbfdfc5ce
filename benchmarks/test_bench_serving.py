"""Speed of serving simulations: a long-context server runs tens of thousands of short iterations, so the
per-iteration cost and the power controller's polling of the open activity block dominate.

Run: ``pytest benchmarks/test_bench_serving.py`` (quick, ~10 s) or with ``--benchmark-scale large``. The
quick case is the shape of the slowest ``validate --serving`` rows (Llama 3.1 405B, tp 8, 20k-token prompts,
2k-token answers, ~30 sequences at a time by KV capacity), shortened to 150 requests; before polling walked
back from the newest part of the open block it took 20 s (quadratic in the ticks between emissions), now ~5.
Target (informational): < 10 s quick.

The second case is the shape of the many-sequence rows (Llama 3.1 8B, one H100, 128-token prompts, 2k-token
answers, 640 sequences at a time): per-sequence passes of the scheduler dominate. Target (informational):
the iteration rate of the long-context case or better.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from simcore.bench import RunCase


def _serving(requests: int) -> dict[str, Any]:
    return {
        "kind": "inference",
        "name": f"llama3-405b-long-context-{requests}",
        "model": "llama3-405b",
        "parallelism": {"tp": 8},
        "precision": "fp8",
        "kv_cache": {"precision": "fp8"},
        "scheduler": {"max_num_seqs": 512, "max_batch_tokens": 8192},
        "requests": {"count": requests, "input_tokens": 20000, "output_tokens": 2000},
    }


CASES = {"quick": (_serving(150), 10.0, 3), "large": (_serving(1000), None, 1)}


def test_bench_long_context_serving(benchmark: Any, scale: str, tmp_path: Path) -> None:
    spec, target_s, rounds = CASES[scale]
    case = RunCase("h100-dgx.yaml", spec, steps=None)
    t0 = time.perf_counter()
    first = case.run(tmp_path)
    first_s = time.perf_counter() - t0
    result = benchmark.pedantic(case.run, args=(tmp_path,), rounds=rounds, iterations=1)
    s = result.summary
    wall = benchmark.stats.stats.min
    assert s["events"] == first.summary["events"]  # deterministic work
    benchmark.extra_info.update(
        iterations=s["iterations"],
        events=s["events"],
        events_per_s=s["events"] / wall,
        wall_s_best=wall,
        wall_s_first_run=first_s,
        target_s=target_s,
        target_met=None if target_s is None else wall < target_s,
    )
    print(f"\nlong-context serving ({scale}): {s['iterations']:,} iterations, best {wall:.2f} s")


def _many_sequences(requests: int) -> dict[str, Any]:
    return {
        "kind": "inference",
        "name": f"llama3-8b-many-sequences-{requests}",
        "model": "llama3-8b",
        "parallelism": {"tp": 1},
        "precision": "fp8",
        "kv_cache": {"precision": "fp8"},
        "scheduler": {"max_num_seqs": 640, "max_batch_tokens": 2048},
        "requests": {"count": requests, "input_tokens": 128, "output_tokens": 2048},
    }


MANY = {"quick": (_many_sequences(640), 1), "large": (_many_sequences(3000), 1)}


def test_bench_many_sequences_serving(benchmark: Any, scale: str, tmp_path: Path) -> None:
    spec, rounds = MANY[scale]
    case = RunCase("h100-dgx.yaml", spec, steps=None)
    case.run(tmp_path)  # warm (numba, profile)
    result = benchmark.pedantic(case.run, args=(tmp_path,), rounds=rounds, iterations=1)
    s = result.summary
    wall = benchmark.stats.stats.min
    assert s["requests_completed"] == spec["requests"]["count"]
    benchmark.extra_info.update(
        iterations=s["iterations"],
        iterations_per_s=s["iterations"] / wall,
        sequence_tokens_per_s=s["iterations"] * spec["scheduler"]["max_num_seqs"] / wall,
        wall_s_best=wall,
    )
    print(f"\nmany-sequence serving ({scale}): {s['iterations']:,} iterations, best {wall:.2f} s")
