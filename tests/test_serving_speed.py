"""What makes long serving runs fast without changing a number: the recorder's polled rows, the iteration's
work hashed once, the scheduler's prefix of decoding sequences. Each shortcut is checked against the plain
path it replaces, bit for bit."""

from __future__ import annotations

import random

import numpy as np
import pytest
import yaml

import simcore.activity as activity
from simcore.activity import ActivityRecorder
from simcore.kernels.compute import ComputeModel, FusedWork
from simcore.profile import load_profile
from simcore.runner import RunOptions, run
from workloads.inference import ServingJob, iteration_work, load_inference_spec, replica_costs


def _feed(rec: ActivityRecorder, rows: int, poll: bool) -> None:
    """``rows`` ops with lifetime and block-local templates (float32 utilisations that round), polled after
    each op when ``poll``, as the power controller polls a slow serving run's open block every tick."""
    rng = random.Random(7)
    for i in range(rows):
        template = (0, i % 3, 0, rec.name_id(f"op{i % 5}"), rng.random() * 1e15, rng.random() * 1e10,
                    rng.random(), rng.random() / 3, 0.0, 0.1 * (i % 7))  # fmt: skip
        if i % 2:
            rec.record_op(i % 4, 0, i, -1, 1e-3 * i, 1e-3 * i + rng.random(), template)
        else:
            tid = rec.keep_template(template)
            rec.open_buf += activity.pack_open_row(i % 4, 1, i, -1, 1e-3 * i, 1e-3 * i + 0.5, tid)
        if poll:
            rec.open_rows(i)


def test_a_block_polled_row_by_row_emits_as_one_converted_at_once(monkeypatch):
    """Before: the emitted block concatenated every poll's part (3,000 here; a dtype promotion each, seconds
    per block of a long serving run). Now the block converts in one pass, to the same bytes."""
    plain, polled = ActivityRecorder(), ActivityRecorder()
    _feed(plain, 3000, poll=False)
    _feed(polled, 3000, poll=True)
    widest = []
    concatenate = np.concatenate

    def counting(arrays, *args, **kwargs):
        arrays = list(arrays)
        widest.append(len(arrays))
        return concatenate(arrays, *args, **kwargs)

    monkeypatch.setattr(np, "concatenate", counting)
    plain.flush()
    polled.flush()
    assert max(widest, default=0) <= 2
    assert polled.table().tobytes() == plain.table().tobytes()
    assert len(plain.table()) == 3000


@pytest.mark.parametrize("rows", [1, 3, activity._FEW_ROWS])
def test_a_few_rows_convert_as_the_vectorised_pass_does(monkeypatch, rows):
    """A poller's few rows go row by row through numpy's scalar conversion: the same bytes as the vectorised
    pass (float32 rounding included), from lifetime and block-local templates."""
    rec = ActivityRecorder()
    _feed(rec, rows, poll=False)
    packed = bytes(rec.open_buf)
    few = rec._convert(packed)
    monkeypatch.setattr(activity, "_FEW_ROWS", 0)
    vectorised = rec._convert(packed)
    assert few.dtype == vectorised.dtype
    assert few.tobytes() == vectorised.tobytes()


def test_fused_work_is_the_tuple_of_its_ops_hashed_once():
    """An iteration's work: equal to, hashing as, converted as and timed as the plain tuple of its ops; its
    hash is computed once (every memo it passes asks for it, and it is hundreds of ops long); the parts it
    repeats survive joining and filtering."""
    spec = load_inference_spec(
        {"model": "llama3-70b", "precision": "fp8", "parallelism": {"tp": 2}}, file="x"
    )
    work, _ = iteration_work(
        replica_costs(spec), [1000 + i for i in range(300)], [(0, 512)], 301, row_tile=64
    )
    plain = tuple(work)
    assert isinstance(work, FusedWork) and len(work.parts()) == 2  # 80 layers of 3 ops, the LM head
    assert work == plain and hash(work) == hash(plain) and work.__dict__["_hash"] == hash(plain)
    assert np.array_equal(work.array(), np.array(plain, dtype=np.float64))
    attention = work.where(lambda op: op[3] == 1)
    assert attention == tuple(op for op in plain if op[3] == 1) and len(attention) == 160
    assert np.array_equal(attention.array(), np.array(attention, dtype=np.float64))
    joined = FusedWork.join(work, plain[:2])
    assert joined == plain + plain[:2] and np.array_equal(joined.array(), np.array(joined, dtype=np.float64))
    model = ComputeModel(load_profile("h100-dgx.yaml"))
    assert model.time_fused(work, "fp8", 0.9) == ComputeModel(model.profile).time_fused(plain, "fp8", 0.9)


