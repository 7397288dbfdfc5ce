"""Engine semantics: streams overlap or serialize like CUDA streams; collectives rendezvous; p2p delivers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import simpy

from simcore.activity import KIND_COLLECTIVE, KIND_COMPUTE, KIND_RECV, KIND_SEND
from simcore.cluster import Cluster, GroupLayout
from simcore.engine import Machine


@dataclass(frozen=True)
class FixedTiming:
    time_s: float
    algorithm: str = "fixed"
    protocol: str = "simple"


class FixedComm:
    """Every collective takes exactly ``seconds``: isolates engine semantics from the cost model."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def time(self, op, nbytes, layout, algo="auto", proto="auto", concurrency=1.0):
        return FixedTiming(self.seconds)


LAYOUT = GroupLayout(size=8, ranks_per_domain=8, domains=1, tier_blocks=(1, 1, 1), top_tier=-1)


@pytest.fixture
def machine(gen2):
    env = simpy.Environment()
    m = Machine(env, gen2, Cluster(gen2, racks=1), FixedComm(1.0))
    m.add_class("a", np.arange(8))
    m.add_class("b", np.arange(8, 16))
    return m


def _flops_for(machine: Machine, seconds: float) -> float:
    """FLOPs that take ``seconds`` on one GPU for a large compute-bound GEMM (inverts the roofline)."""
    t1 = machine.compute_model.time(1e15, 0.0, "bf16", 0.0, "gemm", 1.0).time_s
    over = machine.profile.accelerator.kernel_overhead
    return 1e15 * (seconds - over) / (t1 - over)


def test_compute_and_comm_on_separate_streams_overlap(machine):
    env = machine.env
    grp = machine.group("tp", LAYOUT, (0,))
    flops = _flops_for(machine, 1.0)

    def proc():
        c = machine.compute(0, flops, 0.0, dtype="bf16", name="gemm")
        k = machine.collective(0, grp, "allreduce", 1e6, name="ar")
        yield simpy.AllOf(env, [c, k])

    env.process(proc())
    env.run()
    assert env.now == pytest.approx(1.0, rel=1e-9)


def test_ops_on_the_same_stream_serialize(machine):
    env = machine.env
    flops = _flops_for(machine, 1.0)

    def proc():
        a = machine.compute(0, flops, 0.0, dtype="bf16", name="g1")
        b = machine.compute(0, flops, 0.0, dtype="bf16", name="g2")
        yield simpy.AllOf(env, [a, b])

    env.process(proc())
    env.run()
    assert env.now == pytest.approx(2.0, rel=1e-9)
    ev = machine.recorder.table()
    assert list(ev["kind"]) == [KIND_COMPUTE, KIND_COMPUTE]
    assert ev["t_start"][1] == pytest.approx(ev["t_end"][0])


def test_collective_waits_for_the_last_member(machine):
    env = machine.env
    grp = machine.group("dp", LAYOUT, (0, 1))
    done = {}

    def member(cls, delay):
        yield env.timeout(delay)
        yield machine.collective(cls, grp, "allreduce", 1e6, name="ar")
        done[cls] = env.now

    env.process(member(0, 1.0))
    env.process(member(1, 3.0))
    env.run()
    assert done == {0: pytest.approx(4.0), 1: pytest.approx(4.0)}
    ev = machine.recorder.table()
    coll = ev[ev["kind"] == KIND_COLLECTIVE]
    assert len(coll) == 2 and np.all(coll["t_start"] == 3.0)


def test_send_delivers_to_recv(machine):
    env = machine.env
    got = {}

    def sender():
        yield env.timeout(0.5)
        machine.send(0, 1, 1e6, tag="x", layout=LAYOUT, name="act")

    def receiver():
        yield machine.recv("x")
        got["t"] = env.now

    env.process(sender())
    env.process(receiver())
    env.run()
    assert got["t"] == pytest.approx(1.5)
    kinds = set(machine.recorder.table()["kind"])
    assert {KIND_SEND, KIND_RECV} <= kinds


def test_clock_factor_stretches_compute_bound_work_only(machine):
    m = machine.compute_model
    full = m.time(1e14, 1e6, "bf16", 0.0, "gemm", 1.0).time_s
    half = m.time(1e14, 1e6, "bf16", 0.0, "gemm", 0.5).time_s
    over = machine.profile.accelerator.kernel_overhead
    assert (half - over) == pytest.approx(2 * (full - over), rel=1e-9)
    mem_full = m.time(0.0, 1e10, "bf16", 0.0, "elementwise", 1.0).time_s
    mem_half = m.time(0.0, 1e10, "bf16", 0.0, "elementwise", 0.5).time_s
    assert mem_half == pytest.approx(mem_full, rel=1e-12)


