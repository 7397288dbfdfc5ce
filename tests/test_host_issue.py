"""Host-bound execution: a GPU never runs a kernel before its host thread has issued it
(calibration.host_kernel_time per kernel), the host runs ahead until a device-to-host synchronisation, and
dropless MoE synchronises once per layer forward (token-drop with a capacity factor does not)."""

from __future__ import annotations

import numpy as np
import pytest
import simpy
from sim_helpers import qwen3_moe_spec, simulate

from simcore.activity import KIND_RECV
from simcore.cluster import Cluster
from simcore.engine import Machine
from simcore.errors import ConfigError
from simcore.kernels.compute import KIND_IDS
from simcore.profile import load_profile
from workloads import model as mdl
from workloads.spec import TrainingSpec, load_training_spec
from workloads.training import FRAMEWORK_KERNELS, HostSync, TrainingJob, layer_items, layer_segments

H = 20e-6  # host time per kernel in these tests


class _NoComm:
    def time(self, *args, **kwargs):  # pragma: no cover - no collective runs here
        raise AssertionError("no collective expected")


def _machine(host_s: float) -> Machine:
    prof = load_profile("gen2.yaml", [f"calibration.host_kernel_time={host_s * 1e6} us"])
    m = Machine(simpy.Environment(), prof, Cluster(prof, racks=1), _NoComm())
    m.add_class("a", np.arange(4))
    return m


def _work_for(m: Machine, seconds: float) -> tuple[tuple[float, float, float, int], ...]:
    """One memory-bound op that takes ``seconds`` on the GPU."""
    over = m.profile.accelerator.kernel_overhead
    t1 = m.compute_model.time(0.0, 1e9, "bf16", 0.0, "elementwise", 1.0).time_s
    nbytes = 1e9 * (seconds - over) / (t1 - over)
    return ((0.0, nbytes, 0.0, KIND_IDS["elementwise"]),)


def _run(m: Machine, program: list[tuple[float, int, bool]]) -> list[float]:
    """Run (GPU seconds, launches, sync after) segments back to back; return their end times."""
    ends: list[float] = []
    works = [(_work_for(m, g), n, sync) for g, n, sync in program]

    def proc():
        for work, n, sync in works:
            yield m.compute_fused(0, work, dtype="bf16", name="seg", launches=n)
            ends.append(m.env.now)
            if sync:
                m.host_sync(0)

    m.env.process(proc())
    m.env.run()
    return ends


def test_host_bound_segments_take_the_launch_time_and_gpu_bound_ones_the_gpu_time():
    m = _machine(H)
    # 50 segments of 10 kernels, 1 us of GPU work each: the host needs 200 us per segment.
    ends = _run(m, [(10e-6, 10, False)] * 50)
    assert ends[-1] == pytest.approx(50 * 10 * H + 10e-6 / 10, rel=1e-9)
    # The same segments with 1 ms of GPU work each: the host runs ahead, the GPU sets the pace once the
    # first kernel is issued.
    m = _machine(H)
    ends = _run(m, [(1e-3, 10, False)] * 50)
    assert ends[-1] == pytest.approx(H + 50 * 1e-3, rel=1e-9)
    # More launches never finish a segment sooner (the first kernel waits for its own launch too).
    after_sync = [_run(_machine(H), [(1e-3, 1, True), (1e-3, n, False)])[-1] for n in (1, 2, 10, 100)]
    assert after_sync == sorted(after_sync)
    # No host cost: the GPU time, however many launches.
    m = _machine(0.0)
    assert _run(m, [(10e-6, 10, False)] * 50)[-1] == pytest.approx(50 * 10e-6, rel=1e-9)


def test_a_host_sync_stops_the_host_running_ahead():
    # A long kernel (it starts once issued), then ten tiny ones: the host issued them during the long one...
    free = _run(_machine(H), [(1e-3, 1, False), (10e-6, 10, False)])
    assert free == pytest.approx([H + 1e-3, H + 1e-3 + 10e-6], rel=1e-9)
    # ...unless it waited for the long one first: then the GPU waits for every launch.
    synced = _run(_machine(H), [(1e-3, 1, True), (10e-6, 10, False)])
    assert synced[-1] == pytest.approx(H + 1e-3 + 10 * H + 1e-6, rel=1e-9)