@pytest.mark.parametrize("chunked", [True, False])
def test_running_sequences_are_the_decoding_ones_then_the_prefilling_ones(tmp_path, monkeypatch, chunked):
    """The scheduler splits decodes from prefills by a count (no pass over every sequence): every iteration,
    of mixed prompt and answer lengths arriving over time (one-token answers finish at their prefill), with
    more decodes than the token budget at times, its first ``decoding`` sequences have their prompt
    prefilled and the others do not (a prompt longer than the budget runs alone without chunked prefill, so
    decodes pile up beyond it)."""
    rng = random.Random(3)
    lines, t = ["arrival_s,input_tokens,output_tokens"], 0.0
    for _ in range(200):
        t += rng.expovariate(20000.0)
        lines.append(f"{t:.6f},{rng.choice([1, 9, 300, 3000])},{rng.choice([1, 2, 40, 300])}")
    (tmp_path / "trace.csv").write_text("\n".join(lines) + "\n")
    spec = {"kind": "inference", "model": "llama3-8b", "precision": "fp8",
            "scheduler": {"max_num_seqs": 128, "max_batch_tokens": 64, "chunked_prefill": chunked},
            "requests": {"trace": "trace.csv"}}  # fmt: skip
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(spec))
    seen = {"iterations": 0, "truncated": 0}
    batch = ServingJob._batch

    def checked(self, running, decoding):
        assert all(q.prefilled == q.input_tokens for q in running[:decoding])
        assert all(q.prefilled < q.input_tokens for q in running[decoding:])
        seen["iterations"] += 1
        seen["truncated"] += decoding > self.spec.scheduler.max_batch_tokens
        return batch(self, running, decoding)

    monkeypatch.setattr(ServingJob, "_batch", checked)
    s = run(
        RunOptions(profile="h100-dgx.yaml", workload=str(tmp_path / "serve.yaml"), write_trace=False)
    ).summary
    assert s["requests_completed"] == 200
    assert seen["iterations"] == s["iterations"]
    assert seen["truncated"] > 0 or chunked  # chunked: the decodes never outgrow the budget they share


def test_planning_the_serving_table_reads_each_profile_once(monkeypatch):
    """Before: every row loaded its profile for the HBM size (131 loads, 8 s of YAML and units parsing before
    the first row ran). The sizes are the profiles' own."""
    import workloads.serving_validation as sv
    from workloads.validation import NotRunnable, load_table, plan_row

    loads: list[tuple[str, tuple[str, ...]]] = []
    real = sv.load_profile

    def counting(name, sets=()):
        loads.append((name, tuple(sets or ())))
        return real(name, sets)

    monkeypatch.setattr(sv, "load_profile", counting)
    sv.hbm_capacity.cache_clear()
    table, _ = load_table(serving=True)
    planned = 0
    for row in table["runs"]:
        try:
            plan_row(row, table)
            planned += 1
        except NotRunnable:
            pass
    assert planned > 100
    assert len(loads) == len(set(loads)) <= len(sv.SERVING_SYSTEMS) + len(sv.MLPERF_ENGINES)
    assert sv.hbm_capacity("h100-dgx.yaml") == real("h100-dgx.yaml").accelerator.hbm_capacity == 80e9