def test_memory_peak_tracks_allocations(machine):
    machine.alloc(0, 10.0)
    machine.alloc(0, 5.0)
    machine.free(0, 12.0)
    machine.alloc(0, 1.0)
    assert machine.mem_peak[0] == 15.0


def test_collectives_pair_by_micro_batch_whatever_the_issue_order(machine):
    """Class 0 issues micro-batch 1's collective before micro-batch 0's, class 1 the other way round (a
    forward and another micro-batch's backward running together): each pairs with its own micro-batch."""
    env = machine.env
    grp = machine.group("ep", LAYOUT, (0, 1))
    done = {}

    def member(cls, order):
        events = {
            mb: machine.collective(cls, grp, "alltoall", 1e6, name=f"a2a{mb}", micro=mb) for mb in order
        }
        for mb, ev in events.items():
            yield ev
            done[(cls, mb)] = env.now

    env.process(member(0, (1, 0)))
    env.process(member(1, (0, 1)))
    env.run()
    ev = machine.recorder.table()
    coll = ev[ev["kind"] == KIND_COLLECTIVE]
    # one row per member and micro-batch, each with its own name (a cross-pairing would mix them)
    names = sorted((int(r["rank_class"]), int(r["micro"]), machine.recorder.names[r["name"]]) for r in coll)
    assert names == [(0, 0, "a2a0"), (0, 1, "a2a1"), (1, 0, "a2a0"), (1, 1, "a2a1")]


def test_members_issuing_different_collectives_is_an_error(machine):
    grp = machine.group("dp", LAYOUT, (0, 1))
    machine.collective(0, grp, "allreduce", 1e6, name="grads")
    with pytest.raises(RuntimeError, match="collective mismatch"):
        machine.collective(1, grp, "allgather", 1e6, name="params")


@pytest.mark.parametrize(
    "comm_s,uses_sms,expected",
    [
        (2.0, True, 1.19),  # the whole GEMM runs beside the collective: 1 + k times longer
        (0.5, True, 1.0 + 0.19 * 0.5 / 1.19),  # the window closes after 0.5 s: k x the work done inside
        (2.0, False, 1.0),  # copy-engine transfers (TE userbuffers) leave the SMs to the GEMM
    ],
)
def test_compute_beside_communication_slows_by_the_calibrated_fraction(gen2, comm_s, uses_sms, expected):
    assert gen2.calibration.comm_overlap_slowdown == 0.19
    env = simpy.Environment()
    machine = Machine(env, gen2, Cluster(gen2, racks=1), FixedComm(comm_s))
    machine.add_class("a", np.arange(8))
    grp = machine.group("dp", LAYOUT, (0,), uses_sms=uses_sms)
    flops = _flops_for(machine, 1.0)
    ends = {}

    def proc():
        machine.collective(0, grp, "reducescatter", 1e9, name="rs")  # issued first, on the dp stream
        yield machine.compute(0, flops, 0.0, dtype="bf16", name="gemm")
        ends["gemm"] = env.now

    env.process(proc())
    env.run()
    assert ends["gemm"] == pytest.approx(expected, rel=1e-9)


def test_compute_after_the_window_or_without_slowdown_is_untouched(gen2):
    from simcore.profile import load_profile

    for profile, wait in (
        (gen2, 1.5),
        (load_profile("gen2.yaml", ["calibration.comm_overlap_slowdown=0"]), 0.0),
    ):
        env = simpy.Environment()
        machine = Machine(env, profile, Cluster(profile, racks=1), FixedComm(1.0))
        machine.add_class("a", np.arange(8))
        grp = machine.group("dp", LAYOUT, (0,))
        flops = _flops_for(machine, 1.0)

        def proc(machine=machine, grp=grp, flops=flops, wait=wait, env=env):
            machine.collective(0, grp, "allreduce", 1e9, name="ar")
            yield env.timeout(wait)
            yield machine.compute(0, flops, 0.0, dtype="bf16", name="gemm")

        env.process(proc())
        env.run()
        assert env.now == pytest.approx(wait + 1.0, rel=1e-9)