def _moe_spec(
    micro: int = 1, capacity: float | None = None, layers: int = 4, graphs: bool = False
) -> TrainingSpec:
    return qwen3_moe_spec(micro, capacity=capacity, layers=layers, graphs=graphs)


def test_dropless_moe_syncs_once_per_layer_forward_and_token_drop_never():
    dropless, drop = _moe_spec(), _moe_spec(capacity=1.0)
    fwd = layer_items(dropless, 0, "fwd")
    syncs = [i for i, item in enumerate(fwd) if isinstance(item, HostSync)]
    assert len(syncs) == 1 and fwd[syncs[0] - 1].name == "router"
    assert not any(isinstance(item, HostSync) for item in layer_items(dropless, 0, "bwd"))
    # Full recompute replays the forward, synchronisation included.
    assert sum(isinstance(item, HostSync) for item in layer_items(dropless, 0, "bwd_full")) == 1
    assert not any(isinstance(item, HostSync) for item in layer_items(drop, 0, "fwd"))
    segs = layer_segments(dropless, 0, "fwd")
    assert [s.host_sync for s in segs].count(True) == 1


def test_launches_count_grouped_experts_and_framework_kernels():
    spec = _moe_spec()
    local = 128 // 8
    ops = {"fwd": [], "bwd": []}
    for phase in ops:
        ops[phase] = [i for i in layer_items(spec, 0, phase) if isinstance(i, mdl.Op)]
    up_fwd = next(op for op in ops["fwd"] if op.name == "expert_mlp_up")
    up_bwd = next(op for op in ops["bwd"] if op.name == "expert_mlp_up")
    assert (up_fwd.count, up_bwd.count) == (local, 2 * local)  # one GEMM per local expert; dgrad + wgrad
    # By hand (fp8, 16 local experts): forward 8 attention-side kernels (2 norms, 2 casts, qkv, rope, flash,
    # out) + Qwen3's q and k norms 2, router 1 + 10, permute 1 + 3, regroup by local expert 1, 2 expert casts,
    # 2 x 16 expert GEMMs, activation, regroup back 1, unpermute 1 + 3.
    fwd = 8 + 2 + 11 + 4 + 1 + 2 + 32 + 1 + 1 + 4
    # Backward: GEMMs twice (experts 2 x 32, router 2, qkv 2, out 2), flash 3, the rest once, framework extras.
    bwd = 4 + 1 + 1 + 32 + 1 + 1 + 32 + 1 + 4 + (2 + 10) + 1 + 1 + 2 + 3 + 2 + 1 + 1 + 2 + 1
    assert (_total_launches(spec, "fwd"), _total_launches(spec, "bwd")) == (fwd, bwd) == (66, 103)


def _step(spec: object, host_us: float, profile: str = "b200-dgx.yaml") -> float:
    return simulate(spec, profile, sets=(f"calibration.host_kernel_time={host_us} us",))[2]


def test_host_cost_slows_small_micro_batches_of_fine_grained_moe_and_dropless_more():
    # Without host cost token-drop at capacity 1 and balanced dropless run the same kernels.
    assert _step(_moe_spec(capacity=1.0), 0) == pytest.approx(_step(_moe_spec(), 0), rel=1e-12)
    base = _step(_moe_spec(), 0)
    slow = [_step(_moe_spec(), h) for h in (10, 25, 50)]
    assert base <= slow[0] <= slow[1] <= slow[2] and slow[2] > 1.2 * base  # monotone, and it binds
    # The per-layer synchronisation costs dropless routing time the token-drop run does not pay.
    assert _step(_moe_spec(), 25) > _step(_moe_spec(capacity=1.0), 25)
    # Larger micro-batches amortise the launches: tokens per second gain more than without host cost.
    per_token = lambda micro, h: _step(_moe_spec(micro=micro), h) / micro  # noqa: E731
    assert per_token(4, 50) / per_token(1, 50) < per_token(4, 0) / per_token(1, 0)


