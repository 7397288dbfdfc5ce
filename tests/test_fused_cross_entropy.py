"""kernels.fused_cross_entropy: what the fused loss kernel saves in HBM traffic, memory and time."""

from __future__ import annotations

import pytest

from workloads import model as mdl
from workloads.memory import training_memory
from workloads.spec import _memory_kwargs, load_training_spec


def _spec(fused: bool, pp: int = 1) -> object:
    return load_training_spec(
        {
            "kind": "training",
            "model": {"preset": "llama3-8b", "seq_len": 2048},
            "parallelism": {"tp": 2, "pp": pp, "dp": 1, "recompute": "none"},
            "batch": {"global_seqs": 4, "micro": 2},
            "kernels": {"fused_cross_entropy": fused},
            "steps": 1,
        },
        file="xent.yaml",
    )


def _loss(fused: bool, phase: str) -> mdl.Op:
    spec = mdl.load_preset("llama3-8b")
    ops = mdl.output_program(spec, micro_batch=2, seq_len=2048, tp=2, phase=phase, fused_cross_entropy=fused)
    (loss,) = [op for op in ops if isinstance(op, mdl.Op) and op.name == "loss"]
    return loss


def test_fused_loss_moves_6_and_4_bytes_per_logit_instead_of_22_and_6():
    logits = 2 * 2048 * 128256 / 2  # micro x seq x vocab / tp
    assert _loss(False, "fwd").nbytes == pytest.approx(22 * logits, rel=1e-12)
    assert _loss(False, "bwd").nbytes == pytest.approx(6 * logits, rel=1e-12)
    assert _loss(True, "fwd").nbytes == pytest.approx(6 * logits, rel=1e-12)
    assert _loss(True, "bwd").nbytes == pytest.approx(4 * logits, rel=1e-12)
    assert _loss(True, "fwd").flops == _loss(False, "fwd").flops  # same arithmetic, fewer passes


def test_fused_loss_keeps_no_fp32_probabilities_on_the_last_stage():
    logits = 2 * 2048 * 128256 / 2
    plain, fused = _spec(False, pp=2), _spec(True, pp=2)
    for stage in (0, 1):
        a = training_memory(plain.model, **_memory_kwargs(plain, stage))
        b = training_memory(fused.model, **_memory_kwargs(fused, stage))
        if stage == 0:  # no loss on the first stage: nothing changes
            assert b.total == a.total
        else:  # fp32 probabilities (4 B) -> the 16-bit gradient (2 B); no separate 16-bit logits (2 B)
            assert a.activations - b.activations == pytest.approx(2 * logits, rel=1e-12)
            assert a.workspace - b.workspace == pytest.approx(2 * logits, rel=1e-12)


def test_fused_loss_saves_exactly_its_hbm_time(tmp_path):
    """pp 1: the loss is on the critical path, memory-bound, so the step shrinks by the bytes saved over
    the achievable HBM bandwidth, per micro-batch (16 / (4 x 2) = 2 here): (22 + 6 - 6 - 4) B per logit.
    Within 0.1 % (the gradient reduction overlapped with the backward may shift slightly)."""
    import yaml

    from simcore.profile import load_profile
    from simcore.runner import RunOptions, run

    steps = {}
    for fused in (False, True):
        path = tmp_path / f"w{fused}.yaml"
        body = {
            "kind": "training",
            "model": {"preset": "llama3-8b", "seq_len": 2048},
            "parallelism": {"tp": 2, "dp": 4, "recompute": "none"},  # ZeRO-1 over 4 replicas: fits 80 GB
            "batch": {"global_seqs": 16, "micro": 2},
            "kernels": {"fused_cross_entropy": fused},
            "steps": 1,
        }
        path.write_text(yaml.safe_dump(body))
        summary = run(RunOptions(profile="h100-dgx.yaml", workload=str(path), write_trace=False)).summary
        steps[fused] = summary["step_time_s"]
    acc = load_profile("h100-dgx.yaml")
    logits = 2 * 2048 * 128256 / 2
    saved = 2 * (22 + 6 - 6 - 4) * logits / (acc.accelerator.hbm_bandwidth * acc.calibration.hbm_efficiency)
    assert steps[False] - steps[True] == pytest.approx(saved, rel=1e-3)
