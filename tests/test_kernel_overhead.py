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


def _machine(overhead_us: float, host_us: float = 0.0) -> Machine:
    prof = load_profile(
        "gen2.yaml",
        [f"accelerator.kernel_overhead={overhead_us} us", f"calibration.host_kernel_time={host_us} us"],
    )
    m = Machine(simpy.Environment(), prof, Cluster(prof, racks=1), _NoComm())
    m.add_class("a", np.arange(4))
    return m


def _segment_time(m: Machine, work: tuple, kernels: int, launches: int = 0) -> float:
    ends: list[float] = []

    def proc():
        yield m.compute_fused(0, work, dtype="bf16", name="seg", kernels=kernels, launches=launches)
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


def test_the_overhead_is_gpu_time_before_the_host_bounds():
    """The extra kernels lengthen the GPU time the host-bound bounds are taken over (closed form)."""
    over, host = 4e-6, 20e-6
    bare = _segment_time(_machine(0.0), (GEMM, NORM), kernels=0)
    gpu = bare + 17 * over
    # GPU-bound: the first kernel waits for its launch, then the GPU time, overhead included.
    assert _segment_time(_machine(4.0, 20.0), (GEMM, NORM), 17, launches=17) == pytest.approx(host + gpu)
    # Host-bound (a tiny op, 17 launches): the last kernel ends its share of the GPU time after its issue.
    tiny = ((0.0, 1e3, 0.0, KIND_IDS["elementwise"]),)
    small = _segment_time(_machine(4.0), tiny, 0) + 16 * over  # the roofline's own overhead, then 16 more
    assert _segment_time(_machine(4.0, 20.0), tiny, 17, launches=17) == pytest.approx(17 * host + small / 17)


def test_overhead_time_idles_the_tensor_cores_and_hbm():
    """Energy: the rows keep the roofline's busy tensor and HBM time; the overhead is idle time."""

    def busy(kernels: int) -> tuple[float, float, float]:
        m = _machine(4.0)
        _segment_time(m, (GEMM, NORM), kernels)
        t = m.recorder.table()
        dt = t["t_end"] - t["t_start"]
        return float(dt.sum()), float((t["u_tensor"] * dt).sum()), float((t["u_hbm"] * dt).sum())

    (d0, tensor0, hbm0), (d1, tensor1, hbm1) = busy(0), busy(17)
    assert d1 == pytest.approx(d0 + 15 * 4e-6, rel=1e-9)
    assert (tensor1, hbm1) == pytest.approx((tensor0, hbm0), rel=1e-6)


def test_every_training_compute_carries_its_kernels(monkeypatch):
    """Every compute a training job issues (layers, recompute, the ring-CP core beside its K/V exchange,
    embedding and LM head) tells the engine its kernels: as many as its launches when not graphed."""
    calls: list[tuple[str, int, int, int]] = []
    original = Machine.compute_fused

    def recording(self, rank_class, work, **kw):
        calls.append((kw["name"], len(work), kw.get("launches", 0), kw.get("kernels", 0)))
        return original(self, rank_class, work, **kw)

    monkeypatch.setattr(Machine, "compute_fused", recording)
    spec = load_training_spec(
        {
            "kind": "training",
            "model": {"preset": "llama3-8b", "layers": 4, "seq_len": 8192},
            "parallelism": {"tp": 1, "pp": 2, "cp": 2, "dp": 1, "cp_comm": "p2p", "recompute": "selective"},
            "batch": {"global_seqs": 2, "micro": 1},
            "steps": 1,
        },
        file="cp.yaml",
    )
    job = simulate(spec, "h100-dgx.yaml")[0]
    names = {c[0] for c in calls}
    assert {"fwd:attn_core", "bwd:attn_core"} <= names  # the ring-CP core, its own (Overlapped) segment
    edges = [
        s
        for which in ("embedding", "output")
        for phase in ("fwd", "bwd")
        for s in job._edge_program(which, phase)
        if getattr(s, "work", ())
    ]
    assert edges and all(s.kernels == s.launches >= len(s.work) for s in edges)
    for name, ops, launches, kernels in calls:
        if name != "optimizer":
            assert kernels == launches >= ops > 0, name


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