def _training(model: dict, parallelism: dict, global_seqs: int, **top: object) -> TrainingSpec:
    """A one-step training spec (micro-batch 1 unless ``batch`` is given in ``top``)."""
    data = {
        "kind": "training",
        "model": model,
        "parallelism": {"pp": 1, "recompute": "none", **parallelism},
        "batch": {"global_seqs": global_seqs, "micro": 1},
        "steps": 1,
        **top,
    }
    return load_training_spec(data, file="test.yaml")


def test_large_dense_layers_are_never_host_bound():
    spec = _training({"preset": "llama3-70b", "layers": 4}, {"tp": 8, "dp": 1}, 4)
    assert _step(spec, 65, "h100-dgx.yaml") == pytest.approx(_step(spec, 0, "h100-dgx.yaml"), rel=2e-3)


def test_capacity_factor_pads_expert_work_and_is_validated():
    def expert_flops(spec):
        return sum(
            i.flops for i in layer_items(spec, 0, "fwd") if isinstance(i, mdl.Op) and "expert" in i.name
        )

    assert expert_flops(_moe_spec(capacity=1.25)) == pytest.approx(
        1.25 * expert_flops(_moe_spec()), rel=1e-12
    )
    with pytest.raises(ConfigError, match="capacity_factor"):
        _moe_spec(capacity=0.5)


def test_cuda_graphs_replace_the_captured_launches_with_one_and_leave_dropless_experts_eager():
    for phase in ("fwd", "bwd"):
        eager = [s for s in layer_segments(_moe_spec(), 0, phase) if getattr(s, "work", ())]
        drop = [
            s
            for s in layer_segments(_moe_spec(capacity=1.0, graphs=True), 0, phase)
            if getattr(s, "work", ())
        ]
        part = [s for s in layer_segments(_moe_spec(graphs=True), 0, phase) if getattr(s, "work", ())]
        assert [s.launches for s in drop] == [1] * len(drop)  # token drop: every segment is one graph
        for e, p in zip(eager, part, strict=True):
            assert p.launches <= e.launches
            # the routed experts and the permutation stay eager (the router's bf16 GEMM under an fp8 recipe
            # is a segment of its own, captured whole)
            if p.name.endswith(":moe") and len(p.work) > 1:
                assert p.launches >= e.launches - 1 - sum(FRAMEWORK_KERNELS.values()) and p.launches > 1
        assert sum(p.launches for p in part) < sum(e.launches for e in eager)
    # Host-bound at micro-batch 1: graphs win back most of the host time; token drop + graphs all of it.
    eager_s, part_s = _step(_moe_spec(), 35), _step(_moe_spec(graphs=True), 35)
    full_s, gpu_s = _step(_moe_spec(capacity=1.0, graphs=True), 35), _step(_moe_spec(), 0)
    assert gpu_s <= full_s < part_s < eager_s
    assert full_s == pytest.approx(gpu_s, rel=0.02)


def test_summary_reports_the_time_gpus_wait_for_their_host(tmp_path):
    from simcore.runner import RunOptions, run

    path = tmp_path / "moe.yaml"
    path.write_text(
        "kind: training\nmodel: {preset: qwen3-30b-a3b, layers: 4}\nprecision: fp8\nsteps: 1\n"
        "parallelism: {tp: 1, pp: 1, dp: 8, ep: 8}\nbatch: {global_seqs: 32, micro: 1}\n"
    )

    def summary(host_us: float) -> dict:
        opts = RunOptions(
            profile="b200-dgx.yaml",
            workload=str(path),
            sets=[f"calibration.host_kernel_time={host_us} us", "calibration.step_host_time=0 s"],
            write_trace=False,
            out=str(tmp_path / f"run{host_us}"),
        )
        return run(opts).summary

    off, on = summary(0), summary(50)
    assert off["host_wait_fraction"] == 0.0
    # The step grew by about the time the GPUs waited for launches.
    grown = 1.0 - off["step_time_s"] / on["step_time_s"]
    assert 0.2 < on["host_wait_fraction"] < 1.0
    assert on["host_wait_fraction"] == pytest.approx(grown, abs=0.05)


