"""Physics audit: answers that must hold whatever the calibration (step boundaries, overlap knobs, ...)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sim_helpers import simulate

from workloads.spec import load_training_spec


def _spec(model: Any, parallelism: dict[str, Any], gbs: int, steps: int = 1, **extra: Any):
    data = {
        "kind": "training",
        "model": model,
        "parallelism": parallelism,
        "batch": {"global_seqs": gbs, "micro": 1},
        "steps": steps,
        **extra,
    }
    return load_training_spec(data, file="audit.yaml")


def _optimizer_ends(machine: Any) -> np.ndarray:
    table = machine.recorder.table()
    names = np.array(machine.recorder.names)[table["name"]]
    return table["t_end"][names == "optimizer"]


def test_a_step_ends_when_the_last_stage_has_finished_its_optimizer_step():
    # One layer on stage 0, seven on stage 1: stage 1's optimizer step runs several times longer than
    # stage 0's, after the gradient-norm all-reduce both leave together. The step (and the run) ends with it.
    spec = _spec({"preset": "llama3-8b", "layers": 8}, {"pp": 2, "layers_per_chunk": [1, 7]}, 8, steps=2)
    job, machine, first = simulate(spec)
    ends = _optimizer_ends(machine)
    assert len(ends) == 4  # two classes, two steps
    assert first == max(ends[:2])  # not stage 0's own, earlier end
    assert first > min(ends[:2]) + 1e-3
    assert job.step_times.ends[-1] == machine.env.now == max(ends)


def test_zero3_without_dp_overlap_waits_for_its_gathers_and_reduce_scatters():
    # FSDP / ZeRO-3 took no notice of dp_overlap: off gave the overlapped step to the bit.
    def step(overlap: bool) -> float:
        par = {"dp": 16, "zero": 3, "dp_overlap": overlap}
        return simulate(_spec({"preset": "llama3-8b", "layers": 4}, par, 32))[2]

    on, off = step(True), step(False)
    assert off > on * 1.05


def _optimizer_bytes(optimizer: dict[str, Any], grad_reduce: str) -> float:
    extra = {"optimizer": optimizer} if optimizer else {}
    spec = _spec({"preset": "llama3-8b", "layers": 2}, {"dp": 2, "grad_reduce": grad_reduce}, 2, **extra)
    machine = simulate(spec)[1]
    table = machine.recorder.table()
    names = np.array(machine.recorder.names)[table["name"]]
    [nbytes] = table["nbytes"][names == "optimizer"]
    return float(nbytes)


def test_the_adam_step_reads_the_gradient_buffer_it_has():
    # Per parameter: an fp32 gradient buffer (grad_reduce: fp32) is 2 B more to read than a bf16 one; with
    # fp32_params the fp32 master is the parameter (read and written) and no bf16 copy is written: 2 B less.
    bf16, fp32 = _optimizer_bytes({}, "bf16"), _optimizer_bytes({}, "fp32")
    assert fp32 / bf16 == pytest.approx(30 / 28)
    master_is_param = _optimizer_bytes({"fp32_params": True}, "fp32")
    assert master_is_param / fp32 == pytest.approx(28 / 30)
