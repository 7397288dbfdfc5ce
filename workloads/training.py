"""LLM training step as simpy processes on the machine API.

One process per simulated rank class runs its pipeline schedule: forward and backward passes of its
layers (fused compute segments between communication), TP/CP/EP collectives per layer, p2p
activations and gradients between pipeline stages, data-parallel gradient reduction in buckets
overlapped with the last micro-batch's backward, ZeRO-3/FSDP parameter gathers, the optimizer step,
and a global gradient-norm all-reduce that closes the step.

Representative mode (default) simulates one class per pipeline stage, since every TP/CP/DP peer of a
stage does the same thing at the same time; ``fidelity="full"`` simulates every rank and lets the
collectives rendezvous for real. Both must give the same step time on a symmetric job.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import simpy

from simcore.cluster import GroupLayout, ParallelDims, validate_order
from simcore.engine import CommGroup, Machine
from simcore.kernels.compute import KIND_IDS
from workloads import model as mdl
from workloads.memory import stage_params, training_memory
from workloads.schedule import interleaved
from workloads.spec import TrainingSpec, _memory_kwargs

# Activations travel in bf16 whatever the GEMM precision (fp8/fp4 recipes keep bf16 activations between ops).
ACT_BYTES = 2

Work = tuple[tuple[float, float, float, int], ...]


@dataclass(frozen=True)
class Segment:
    """One step of a layer's program: fused compute, or a collective on a parallel group."""

    name: str
    work: Work = ()
    group: str = ""
    op: str = ""
    nbytes: float = 0.0

    @property
    def is_compute(self) -> bool:
        return bool(self.work)


@dataclass
class StepTimes:
    """Step boundaries (global gradient-norm sync) as they happen."""

    ends: list[float] = field(default_factory=list)


def _work(ops: list[Any]) -> Work:
    out = []
    for op in ops:
        mnk = getattr(op, "gemm_mnk", None)
        min_dim = float(min(mnk)) if mnk else 0.0
        out.append((float(op.flops), float(op.nbytes), min_dim, KIND_IDS.get(op.kind, 0)))
    return tuple(out)


def program_segments(program: list[Any], phase: str, sizes: dict[str, int]) -> tuple[Segment, ...]:
    """Fuse the compute ops between collectives; drop collectives over groups of size 1."""
    segments: list[Segment] = []
    pending: list[Any] = []
    for item in program:
        if isinstance(item, mdl.Comm):
            if pending:
                segments.append(Segment(name=_fused_name(pending, phase), work=_work(pending)))
                pending = []
            if sizes.get(item.group, 1) > 1 and item.nbytes > 0:
                segments.append(Segment(name=item.name, group=item.group, op=item.op, nbytes=item.nbytes))
        else:
            pending.append(item)
    if pending:
        segments.append(Segment(name=_fused_name(pending, phase), work=_work(pending)))
    return tuple(segments)


def _program_kwargs(spec: TrainingSpec) -> dict[str, Any]:
    par = spec.parallelism
    return dict(
        micro_batch=spec.batch.micro,
        seq_len=spec.model.seq_len,
        tp=par.tp,
        sp=par.sequence_parallel,
        cp=par.cp,
        dtype_bytes=ACT_BYTES,
    )


def layer_segments(spec: TrainingSpec, layer: int, phase: str) -> tuple[Segment, ...]:
    """Program of one transformer layer for one micro-batch: compute runs fused between collectives."""
    par = spec.parallelism
    program = mdl.layer_program(spec.model, layer, ep=par.ep, phase=phase, **_program_kwargs(spec))
    return program_segments(program, phase, {"tp": par.tp, "cp": par.cp, "ep": par.ep})


def _fused_name(ops: list[Any], phase: str) -> str:
    names = [op.name for op in ops]
    label = (
        "attn"
        if any("attn" in n or "qkv" in n for n in names)
        else ("moe" if any("expert" in n or "router" in n for n in names) else "mlp")
    )
    return f"{phase}:{label}"