def _dense_spec(precision: str = "bf16", recompute: str = "none", **par: object) -> TrainingSpec:
    return load_training_spec(
        {
            "kind": "training",
            "model": {"preset": "llama3-8b", "layers": 2},
            "parallelism": {"tp": 1, "pp": 1, "dp": 1, "recompute": recompute, **par},
            "batch": {"global_seqs": 2, "micro": 1},
            "precision": precision,
            "steps": 2,
        },
        file="dense.yaml",
    )


def _total_launches(spec: TrainingSpec, phase: str) -> int:
    return sum(s.launches for s in layer_segments(spec, 0, phase) if getattr(s, "work", ()))


@pytest.mark.parametrize(
    "precision,recompute,fwd,bwd",
    [
        # norm, qkv, rope, flash, out, norm, up, act, down
        ("bf16", "none", 9, 2 + 1 + 2 + 1 + 2 + 3 + 1 + 2 + 1),
        ("bf16", "selective", 9, 15 + 1),  # the attention core's forward again
        ("bf16", "full", 9, 9 + 15),  # the whole forward again
        ("fp8", "none", 9 + 4, 15 + 4),  # a cast before each of the four GEMMs, both ways
    ],
)
def test_launch_totals_of_a_dense_layer_by_hand(precision, recompute, fwd, bwd):
    spec = _dense_spec(precision, recompute)
    assert (_total_launches(spec, "fwd"), _total_launches(spec, "bwd")) == (fwd, bwd)


def test_unfused_attention_is_one_batched_gemm_per_pass_whatever_the_micro_batch():
    def core(micro: int) -> tuple[int, int]:
        spec = load_training_spec(
            {
                "kind": "training",
                "model": {"preset": "llama3-8b", "layers": 2},
                "parallelism": {"tp": 1, "pp": 1, "dp": 1, "recompute": "none"},
                "batch": {"global_seqs": micro, "micro": micro},
                "kernels": {"flash_attention": False},
                "steps": 1,
            },
            file="unfused.yaml",
        )
        return _total_launches(spec, "fwd"), _total_launches(spec, "bwd")

    assert core(1) == core(8)


def test_bf16_lm_head_of_an_fp8_job_keeps_its_launches():
    job = simulate(_dense_spec("fp8"), "h100-dgx.yaml")[0]
    prog = job._edge_program("output", "fwd")
    assert all(s.dtype == "bf16" and s.launches > 0 for s in prog if getattr(s, "work", ()))


def test_every_step_starts_with_the_host_in_step_and_each_collective_is_issued_once():
    spec = load_training_spec(
        {
            "kind": "training",
            "model": {"preset": "llama3-8b", "layers": 2},
            "parallelism": {"tp": 2, "pp": 2, "dp": 2, "recompute": "none", "tp_comm_overlap": False},
            "batch": {"global_seqs": 8, "micro": 1},
            "steps": 2,
        },
        file="multi.yaml",
    )
    # pp 1 (no pipeline receive re-synchronises the host): the second step starts with its host in step too,
    # so it repeats the first exactly, first launch included.
    job = simulate(_dense_spec(), "h100-dgx.yaml", sets=("calibration.host_kernel_time=35 us",))[0]
    first, second = (job.step_times.ends[0], job.step_times.ends[1] - job.step_times.ends[0])
    assert second == pytest.approx(first, rel=1e-9)
    issued: list[int] = []
    original = Machine.host_issue

    def counting(self, rank_class, launches):
        issued.append(rank_class)
        return original(self, rank_class, launches)

    Machine.host_issue = counting
    try:
        job, machine, _ = simulate(spec, "h100-dgx.yaml", sets=("calibration.host_kernel_time=35 us",))
    finally:
        Machine.host_issue = original
    table = machine.recorder.table()
    for cls in range(len(machine.classes)):
        comm_rows = int(((table["rank_class"] == cls) & (table["kind"] != 0)).sum())
        recvs = int(((table["rank_class"] == cls) & (table["kind"] == KIND_RECV)).sum())
        assert issued.count(cls) == comm_rows - recvs  # every collective and send, once; receives are free


