"""Helpers shared by the workload tests: a compute-bound model and a bare simulation of one spec."""

from __future__ import annotations

from typing import Any

import simpy

from simcore.cluster import Cluster
from simcore.collectives import CollectiveModel
from simcore.engine import Machine
from simcore.profile import load_profile
from workloads.spec import TrainingSpec, load_training_spec
from workloads.training import TrainingJob

# 16 identical compute-bound layers and a tiny vocabulary: stage times are proportional to their layers,
# and the edge stages' embedding and LM head are negligible.
COMPUTE_ONLY = {
    "name": "compute-only",
    "layers": 16,
    "hidden": 4096,
    "ffn_hidden": 16384,
    "heads": 32,
    "kv_heads": 32,
    "vocab": 512,
    "seq_len": 2048,
    "ffn": "gelu",
}


def simulate(
    spec: Any, profile: str = "h100-dgx.yaml", sets: tuple[str, ...] = (), fidelity: str = "representative"
) -> tuple[TrainingJob, Machine, float]:
    """The workload on a bare machine (no power model): the job, the machine and the first step's end.

    The per-step host time (calibration.step_host_time) is off unless ``sets`` names it: these tests check
    the GPU timeline's mechanisms against closed forms, which that constant would only shift."""
    if not any(s.startswith("calibration.step_host_time=") for s in sets):
        sets = ("calibration.step_host_time=0 s", *sets)
    prof = load_profile(profile, list(sets))
    cluster = Cluster(prof, racks=max(1, -(-spec.gpus // prof.gpus_per_rack)))
    env = simpy.Environment()
    machine = Machine(env, prof, cluster, CollectiveModel(prof, cluster))
    job = TrainingJob(spec, machine, fidelity=fidelity)
    job.start()
    machine.run()
    return job, machine, job.step_times.ends[0]


def qwen3_moe_spec(
    micro: int = 1,
    *,
    capacity: float | None = None,
    layers: int = 4,
    graphs: bool = False,
    micro_batches: int = 4,
) -> TrainingSpec:
    """Qwen3-30B-A3B (128 experts of width 768, top-8) on one 8-GPU server, EP 8, FP8: the fine-grained
    MoE whose small kernels make host launches and per-kernel GPU overhead matter."""
    moe = {"capacity_factor": capacity} if capacity is not None else {}
    return load_training_spec(
        {
            "kind": "training",
            "model": {"preset": "qwen3-30b-a3b", "layers": layers, "moe": moe},
            "parallelism": {"tp": 1, "pp": 1, "dp": 8, "ep": 8, "recompute": "none"},
            "batch": {"global_seqs": 8 * micro * micro_batches, "micro": micro},
            "precision": "fp8",
            "steps": 1,
            "kernels": {"cuda_graphs": graphs},
        },
        file="moe.yaml",
    )
