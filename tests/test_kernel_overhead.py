"""Per-kernel GPU overhead (accelerator.kernel_overhead): every kernel costs a fixed launch gap, ramp-up and
last-wave drain on top of its roofline time. The roofline charges it once per modeled op; a training segment
whose ops are more kernels (one GEMM per local expert, the router's and permutation's small kernels) pays it
per kernel, CUDA graph or not (a graph saves host launches, not the kernels' GPU time)."""

from __future__ import annotations

import numpy as np
import pytest
import simpy
from sim_helpers import qwen3_moe_spec, simulate

from simcore.cluster import Cluster
from simcore.engine import Machine
from simcore.kernels.compute import KIND_IDS
from simcore.profile import load_profile
from workloads.spec import TrainingSpec, load_training_spec
from workloads.training import layer_segments


class _NoComm:
    def time(self, *args, **kwargs):  # pragma: no cover - no collective runs here
        raise AssertionError("no collective expected")


def _machine(overhead_us: float) -> Machine:
    prof = load_profile(
        "gen2.yaml", [f"accelerator.kernel_overhead={overhead_us} us", "calibration.host_kernel_time=0 us"]
    )
    m = Machine(simpy.Environment(), prof, Cluster(prof, racks=1), _NoComm())
    m.add_class("a", np.arange(4))
    return m


def _segment_time(m: Machine, work: tuple, kernels: int) -> float:
    ends: list[float] = []

    def proc():
        yield m.compute_fused(0, work, dtype="bf16", name="seg", kernels=kernels)
        ends.append(m.env.now)

    m.env.process(proc())
    m.env.run()
    return ends[0]


GEMM = (2e12, 1e9, 4096.0, KIND_IDS["gemm"])
NORM = (0.0, 5e8, 0.0, KIND_IDS["elementwise"])


@pytest.mark.parametrize("overhead_us", [0.0, 4.0, 10.0])
def test_kernels_beyond_one_per_op_pay_the_overhead_in_closed_form(overhead_us):
    over = overhead_us * 1e-6
    bare = _segment_time(_machine(0.0), (GEMM, NORM), kernels=0)
    # The roofline charges one overhead per op; kernels <= ops add nothing more.
    for kernels in (0, 1, 2):
        assert _segment_time(_machine(overhead_us), (GEMM, NORM), kernels) == pytest.approx(
            bare + 2 * over, rel=1e-12, abs=1e-15
        )
    # 16 expert GEMMs and a norm: 17 kernels, 15 beyond the two ops.
    assert _segment_time(_machine(overhead_us), (GEMM, NORM), 17) == pytest.approx(
        bare + 17 * over, rel=1e-12, abs=1e-15
    )


def _moe(graphs: bool = False, micro: int = 1) -> TrainingSpec:
    return qwen3_moe_spec(micro, graphs=graphs, micro_batches=2)


def _dense() -> TrainingSpec:
    return load_training_spec(
        {
            "kind": "training",
            "model": {"preset": "llama3-70b", "layers": 4},
            "parallelism": {"tp": 8, "pp": 1, "dp": 1, "recompute": "none"},
            "batch": {"global_seqs": 2, "micro": 1},
            "steps": 1,
        },
        file="dense.yaml",
    )


def _step(spec: TrainingSpec, overhead_us: float, host_us: float = 0.0) -> float:
    sets = (f"accelerator.kernel_overhead={overhead_us} us", f"calibration.host_kernel_time={host_us} us")
    return simulate(spec, "b200-dgx.yaml", sets=sets)[2]


def test_segments_count_every_kernel_the_gpu_runs_graphed_or_not():
    for phase in ("fwd", "bwd"):
        eager = [s for s in layer_segments(_moe(), 0, phase) if getattr(s, "work", ())]
        graphed = [s for s in layer_segments(_moe(graphs=True), 0, phase) if getattr(s, "work", ())]
        assert [s.kernels for s in eager] == [s.launches for s in eager]
        assert [s.kernels for s in graphed] == [s.kernels for s in eager]
        assert sum(s.launches for s in graphed) < sum(s.kernels for s in graphed)
        # A grouped expert GEMM is one kernel per local expert: the MoE segments hold many more kernels
        # than ops.
        moe = [s for s in eager if s.name.endswith(":moe")]
        assert sum(s.kernels for s in moe) > 2 * sum(len(s.work) for s in moe)


def test_overhead_never_speeds_a_step_and_costs_fine_grained_moe_more_than_large_dense_layers():
    moe = [_step(_moe(), o) for o in (0.0, 2.0, 4.0, 8.0)]
    assert moe == sorted(moe) and moe[0] < moe[-1]
    dense = [_step(_dense(), o) for o in (0.0, 4.0)]
    moe_cost = moe[2] / moe[0] - 1.0
    dense_cost = dense[1] / dense[0] - 1.0
    assert 0.0 <= dense_cost < 0.02  # 70B layers: GEMMs of milliseconds; 16 experts of microseconds
    assert moe_cost > 5 * dense_cost
    # A larger micro-batch amortises it: the same kernels over twice the tokens.
    big = [_step(_moe(micro=2), o) for o in (0.0, 4.0)]
    assert big[1] / big[0] - 1.0 < moe_cost


def test_cuda_graphs_save_the_host_not_the_kernels_gpu_time():
    # No host cost: graphing changes nothing, the kernels still run one by one.
    assert _step(_moe(graphs=True), 4.0) == pytest.approx(_step(_moe(), 4.0), rel=1e-12)
    assert _step(_moe(graphs=True), 4.0) > _step(_moe(graphs=True), 0.0)