def test_pipeline_receives_sync_the_host_in_plain_1f1b_only():
    def job(vp: int) -> TrainingJob:
        spec = load_training_spec(
            {
                "kind": "training",
                "model": {"preset": "llama3-8b", "layers": 4},
                "parallelism": {"tp": 1, "pp": 2, "dp": 1, "vp": vp, "recompute": "none"},
                "batch": {"global_seqs": 4, "micro": 1},
                "steps": 1,
            },
            file="pp.yaml",
        )
        return simulate(spec, "h100-dgx.yaml")[0]

    assert job(1).p2p_sync and not job(2).p2p_sync


def test_token_drop_rows_map_to_capacity_one_and_capacity_pads_activations():
    from workloads.spec import stage_memory
    from workloads.validation import load_table, map_row, select_rows

    table, _ = load_table()
    row = select_rows(table, ["Qwen3_30B_a3B_(tokendrop)-DGX-B200"])[0]
    plan = map_row(row, table)
    assert plan.spec["model"]["moe"]["capacity_factor"] == 1.0
    assert any("token-drop" in a for a in plan.assumptions)
    dropless = map_row(select_rows(table, ["mbridge-25.11-Pre-Training-Qwen3_30B_a3B-DGX-B200"])[0], table)
    assert dropless.spec["model"]["moe"].get("capacity_factor") is None

    def act(capacity):
        return stage_memory(_moe_spec(capacity=capacity))[0].activations

    assert act(1.5) > act(1.0) == pytest.approx(act(None), rel=1e-12)


def test_preset_overrides_merge_nested_sections_key_by_key():
    spec = _moe_spec(capacity=1.25)
    moe = spec.model.moe
    assert (moe.experts, moe.top_k, moe.expert_ffn_hidden, moe.capacity_factor) == (128, 8, 768, 1.25)
    # A section meant to replace the preset's keeps every key it does not reset (documented).
    ds = load_training_spec(
        {
            "kind": "training",
            "model": {"preset": "deepseek-v3", "moe": {"experts": 64, "top_k": 6, "expert_ffn_hidden": 1408}},
            "parallelism": {"tp": 1, "pp": 1, "dp": 8, "ep": 8},
            "batch": {"global_seqs": 8, "micro": 1},
        },
        file="ds.yaml",
    )
    assert (ds.model.moe.experts, ds.model.moe.shared_experts, ds.model.moe.dense_layers) == (64, 1, 3)


def test_plain_1f1b_syncs_the_host_at_every_activation_and_gradient_receive():
    spec = _training({"preset": "llama3-8b", "layers": 4}, {"tp": 1, "pp": 2, "dp": 1}, 6)
    calls: list[int] = []
    original = Machine.host_sync

    def counting(self, rank_class):
        calls.append(rank_class)
        return original(self, rank_class)

    Machine.host_sync = counting
    try:
        simulate(spec, "h100-dgx.yaml")
    finally:
        Machine.host_sync = original
    # One at the step start, then one per micro-batch's receive: gradients on stage 0, activations on 1.
    assert (calls.count(0), calls.count(1)) == (1 + 6, 1 + 6)


@pytest.mark.parametrize("par", [{}, {"tp": 2, "pp": 2, "dp": 2, "zero": 1}])
def test_per_step_host_time_delays_every_step_by_exactly_itself(par):
    """calibration.step_host_time: after the step-boundary sync the host works that long before issuing the
    next step's first kernel, so every step of the run (all stages at once) starts that much later and
    nothing else moves; the GPUs count the wait as waiting for their host."""
    spec = _dense_spec(**par)

    def run(step_host: str) -> tuple[TrainingJob, Machine]:
        sets = ("calibration.host_kernel_time=35 us", f"calibration.step_host_time={step_host}")
        job, machine, _ = simulate(spec, "h100-dgx.yaml", sets=sets)
        return job, machine

    (base, m0), (slow, m1) = run("0 s"), run("50 ms")
    assert len(base.step_times.ends) == len(slow.step_times.ends) == 2
    for i, (a, b) in enumerate(zip(base.step_times.ends, slow.step_times.ends, strict=True)):
        assert b - a == pytest.approx(0.050 * (i + 1), rel=1e-9)
    for c in range(len(m0.classes)):
        assert m1.host_wait[c] - m0.host_wait[c] == pytest.approx(2 * 0.050, rel=1e-9)