def _slowdown_machine(gen2, comm_s: float) -> tuple[Machine, object]:
    env = simpy.Environment()
    machine = Machine(env, gen2, Cluster(gen2, racks=1), FixedComm(comm_s))
    machine.add_class("a", np.arange(8))
    machine.add_class("b", np.arange(8, 16))
    return machine, machine.group("dp", LAYOUT, (0,))


def test_compute_that_starts_before_the_window_runs_at_full_speed_until_it_opens(gen2):
    machine, dp = _slowdown_machine(gen2, 1.5)
    machine.compute(0, _flops_for(machine, 0.5), 0.0, dtype="bf16", name="x", stream="dp")  # dp busy [0, 0.5]
    machine.collective(0, dp, "reducescatter", 1e9, name="rs", stream="dp")  # NCCL [0.5, 2.0]
    machine.compute(0, _flops_for(machine, 1.0), 0.0, dtype="bf16", name="gemm")  # [0, ...]
    machine.env.run()
    assert machine.recorder.table()[-1]["t_end"] == pytest.approx(1.0 + 0.19 * 0.5, rel=1e-9)


def test_compute_in_the_gap_between_two_communication_windows_is_not_slowed(gen2):
    machine, dp = _slowdown_machine(gen2, 1.0)
    env, took = machine.env, {}

    def proc():
        machine.compute(0, _flops_for(machine, 3.0), 0.0, dtype="bf16", name="x", stream="dp")  # dp [0, 3]
        machine.collective(0, dp, "reducescatter", 1e9, name="rs", stream="dp")  # NCCL [3, 4]
        machine.send(0, 1, 1e6, tag="t", layout=LAYOUT, name="p2p")  # NCCL [0, 1]
        yield env.timeout(1.0)
        yield machine.compute(0, _flops_for(machine, 1.0), 0.0, dtype="bf16", name="gap")  # [1, 2]
        took["gap"] = env.now - 1.0
        yield machine.compute(0, _flops_for(machine, 2.0), 0.0, dtype="bf16", name="across")  # 2 .. 3 .. 4 ..
        took["across"] = env.now - 2.0

    env.process(proc())
    env.run()
    assert took["gap"] == pytest.approx(1.0, rel=1e-9)
    # 1 s at full speed to t = 3, then the remaining 1 s of work inside [3, 4] at 1/1.19: 0.84 s of it fits,
    # the last 0.16 s runs at full speed after t = 4
    assert took["across"] == pytest.approx(1.0 + 1.0 + 0.19 * 1.0 / 1.19, rel=1e-9)


def test_a_send_opens_a_window_on_both_ends(gen2):
    machine, _dp = _slowdown_machine(gen2, 1.0)
    machine.send(0, 1, 1e6, tag="t", layout=LAYOUT, name="p2p")  # FixedComm: [0, 1] on both classes
    for cls in (0, 1):
        machine.compute(cls, _flops_for(machine, 0.5), 0.0, dtype="bf16", name="gemm")
    machine.env.run()
    ends = machine.recorder.table()
    assert np.allclose(ends[ends["kind"] == KIND_COMPUTE]["t_end"], 0.5 * 1.19, rtol=1e-9)


def test_tp_overlap_with_userbuffers_is_exempt_from_the_slowdown():
    from sim_helpers import COMPUTE_ONLY, simulate

    from workloads.spec import load_training_spec

    def compute_busy(overlap: bool, slowdown: str) -> float:
        spec = load_training_spec(
            {
                "model": {**COMPUTE_ONLY, "layers": 2},
                "parallelism": {"tp": 8, "tp_comm_overlap": overlap, "recompute": "none"},
                "batch": {"global_seqs": 2},
                "steps": 1,
            },
            file="tp.yaml",
        )
        _, machine, _ = simulate(spec, sets=(f"calibration.comm_overlap_slowdown={slowdown}",))
        t = machine.recorder.table()
        c = t[t["kind"] == KIND_COMPUTE]
        return float((c["t_end"] - c["t_start"]).sum())

    # With userbuffers the TP chunks run beside the GEMMs and do not slow them; without overlap the TP
    # collectives sit between the GEMMs (nothing to slow), so neither run changes with the slowdown.
    assert compute_busy(True, "0.19") == pytest.approx(compute_busy(True, "0"), rel=1e-12)
    assert compute_busy(False, "0.19") == pytest.approx(compute_busy(False, "0"), rel=1e-12)