class TrainingJob:
    """Builds and runs the simpy processes of a training job on a Machine."""

    def __init__(self, spec: TrainingSpec, machine: Machine, fidelity: str = "representative") -> None:
        self.spec = spec
        self.m = machine
        self.env = machine.env
        self.fidelity = fidelity
        par = spec.parallelism
        self.dims = ParallelDims(
            tp=par.tp,
            cp=par.cp,
            ep=par.ep,
            dp=par.dp,
            pp=par.pp,
            order=validate_order(par.order, file=spec.source_file),
        )
        self.layouts: dict[str, GroupLayout] = machine.cluster.parallel_layouts(self.dims)
        self.chunks = par.vp
        self.vstages = par.pp * par.vp
        self.stage_chunks = mdl.pipeline_layers(spec.model, par.pp, par.vp, file=spec.source_file)
        self.dtype = (
            "bf16"
            if spec.precision == "fp16" and "fp16" not in machine.profile.accelerator.peak_flops
            else spec.precision
        )
        machine.profile.peak_flops(self.dtype)  # clear error if the accelerator lacks the precision
        self.step_times = StepTimes()
        self._p2p_bytes = mdl.activation_bytes(spec.model, **_program_kwargs(spec))
        self._programs: dict[tuple[int, str], tuple[Segment, ...]] = {}
        self._classes()

    # ------------------------------------------------------------------ rank classes and groups
    def _classes(self) -> None:
        """Create rank classes and the communicators each one uses."""
        dims, m = self.dims, self.m
        world = dims.world
        ranks = np.arange(world, dtype=np.int64)
        stride_pp = dims.stride("pp")
        stage_of = (ranks // stride_pp) % dims.pp
        self.class_stage: list[int] = []
        self.class_rank: list[int] = []
        if self.fidelity == "full":
            for r in range(world):
                m.add_class(f"rank{r}", np.array([r]))
                self.class_stage.append(int(stage_of[r]))
                self.class_rank.append(r)
        else:
            for s in range(dims.pp):
                m.add_class(f"stage{s}", ranks[stage_of == s])
                self.class_stage.append(s)
                self.class_rank.append(s * stride_pp)
        self.groups: dict[tuple[str, int], CommGroup] = {}
        for dim in ("tp", "cp", "ep", "dp"):
            layout = self.layouts[dim]
            if self.fidelity == "full":
                for row in dims.all_groups(dim):
                    grp = m.group(dim, layout, tuple(int(r) for r in row))
                    for r in row:
                        self.groups[(dim, int(r))] = grp
            else:
                for c in range(len(m.classes)):
                    self.groups[(dim, c)] = m.group(dim, layout, (c,))
        # Global grad-norm all-reduce: one communicator over every class (a barrier that ends the step).
        world_layout = m.cluster.worst_layout(ranks.reshape(1, -1))
        self.world_group = m.group("dp", world_layout, tuple(range(len(m.classes))))

    def _peer(self, cls: int, stage_delta: int) -> int:
        """Class of the same position on the neighbouring pipeline stage (wrapping for interleaving)."""
        pp = self.dims.pp
        if self.fidelity == "full":
            rank = self.class_rank[cls]
            coords = self.dims.coords(rank)
            coords["pp"] = (coords["pp"] + stage_delta) % pp
            return self.dims.rank_of(coords)
        return (self.class_stage[cls] + stage_delta) % pp

    # ------------------------------------------------------------------ programs
    def _layer_program(self, layer: int, phase: str) -> tuple[Segment, ...]:
        key = (layer, phase)
        prog = self._programs.get(key)
        if prog is None:
            prog = self._programs[key] = layer_segments(self.spec, layer, phase)
        return prog

    def vstage_layers(self, vstage: int) -> range:
        """Layers of virtual stage ``vstage`` (= chunk * pp + stage, Megatron's interleaving)."""
        chunk, stage = divmod(vstage, self.dims.pp)
        return self.stage_chunks[stage][chunk]

    # ------------------------------------------------------------------ processes
    def start(self) -> list[simpy.Process]:
        self._setup_memory()
        return [self.env.process(self._rank_process(c)) for c in range(len(self.m.classes))]

    def _setup_memory(self) -> None:
        """Static memory (weights, grads, optimizer) per class; activations come and go with the schedule."""
        self.act_bytes: list[float] = []
        for c in range(len(self.m.classes)):
            stage = self.class_stage[c]
            mem = training_memory(self.spec.model, **_memory_kwargs(self.spec, stage))
            static = mem.total - mem.activations
            self.m.alloc(c, static)
            inflight = max(1, _inflight(stage, self.dims.pp, self.spec.microbatches, self.chunks))
            self.act_bytes.append(mem.activations / inflight)

    def _rank_process(self, cls: int) -> Generator[simpy.Event, Any, None]:
        spec, m = self.spec, self.m
        stage = self.class_stage[cls]
        actions = interleaved(stage, self.dims.pp, spec.microbatches, self.chunks)
        last_mb = spec.microbatches - 1
        for step in range(spec.steps):
            m.class_step[cls] = step
            dp_events: list[simpy.Event] = []
            for phase, mb, chunk in actions:
                vstage = chunk * self.dims.pp + stage
                if phase == "F":
                    yield from self._forward(cls, vstage, mb)
                else:
                    yield from self._backward(cls, vstage, mb, dp_events if mb == last_mb else None)
            if dp_events:
                yield simpy.AllOf(self.env, dp_events)
            yield from self._optimizer(cls)
            yield m.collective(cls, self.world_group, "allreduce", 4.0, name="grad_norm", stream="dp")
            if cls == 0:
                self.step_times.ends.append(self.env.now)

    def _forward(self, cls: int, vstage: int, mb: int) -> Generator[simpy.Event, Any, None]:
        m = self.m
        if vstage > 0:
            yield m.recv(("act", m.class_step[cls], mb, vstage, cls))
        else:
            yield from self._run_program(cls, self._edge_program("embedding", "fwd"), mb)
        m.alloc(cls, self.act_bytes[cls])
        for layer in self.vstage_layers(vstage):
            yield from self._run_program(cls, self._layer_program(layer, "fwd"), mb)
        if vstage == self.vstages - 1:
            yield from self._run_program(cls, self._edge_program("output", "fwd"), mb)
        else:
            self._send(cls, +1, ("act", m.class_step[cls], mb, vstage + 1), f"pp_send_act mb{mb}", mb)

    def _backward(
        self, cls: int, vstage: int, mb: int, dp_events: list[simpy.Event] | None
    ) -> Generator[simpy.Event, Any, None]:
        m, spec = self.m, self.spec
        if vstage == self.vstages - 1:
            yield from self._run_program(cls, self._edge_program("output", "bwd"), mb)
        else:
            yield m.recv(("grad", m.class_step[cls], mb, vstage, cls))
        layers = list(self.vstage_layers(vstage))[::-1]
        bucket: list[int] = []
        for layer in layers:
            yield from self._run_program(cls, self._layer_program(layer, "bwd"), mb)
            if dp_events is not None:
                bucket.append(layer)
                if len(bucket) >= spec.parallelism.dp_bucket_layers:
                    dp_events.append(self._grad_sync(cls, bucket))
                    bucket = []
        if vstage == 0:
            yield from self._run_program(cls, self._edge_program("embedding", "bwd"), mb)
        if dp_events is not None and bucket:
            dp_events.append(self._grad_sync(cls, bucket))
        m.free(cls, self.act_bytes[cls])
        if vstage > 0:
            self._send(cls, -1, ("grad", m.class_step[cls], mb, vstage - 1), f"pp_send_grad mb{mb}", mb)

    def _send(self, cls: int, delta: int, tag_base: tuple, name: str, mb: int) -> None:
        peer = self._peer(cls, delta)
        self.m.send(
            cls,
            peer,
            self._p2p_bytes,
            tag=(*tag_base, peer),
            layout=self.layouts["pp_p2p"],
            name=name,
            micro=mb,
        )

    def _run_program(
        self, cls: int, program: tuple[Segment, ...], mb: int
    ) -> Generator[simpy.Event, Any, None]:
        """Run a layer program. With ``tp_comm_overlap`` TP collectives run beside the GEMMs (chunked,
        userbuffers-style) and the layer only waits for them at its end, so a layer costs about
        max(compute, TP communication) instead of their sum."""
        m = self.m
        overlap = self.spec.parallelism.tp_comm_overlap
        pending: list[simpy.Event] = []
        for seg in program:
            if seg.is_compute:
                yield m.compute_fused(cls, seg.work, dtype=self.dtype, name=seg.name, micro=mb)
            else:
                grp = self.groups[(seg.group, cls if self.fidelity != "full" else self.class_rank[cls])]
                ev = m.collective(cls, grp, seg.op, seg.nbytes, name=seg.name, micro=mb)
                if overlap and seg.group == "tp":
                    pending.append(ev)
                else:
                    yield ev
        if pending:
            yield simpy.AllOf(self.env, pending)

    def _edge_program(self, which: str, phase: str) -> tuple[Segment, ...]:
        """Embedding (first virtual stage) or output layer + loss (last), with their TP collectives."""
        key = (-1 if which == "embedding" else -2, phase)
        prog = self._programs.get(key)
        if prog is None:
            build = mdl.embedding_program if which == "embedding" else mdl.output_program
            par = self.spec.parallelism
            program = build(self.spec.model, phase=phase, **_program_kwargs(self.spec))
            prog = program_segments(program, phase, {"tp": par.tp, "cp": par.cp, "ep": par.ep})
            self._programs[key] = prog
        return prog

    def _stage_params(self, cls: int) -> float:
        """Parameters this GPU holds for its stage (TP/EP-sharded, embedding/head included)."""
        par = self.spec.parallelism
        sp = stage_params(
            self.spec.model, tp=par.tp, pp=par.pp, vp=par.vp, ep=par.ep, stage_index=self.class_stage[cls]
        )
        return sp.dense + sp.experts

    def _grad_sync(self, cls: int, layers: list[int]) -> simpy.Event:
        """Reduce-scatter (ZeRO >= 1) or all-reduce (ZeRO 0) of one gradient bucket on the dp stream.

        A bucket's share of the stage's gradients is its share of the stage's layers; gradients are
        reduced in bf16 (Megatron's default without grad_reduce_in_fp32).
        """
        par = self.spec.parallelism
        if par.dp <= 1:
            return self.env.timeout(0)
        stage_layers = sum(len(c) for c in self.stage_chunks[self.class_stage[cls]])
        nbytes = 2.0 * self._stage_params(cls) * len(layers) / stage_layers
        zero = 3 if par.fsdp else par.zero
        op = "reducescatter" if zero >= 1 else "allreduce"
        grp = self.groups[("dp", cls if self.fidelity != "full" else self.class_rank[cls])]
        return self.m.collective(cls, grp, op, nbytes, name=f"dp_{op}")

    def _optimizer(self, cls: int) -> Generator[simpy.Event, Any, None]:
        """Adam on this rank's shard, then (ZeRO 1/2) all-gather of the updated bf16 parameters."""
        par, m = self.spec.parallelism, self.m
        params = self._stage_params(cls)
        zero = 3 if par.fsdp else par.zero
        shard = params / par.dp if zero >= 1 else params
        yield m.compute(
            cls,
            mdl.optimizer_flops(shard),
            mdl.optimizer_bytes(shard),
            dtype="bf16",
            name="optimizer",
            kind="optimizer",
        )
        if zero in (1, 2) and par.dp > 1:
            grp = self.groups[("dp", cls if self.fidelity != "full" else self.class_rank[cls])]
            yield m.collective(cls, grp, "allgather", 2.0 * params, name="dp_param_allgather")


def _inflight(stage: int, stages: int, microbatches: int, chunks: int) -> int:
    """Micro-batches whose activations a stage holds at the 1F1B peak (per chunk-equivalent)."""
    if chunks == 1:
        return min(stages - stage, microbatches)
    return min((stages - stage - 1) * 2 + (chunks - 1) * stages + 1, microbatches * chunks)
