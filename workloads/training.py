"""LLM training step as simpy processes on the machine API.

One process per simulated rank class runs its pipeline schedule: forward and backward passes of its
layers (fused compute segments between communication), activation recompute (full: the layer's forward
again, TP collectives included; selective: the attention core), TP/CP/EP collectives per layer, p2p
activations and gradients between pipeline stages, data-parallel gradient reduction in buckets overlapped
with the last micro-batch's backward (dense parameters over dp·cp, routed experts over their own
expert-data-parallel group), ZeRO-3/FSDP parameter gathers per layer prefetched one layer ahead, the
optimizer step on the local shard, and a global gradient-norm all-reduce that closes the step. Each
class's host thread issues the kernels (``calibration.host_kernel_time`` each) and runs ahead of its GPU
until it synchronises: at step start, at plain-1F1B pipeline receives and after dropless MoE routers.

Representative mode (default) simulates one class per pipeline stage, since every TP/CP/DP peer of a
stage does the same thing at the same time; ``fidelity="full"`` simulates every rank and lets the
collectives rendezvous for real. Both give the same step time on a symmetric job.

One step is simulated as a rotation of Megatron's loop that keeps its steady state: the ZeRO-1/2
parameter all-gather of the previous optimizer step runs at the start of the step, overlapped with the
first forward of each bucket (``--overlap-param-gather``), then the pipeline schedule, the gradient
reduction, the gradient-norm all-reduce and the optimizer.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import simpy

from simcore.cluster import GroupLayout, ParallelDims, make_layout, validate_order
from simcore.engine import CommGroup, Machine
from simcore.kernels.compute import KIND_IDS
from workloads import model as mdl
from workloads.memory import (
    recomputed_layers,
    stage_params,
)
from workloads.schedule import combined, interleaved
from workloads.spec import TrainingSpec, stage_memory

# Activations travel in bf16 whatever the GEMM precision (fp8/fp4 recipes keep bf16 activations between ops).
ACT_BYTES = 2
# Parameters are gathered (ZeRO) in bf16 (Megatron's distributed optimizer, FSDP mixed precision); gradients
# are reduced in ``parallelism.grad_reduce`` (Megatron reduces bf16 training's gradients in fp32).
PARAM_COMM_BYTES = 2
_CORE = "attn_core"  # prefix of the attention-core ops (flash: one op; unfused: QK, softmax, dropout, PV)


def _is_core(name: str) -> bool:
    return name.startswith(_CORE)


def _own_precision(name: str) -> bool:
    """Kernels an FP8/FP4 recipe leaves in 16 bit (or fp32) whatever the GEMMs use: the attention core
    (flash attention in bf16), the SSD scan of a Mamba block (mamba_ssm's Triton kernels) and the MoE
    router's gating GEMM (Megatron-Core runs it as a plain matmul in the router's dtype, outside Transformer
    Engine's FP8/FP4 autocast: bf16, or fp32 with moe_router_dtype)."""
    return name.startswith((_CORE, _SSD_SCAN, _ROUTER))  # _SSD_SCAN: with the kernel counts below


Work = tuple[tuple[float, float, float, int], ...]


@dataclass(frozen=True)
class Segment:
    """One step of a layer's program: fused compute, or a collective on a parallel group."""

    name: str
    work: Work = ()
    group: str = ""
    op: str = ""
    nbytes: float = 0.0
    dtype: str = ""  # compute precision of this segment; "" = the job's precision
    launches: int = 0  # kernels the host issues for this segment (calibration.host_kernel_time each)
    kernels: int = 0  # kernels the GPU runs (accelerator.kernel_overhead each); a CUDA graph runs them all
    host_sync: bool = False  # the host waits for this segment to finish before issuing the next

    @property
    def is_compute(self) -> bool:
        return bool(self.work)


@dataclass(frozen=True)
class Overlapped:
    """A compute segment with collectives that run beside it (ring context parallelism: K/V blocks travel
    round the CP ring while the attention core works on the block it has); costs ~max(compute, comm)."""

    compute: Segment
    comms: tuple[Segment, ...]


Step = Segment | Overlapped


@dataclass
class StepTimes:
    """Step boundaries as they happen: a step ends when the last rank class has finished its optimizer
    step (the classes leave the global gradient-norm sync together, but a stage holding more parameters
    runs a longer optimizer step)."""

    ends: list[float] = field(default_factory=list)
    # per step not yet ended: how many classes have finished it
    finished: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class HostSync:
    """A device-to-host synchronisation inside a program: dropless MoE copies the router's tokens-per-expert
    counts to the host (the all-to-all splits and grouped-GEMM sizes are host integers), so the host stops
    running ahead and issues the rest of the layer only once the GPU has finished the router."""


# Kernels a framework launches for what racksim models as one op, when it is more than one (Megatron-Core):
# the router's gating GEMM is followed by softmax / top-k, the load-balancing loss terms and the routing map;
# the (fused) permutation builds an index map, sorts and gathers; QK-norm is one norm for the queries and
# one for the keys. Per pass, forward or backward.
FRAMEWORK_KERNELS = {"router": 10, "moe_permute": 3, "moe_unpermute": 3, "qk_norm": 1}
# Flash attention's backward is a preprocess (dO·O), the main kernel and the dQ conversion.
_FLASH_BWD_KERNELS = 3
# The chunked SSD scan: chunk cumsum, chunk states, state passing, C·Bᵀ blocks and chunk scan forward;
# its backward (_mamba_chunk_scan_combined_bwd) recomputes the first three and runs ~11 gradient kernels.
_SSD_SCAN = "mamba_scan"
_ROUTER = "router"
_SSD_FWD_KERNELS = 5
_SSD_BWD_KERNELS = 14


def _is_dynamic(name: str) -> bool:
    """Ops whose shapes depend on the routing (dropless MoE): a CUDA graph cannot capture them."""
    return name.startswith(("expert_", "moe_"))


def _launches(ops: list[Any], phase: str, graphed: bool = False, dropless: bool = False) -> int:
    """Kernel launches of a fused segment: a GEMM op is ``count`` GEMMs (one per local expert, dgrad and
    wgrad), but Megatron's unfused attention core is one batched GEMM whatever its ``count``; flash
    attention is one kernel forward (``count`` is its heads); framework ops are several.
    ``graphed``: the segment replays as one CUDA graph, except dropless MoE's routed-expert ops."""
    total = 0
    captured = False
    for op in ops:
        base = op.name.removesuffix("_recompute")
        if graphed and not (dropless and _is_dynamic(base)):
            captured = True
            continue
        if op.kind == "gemm" and _is_core(base):  # unfused core: one batched GEMM over sequences and heads
            total += 1 if phase == "fwd" or op.name.endswith("_recompute") else 2
        elif op.kind == "gemm":
            total += op.count
        elif base.startswith(_SSD_SCAN):
            total += (
                _SSD_FWD_KERNELS if phase == "fwd" or op.name.endswith("_recompute") else _SSD_BWD_KERNELS
            )
        elif op.kind == "attention":
            total += 1 if phase == "fwd" or op.name.endswith("_recompute") else _FLASH_BWD_KERNELS
        else:
            total += 1
        total += FRAMEWORK_KERNELS.get(base, 0)
    return total + (1 if captured else 0)


def _work(ops: list[Any]) -> Work:
    out = []
    for op in ops:
        mnk = getattr(op, "gemm_mnk", None)
        if op.kind == "attention":  # the score GEMM (s_q, s_kv, head dim): efficiency follows the head dim
            min_dim = float(mnk[2]) if mnk else 0.0
        else:
            min_dim = float(min(mnk)) if mnk else 0.0
        out.append((float(op.flops), float(op.nbytes), min_dim, KIND_IDS.get(op.kind, 0)))
    return tuple(out)


def _fused_name(ops: list[Any], phase: str) -> str:
    names = [op.name for op in ops]
    if all(_is_core(n) for n in names):
        label = "attn_core"
    elif any("attn" in n or "qkv" in n or "q_" in n or "kv_" in n for n in names):
        label = "attn"
    elif any("expert" in n or "router" in n or "moe" in n for n in names):
        label = "moe"
    elif any(n.startswith("mamba") for n in names):
        label = "mamba"
    else:
        label = "mlp"
    return f"{phase}:{label}"


def program_segments(
    program: list[Any],
    phase: str,
    sizes: dict[str, int],
    *,
    cp_ring: bool = False,
    core_dtype: str = "",
    graphed: bool = False,
    dropless: bool = False,
) -> tuple[Step, ...]:
    """Fuse the compute ops between collectives; drop collectives over groups of size 1.

    With ``cp_ring`` or ``core_dtype`` the attention core is a segment of its own: ring attention runs
    the CP collectives next to it beside it (``Overlapped``); FP8/FP4 recipes run flash attention in
    bf16 (``core_dtype``) while the linear layers use the low precision.
    """
    segments: list[Segment] = []
    pending: list[Any] = []
    split_core = cp_ring or bool(core_dtype)

    def flush() -> None:
        if pending:
            is_core = _own_precision(pending[0].name)
            dtype = core_dtype if is_core and split_core else ""
            segments.append(
                Segment(
                    name=_fused_name(pending, phase),
                    work=_work(pending),
                    dtype=dtype,
                    launches=_launches(pending, phase, graphed, dropless),
                    kernels=_launches(pending, phase),
                )
            )
            pending.clear()

    for item in program:
        if isinstance(item, HostSync):
            flush()
            if segments and segments[-1].is_compute:
                segments[-1] = replace(segments[-1], host_sync=True)
        elif isinstance(item, mdl.Comm):
            flush()
            if sizes.get(item.group, 1) > 1 and item.nbytes > 0:
                segments.append(Segment(name=item.name, group=item.group, op=item.op, nbytes=item.nbytes))
        elif split_core and _own_precision(item.name):
            # The recompute of the core and the core itself fuse; anything else closes the segment.
            if pending and not _own_precision(pending[-1].name):
                flush()
            pending.append(item)
        else:
            if split_core and pending and _own_precision(pending[-1].name):
                flush()
            pending.append(item)
    flush()
    if not cp_ring:
        return tuple(segments)
    steps: list[Step] = []
    i = 0
    while i < len(segments):
        seg = segments[i]
        if seg.is_compute and seg.name.endswith(":attn_core"):
            before: list[Segment] = []
            while steps and isinstance(steps[-1], Segment) and steps[-1].group == "cp":
                before.insert(0, steps.pop())  # type: ignore[arg-type]
            after: list[Segment] = []
            j = i + 1
            while j < len(segments) and segments[j].group == "cp":
                after.append(segments[j])
                j += 1
            comms = tuple(before + after)
            steps.append(Overlapped(seg, comms) if comms else seg)
            i = j
            continue
        steps.append(seg)
        i += 1
    return tuple(steps)


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


def _layer_kwargs(spec: TrainingSpec) -> dict[str, Any]:
    return dict(
        ep=spec.parallelism.ep,
        flash_attention=spec.kernels.flash_attention,
        dropout=spec.kernels.dropout,
        ep_dispatch=spec.parallelism.ep_dispatch,
        **_program_kwargs(spec),
    )


def layer_items(spec: TrainingSpec, layer: int, variant: str, bf16: bool | None = None) -> list[Any]:
    """Ops and collectives of one layer for one micro-batch.

    ``variant``: ``fwd``; ``bwd`` (no recompute); ``bwd_selective`` (what ``recompute_modules`` rebuild:
    the attention core's forward replayed just before its backward, Korthikanti et al. §5, the others as
    the backward starts); ``bwd_full`` (the whole layer forward, TP/CP/EP
    collectives included, replayed before the backward: Megatron's full recompute, one layer at a time).
    ``bf16``: the layer's GEMMs in bf16 under an fp8 / fp4 recipe (default: ``spec.bf16_layer``).
    """
    kw = _layer_kwargs(spec)
    bf16 = spec.bf16_layer(layer) if bf16 is None else bf16
    quant = bool(high_precision(spec.precision)) and not bf16
    moe = spec.model.moe
    sync = moe is not None and moe.dropless and spec.model.is_moe_layer(layer)
    fwd = _with_casts(mdl.layer_program(spec.model, layer, phase="fwd", **kw), "fwd", quant)
    if sync:  # dropless routing: the host reads the tokens-per-expert counts after the router, every forward
        at = next(
            (i for i, item in enumerate(fwd) if isinstance(item, mdl.Op) and item.name == "router"), None
        )
        if at is None:
            raise ValueError(f"MoE layer {layer} of {spec.model.name} has no router op")
        fwd.insert(at + 1, HostSync())
    if variant == "fwd":
        return fwd
    bwd = _with_casts(mdl.layer_program(spec.model, layer, phase="bwd", **kw), "bwd", quant)
    if variant == "bwd":
        return bwd
    if variant == "bwd_full":
        return [_replay(op) if isinstance(op, mdl.Op) else op for op in fwd] + bwd
    if variant == "bwd_selective":
        modules = set(spec.parallelism.recompute_modules)
        # The other modules are rebuilt as the layer's backward starts (Megatron's CheckpointWithoutOutput);
        # the attention core right before its own backward.
        again = [
            _replay(op)
            for op in fwd
            if isinstance(op, mdl.Op) and _is_core(op.name) and "core_attn" in modules
        ]
        out: list[Any] = _early_replays(spec.model, layer, fwd, modules)
        for item in bwd:
            if again and isinstance(item, mdl.Op) and _is_core(item.name):
                out.extend(again)
                again = []
            out.append(item)
        return out
    raise ValueError(f"unknown layer variant {variant!r}")


def _early_replays(model: Any, layer: int, fwd: list[Any], modules: set[str]) -> list[Any]:
    """Forward items selective recompute runs again as a layer's backward starts (all but the attention
    core), with the casts an FP8/FP4 recipe redoes on the rebuilt GEMM inputs. ``layernorm`` rebuilds only
    the norms that are modules of their own (an expert layer's pre-MLP norm, MLA's input norm; Transformer
    Engine fuses the others into the next linear layer); ``mlp`` re-runs a dense MLP block, norm to fc2 and
    its TP collectives, as Megatron's checkpoint of the whole module does; ``moe`` re-runs an MoE block from
    its norm on, the router's host sync and the expert-parallel all-to-alls included."""
    moe_layer = model.is_moe_layer(layer)
    if "moe" in modules and moe_layer:  # the whole block again: its norm and activations come with it
        modules = modules - {"moe_act"}
    mla = model.mla is not None
    names: set[str] = set()
    if "layernorm" in modules:
        names |= {"attn_norm", "q_down_proj_cast", "kv_down_proj_cast"} if mla else set()
        names |= {"mlp_norm", "shared_expert_up_cast"} if moe_layer and "moe" not in modules else set()
    if "moe_act" in modules and moe_layer:
        names |= {"expert_mlp_act", "expert_mlp_down_cast"}
    if "mla_up_proj" in modules and mla:
        names |= {
            "q_up_proj",
            "kv_up_proj",
            "q_up_proj_cast",
            "kv_up_proj_cast",
            "q_proj",
            "q_proj_cast",
            "rope",
        }
    out = [_replay(op) for op in fwd if isinstance(op, mdl.Op) and op.name in names]
    if "mlp" in modules and not moe_layer and model.has_ffn(layer):
        ops = [i for i, item in enumerate(fwd) if isinstance(item, mdl.Op)]
        start = next(i for i in ops if fwd[i].name == "mlp_norm")
        end = next(i for i in ops if fwd[i].name == "mlp_down") + 1
        while end < len(fwd) and isinstance(fwd[end], mdl.Comm):  # fc2's TP reduce-scatter / all-reduce
            end += 1
        out += [_replay(item) if isinstance(item, mdl.Op) else item for item in fwd[start:end]]
    if "moe" in modules and moe_layer:  # the MoE block closes the layer: from its norm to the end
        start = next(i for i, item in enumerate(fwd) if isinstance(item, mdl.Op) and item.name == "mlp_norm")
        out += [_replay(item) if isinstance(item, mdl.Op) else item for item in fwd[start:]]
    return out


def _replay(op: Any) -> Any:
    """A forward op run again in the backward (same work, its own name for the trace)."""
    return mdl.Op(f"{op.name}_recompute", op.kind, op.flops, op.nbytes, op.gemm_mnk, op.count)


def _with_casts(items: list[Any], phase: str, quant: bool) -> list[Any]:
    """FP8/FP4 recipes quantize each linear layer's 16-bit input (forward) and output gradient (backward)
    in a cast + transpose kernel (Transformer Engine): read 2 B, write the low-precision copy and its
    transpose, ~4 B per element. Weights are cast once per step and cached, so they are left out."""
    if not quant:
        return items
    out: list[Any] = []
    for item in items:
        linear = isinstance(item, mdl.Op) and item.kind == "gemm" and item.gemm_mnk is not None
        if linear and "router" not in item.name and not _is_core(item.name):
            # (m, n, k) forward: input m x k; backward (dgrad shape m, k_fwd, n_fwd): gradient m x n_fwd
            m, _, k = item.gemm_mnk
            elements = m * k * (item.count if phase == "fwd" else item.count / 2)
            out.append(mdl.Op(f"{item.name}_cast", "elementwise", elements, 4.0 * elements))
        out.append(item)
    return out


def layer_segments(
    spec: TrainingSpec, layer: int, phase: str, recompute: str | None = None, bf16: bool | None = None
) -> tuple[Step, ...]:
    """Program of one transformer layer for one micro-batch: compute runs fused between collectives.

    ``phase`` is ``fwd`` or ``bwd``; the backward includes the layer's activation recompute (``recompute``,
    default the spec's mode).
    """
    par = spec.parallelism
    mode = par.recompute if recompute is None else recompute
    variant = phase if phase == "fwd" or mode == "none" else f"bwd_{mode}"
    bf16 = spec.bf16_layer(layer) if bf16 is None else bf16 and bool(high_precision(spec.precision))
    items = layer_items(spec, layer, variant, bf16)
    sizes = {"tp": par.tp, "cp": par.cp, "ep": par.ep}
    label = "bwd" if phase == "bwd" else "fwd"
    moe = spec.model.moe
    program = program_segments(
        items,
        label,
        sizes,
        cp_ring=par.cp > 1 and par.cp_comm == "p2p",
        core_dtype=high_precision(spec.precision),
        graphed=spec.kernels.cuda_graphs,
        dropless=moe is not None and moe.dropless,
    )
    if bf16:  # an fp8 / fp4 job's first or last layers (or MTP modules): every GEMM in bf16
        program = _in_bf16(program)
    return program


def _in_bf16(program: tuple[Step, ...]) -> tuple[Step, ...]:
    """The program with every compute segment in bf16 (also those inside an Overlapped step)."""

    def seg(step: Segment) -> Segment:
        return replace(step, dtype="bf16") if step.work else step

    return tuple(seg(s) if isinstance(s, Segment) else replace(s, compute=seg(s.compute)) for s in program)


def high_precision(precision: str) -> str:
    """Precision of the parts an FP8/FP4 recipe keeps in 16 bit (flash attention, the LM head); "" when
    the job already runs everything in 16 bit."""
    return "bf16" if precision in ("fp8", "fp4") else ""


# ---------------------------------------------------------------------------------------- rank groups
def _rank_grid(dims: ParallelDims) -> tuple[np.ndarray, list[str]]:
    """Global ranks as an array with one axis per dimension, slowest-varying first, and the axis names."""
    sizes = {"tp": dims.tp, "cp": dims.cp, "ep": 1, "dp": dims.dp, "pp": dims.pp}
    names = list(dims.order)[::-1]
    return np.arange(dims.world, dtype=np.int64).reshape([sizes[n] for n in names]), names


def rank_groups(dims: ParallelDims, group_dims: tuple[str, ...]) -> np.ndarray:
    """Every group of ranks that differ only in ``group_dims``: rows of global ranks, fastest dim fastest."""
    grid, names = _rank_grid(dims)
    inside = [i for i, n in enumerate(names) if n in group_dims]
    outside = [i for i, n in enumerate(names) if n not in group_dims]
    size = int(np.prod([grid.shape[i] for i in inside])) if inside else 1
    return np.transpose(grid, outside + inside).reshape(-1, size)


def expert_groups(dims: ParallelDims, ep: int) -> tuple[np.ndarray, np.ndarray]:
    """(EP groups, expert-data-parallel groups) as rows of global ranks.

    Megatron-Core with expert-TP = 1 refactors the tp·cp·dp ranks of a pipeline stage (in rank order, tp
    fastest) into ep x edp with ep fastest: an EP group is ``ep`` consecutive ranks of the stage, so on
    8-GPU servers EP 8 stays inside NVLink even with TP 2. Expert gradients reduce over edp = tp·cp·dp/ep.
    """
    stages = rank_groups(dims, ("tp", "cp", "dp"))  # one row per stage, dense rank order
    width = stages.shape[1]
    ep_rows = stages.reshape(-1, ep)
    edp = width // ep
    edp_rows = stages.reshape(-1, edp, ep).transpose(0, 2, 1).reshape(-1, edp)
    return ep_rows, edp_rows


class TrainingJob:
    """Builds and runs the simpy processes of a training job on a Machine."""

    def __init__(self, spec: TrainingSpec, machine: Machine, fidelity: str = "representative") -> None:
        self.spec = spec
        self.m = machine
        self.env = machine.env
        self.fidelity = fidelity
        par = spec.parallelism
        # Experts are laid out by expert_groups (Megatron-Core's expert ranks); the dense layout has no ep axis.
        self.dims = ParallelDims(
            tp=par.tp,
            cp=par.cp,
            ep=1,
            dp=par.dp,
            pp=par.pp,
            order=validate_order(par.order, file=spec.source_file),
        )
        self.ep = par.ep
        self.zero = 3 if par.fsdp else par.zero
        self.dense_dp = par.dp * par.cp  # Megatron reduces and shards dense gradients over dp x cp
        self.expert_dp = par.dp * par.cp * par.tp // par.ep if spec.model.moe is not None else 1
        self.grad_bytes = 4.0 if par.grad_reduce == "fp32" else 2.0
        self.chunks = par.vp
        # Megatron's plain 1F1B exchanges activations with batched isend/irecv followed by
        # torch.cuda.synchronize() (batch_p2p_comm, batch_p2p_sync): the host waits at every pipeline
        # receive. The interleaved schedule overlaps its p2p instead (overlap_p2p_comm) and does not.
        self.p2p_sync = par.pp > 1 and par.vp == 1
        # A combined schedule (EP overlap) pairs different micro-batches: one warm-up forward at least.
        self._min_warmup = 1 if par.ep_comm_overlap else 0
        self.vstages = par.pp * par.vp
        self.stage_chunks = mdl.pipeline_layers(
            spec.model, par.pp, par.vp, layers_per_chunk=par.layers_per_chunk, file=spec.source_file
        )
        self.dtype = (
            "bf16"
            if spec.precision == "fp16" and "fp16" not in machine.profile.accelerator.peak_flops
            else spec.precision
        )
        machine.profile.peak_flops(self.dtype)  # clear error if the accelerator lacks the precision
        self.memory = stage_memory(self.spec, self.m.profile.accelerator.hbm_capacity)
        self._recomputed = frozenset().union(
            *(
                recomputed_layers(
                    spec.model, par.pp, par.vp, st, par.recompute, par.recompute_layers, par.layers_per_chunk
                )
                for st in range(par.pp)
            )
        )
        self.step_times = StepTimes()
        # Called with the number of steps done when one ends (the runner's progress line on long runs).
        self.on_step: Callable[[int], None] | None = None
        self._p2p_bytes = mdl.activation_bytes(spec.model, **_program_kwargs(spec))
        self._programs: dict[tuple[Any, ...], tuple[Step, ...]] = {}
        self._layer_params: dict[int, tuple[float, float]] = {}
        self._layouts()
        for i, hot in enumerate(spec.hot_racks):
            machine.heat_rack(
                hot.rack, hot.supply_offset, (spec.source_file, f"hot_racks[{i}].supply_offset")
            )
        self._classes()

    def hardware_flops_per_token(self) -> float:
        """Model FLOPs plus the recompute this job actually runs (partial recompute counted per layer), in
        the model-FLOP convention of docs/models.md: what ``hardware_tflops_per_gpu`` should divide."""
        model, s = self.spec.model, self.spec.model.seq_len
        flops = mdl.model_flops_per_token(model, s)
        # each MTP module's layer recomputes as the model's last layer does
        for layer in [*range(model.layers), *model.mtp_block_layers() * model.mtp_layers]:
            mode = self.layer_recompute(layer)
            if mode == "none":
                continue
            if mode == "full":
                flops += 2.0 * mdl.layer_params(model, layer).active + mdl.layer_core_flops_per_token(
                    model, s, layer
                )
                continue
            modules = self.spec.parallelism.recompute_modules
            flops += mdl.layer_attention_flops_per_token(model, s, layer) if "core_attn" in modules else 0.0
            if "mlp" in modules and model.has_ffn(layer) and not model.is_moe_layer(layer):
                # fc1 (up and gate if gated) and fc2 again
                flops += 2.0 * model.hidden * model.dense_ffn_hidden * (3 if model.ffn == "swiglu" else 2)
            if "moe" in modules and model.is_moe_layer(layer):  # router, experts, shared experts again
                p = mdl.layer_params(model, layer)
                flops += 2.0 * (p.router + p.latent_proj + p.active_routed + p.shared_experts)
            if "mla_up_proj" in modules and model.mla is not None:  # the up-projections again
                flops += 2.0 * mdl.mla_up_proj_params(model)
        return flops

    # ------------------------------------------------------------------ memory
    # ------------------------------------------------------------------ rank classes and groups
    def _layouts(self) -> None:
        """Worst-case placement of every kind of group (a synchronous job waits for its slowest group)."""
        cluster, dims = self.m.cluster, self.dims
        base = cluster.parallel_layouts(dims, pp_wrap=self.chunks > 1)
        self.group_rows: dict[str, np.ndarray] = {
            "tp": rank_groups(dims, ("tp",)),
            "cp": rank_groups(dims, ("cp",)),
            "dp": rank_groups(dims, ("dp", "cp")),
        }
        if self.ep > 1 or self.expert_dp > 1:
            ep_rows, edp_rows = expert_groups(dims, self.ep)
            self.group_rows["ep"] = ep_rows
            self.group_rows["edp"] = edp_rows
        self.layouts: dict[str, GroupLayout] = {"pp_p2p": base["pp_p2p"]}
        for kind, rows in self.group_rows.items():
            self.layouts[kind] = cluster.worst_layout(rows)
        self.ep_send_scale = self._ep_send_scale()

    def split_groups(self) -> list[str]:
        """Groups that fit in a scale-up domain but take parts of two or more (a rank order or a size that
        does not divide the domain): their collectives cross the scale-out network, which a user choosing
        the layout by hand should hear about. One line per kind of group, with an example."""
        domain = self.m.cluster.domain_size
        lines = []
        for kind in ("tp", "cp", "ep"):
            rows = self.group_rows.get(kind)
            if rows is None or rows.shape[1] <= 1 or rows.shape[1] > domain:
                continue
            first, last = rows.min(axis=1) // domain, rows.max(axis=1) // domain
            split = np.flatnonzero(first != last)
            if len(split):
                row = rows[split[0]]
                lines.append(
                    f"{len(split)} of {len(rows)} {kind.upper()} groups ({rows.shape[1]} GPUs each) take parts "
                    f"of two scale-up domains of {domain} (e.g. GPUs {row.min()}-{row.max()}): their "
                    "collectives cross the scale-out network"
                )
        return lines

    def straggler_notes(self) -> list[str]:
        """One line per straggler: how slow, and what waits for it."""
        lines = []
        for slow in self.spec.stragglers:
            line = f"straggler: GPU {slow.gpu} runs at {slow.speed:.3g} of max clock"
            if self.fidelity != "full":
                c = next(c for c, rc in enumerate(self.m.classes) if slow.gpu in rc.gpus)
                n, ceiling = len(self.m.classes[c].gpus), self.m.clock_ceiling[c]
                others = "the other GPU" if n == 2 else f"the {n - 1} other GPUs"
                full = "(--fidelity full times each GPU on its own)"
                if ceiling < slow.speed:  # a slower straggler in lock-step with it sets its class's clock
                    line += (
                        f"; it and {others} of its stage in lock-step with it (its TP, CP and EP groups) are "
                        f"charged {ceiling:.3g}, the slowest straggler's clock among them {full}"
                    )
                elif n > 1:
                    line += (
                        f"; {others} of its stage in lock-step with it (its TP, CP and EP groups) "
                        f"{'is' if n == 2 else 'are'} charged its clock {full}"
                    )
            lines.append(line)
        return lines

    def hot_rack_notes(self) -> list[str]:
        """One line per hot rack: how much warmer, and which GPUs share its heat's clock."""
        lines = []
        gpr = self.m.cluster.gpus_per_rack
        for hot in self.spec.hot_racks:
            first, last = hot.rack * gpr, min((hot.rack + 1) * gpr, self.spec.gpus) - 1
            line = (
                f"hot rack: rack {hot.rack} of the job (GPUs {first}-{last}) gets coolant "
                f"{hot.supply_offset:g} K above the supply"
            )
            if hot.supply_offset > 0.0 and self.fidelity != "full":
                tied = sum(
                    len(rc.gpus)
                    for c, rc in enumerate(self.m.classes)
                    if self.class_set[c] >= 0 and self._set_kinds[self.class_set[c]] == "hot"
                )
                line += (
                    f"; {tied} GPUs of the job (the hot racks' and those in lock-step with them) have rank "
                    "classes of their own"
                )
            lines.append(line)
        return lines

    def _ep_send_scale(self) -> float:
        """Bytes an expert all-to-all moves under ``ep_dispatch`` / under a plain all-to-all.

        DeepEP sends a token once to each scale-up domain holding any of its experts and forwards it to
        the experts' GPUs over the scale-up links: a GPU in domain s puts sum_{j != s} P(token reaches j)
        copies per token on its NIC instead of top_k·(1 - n_s/ep). The program's all-to-all is scaled by
        the largest such ratio over the job's EP groups and their domains (a synchronous job waits for its
        busiest NIC). DeepEP also forwards the copies landing in a domain to their GPUs: the scale never
        goes below that forwarding's own time (an all-to-all of the same bytes among one domain's GPUs)
        relative to the plain all-to-all's (measured at concurrency 1: with NICs shared by several groups it
        overstates the floor slightly). It binds where scale-up links are slow next to the NICs and EP spans
        few domains: H800 (200 GB/s NVLink) over 2-4 servers, 0.33-0.50; elsewhere it stays under the scale
        the NICs set.
        """
        moe = self.spec.model.moe
        rows = self.group_rows.get("ep")
        if self.spec.parallelism.ep_dispatch != "deepep" or moe is None or rows is None:
            return 1.0
        ep, per_rank = rows.shape[1], moe.experts // rows.shape[1]
        splits = {
            tuple(np.unique(row // self.m.cluster.domain_size, return_counts=True)[1].tolist())
            for row in rows  # EP ranks are consecutive GPUs: each domain holds a contiguous block of them
        }
        scale = 0.0
        for ranks in splits:
            if len(ranks) <= 1:  # inside one domain: no NIC traffic (and not the group the job waits for)
                continue
            reach = mdl.domain_touch_probabilities(moe, [n * per_rank for n in ranks])
            for s_dom, n in enumerate(ranks):
                dedup = sum(reach) - reach[s_dom]
                plain = moe.top_k * (1.0 - n / ep)
                scale = max(scale, dedup / plain)
        if scale == 0.0:
            return 1.0
        layout, probe = self.layouts["ep"], float(2**30)  # large enough that latencies do not count
        inside = make_layout(layout.ranks_per_domain, 1, tuple(1 for _ in layout.tier_blocks))
        forward = self.m.comm_model.time("alltoall", probe, inside).time_s
        return min(1.0, max(scale, forward / self.m.comm_model.time("alltoall", probe, layout).time_s))

    def _classes(self) -> None:
        """Create rank classes and the communicators each one uses."""
        dims, m = self.dims, self.m
        world = dims.world
        ranks = np.arange(world, dtype=np.int64)
        stride_pp = dims.stride("pp")
        stage_of = (ranks // stride_pp) % dims.pp
        self.class_stage: list[int] = []
        self.class_rank: list[int] = []
        # Representative classes: one per stage, and one per stage of every set of pipelines in lock-step
        # with a straggler (``class_set``: -1 for the symmetric rest, k for the k-th such set).
        self.class_set: list[int] = []
        self._class_of: dict[tuple[int, int], int] = {}
        self._set_kinds: list[str] = []
        slow_set = self._straggler_sets(ranks - stage_of * stride_pp)
        speed = {s.gpu: s.speed for s in self.spec.stragglers}
        if self.fidelity == "full":
            for r in range(world):
                c = m.add_class(f"rank{r}", np.array([r]))
                self.class_stage.append(int(stage_of[r]))
                self.class_rank.append(r)
                self.class_set.append(-1)
                if r in speed:
                    m.slow_class(c, speed[r])
        else:
            for s in range(dims.pp):
                for k in range(-1, int(slow_set.max(initial=-1)) + 1):
                    members = ranks[(stage_of == s) & (slow_set == k)]
                    if not len(members):
                        continue
                    c = m.add_class(f"stage{s}" if k < 0 else f"stage{s}-{self._set_kinds[k]}{k}", members)
                    self.class_stage.append(s)
                    self.class_rank.append(int(members[0]))
                    self.class_set.append(k)
                    self._class_of[(k, s)] = c
                    here = (v for g, v in speed.items() if stage_of[g] == s and slow_set[g] == k)
                    ceiling = min(here, default=1.0)
                    if ceiling < 1.0:
                        m.slow_class(c, ceiling)
        # Communicators by (kind, class); kinds "dp" (dense, dp·cp) and "edp" (experts) share the dp stream.
        # ``rows`` names the GPUs of every group a communicator stands for (flow contention needs them).
        # TP overlap (Transformer Engine userbuffers) moves its chunks with copy engines and a few SMs: it
        # does not slow the GEMMs beside it the way NCCL kernels do (calibration.comm_overlap_slowdown).
        self.groups: dict[tuple[str, int], CommGroup] = {}
        for kind, rows in self.group_rows.items():
            group_kind = "dp" if kind == "edp" else kind
            layout = self.layouts[kind]
            uses_sms = not (kind == "tp" and self.spec.parallelism.tp_comm_overlap)
            if rows.shape[1] <= 1:
                continue
            if self.fidelity == "full":
                for row in rows:
                    members = tuple(int(r) for r in row)
                    grp = m.group(group_kind, layout, members, rows=row.reshape(1, -1), uses_sms=uses_sms)
                    for r in members:
                        self.groups[(kind, r)] = grp
            elif group_kind != "dp" or len(m.classes) == dims.pp:
                row_stage, row_set = stage_of[rows[:, 0]], slow_set[rows[:, 0]]
                for c in range(len(m.classes)):
                    mine = rows[(row_stage == self.class_stage[c]) & (row_set == self.class_set[c])]
                    self.groups[(kind, c)] = m.group(group_kind, layout, (c,), rows=mine, uses_sms=uses_sms)
            else:  # a straggler's pipelines and the rest reduce together: one communicator per stage
                row_stage = stage_of[rows[:, 0]]
                for s in range(dims.pp):
                    members = tuple(c for c in range(len(m.classes)) if self.class_stage[c] == s)
                    grp = m.group(group_kind, layout, members, rows=rows[row_stage == s], uses_sms=uses_sms)
                    for c in members:
                        self.groups[(kind, c)] = grp
        # Global grad-norm all-reduce: one communicator over every class (a barrier that ends the step).
        world_layout = m.cluster.worst_layout(ranks.reshape(1, -1))
        self.world_group = m.group(
            "dp", world_layout, tuple(range(len(m.classes))), rows=ranks.reshape(1, -1)
        )

    def _group(self, kind: str, cls: int) -> CommGroup | None:
        return self.groups.get((kind, cls))

    def _peer(self, cls: int, stage_delta: int) -> int:
        """Class of the same position on the neighbouring pipeline stage (wrapping for interleaving)."""
        pp = self.dims.pp
        if self.fidelity == "full":
            coords = self.dims.coords(self.class_rank[cls])
            coords["pp"] = (coords["pp"] + stage_delta) % pp
            return self.dims.rank_of(coords)
        return self._class_of[(self.class_set[cls], (self.class_stage[cls] + stage_delta) % pp)]

    def _straggler_sets(self, lane: np.ndarray) -> np.ndarray:
        """Per rank: which set of pipelines in lock-step with a straggler or a hot rack it belongs to (-1:
        none).

        A rank's lane is its position outside the pipeline dimension. TP, CP and expert-parallel groups
        synchronise every layer, so a slow GPU holds back every lane it shares such a group with, and
        theirs in turn (the lanes' connected components); its pipelines' other stages wait for it at the
        stage-to-stage sends. Data-parallel groups meet once a step and stay shared with the rest. Each
        straggler's component is a set of its own; components reaching into hot racks share one set per
        combination of hot racks they reach (they run alike: the same heat, the same clock)."""
        sets = np.full(len(lane), -1, dtype=np.int64)
        hot = [h.rack for h in self.spec.hot_racks if h.supply_offset > 0.0]
        if not self.spec.stragglers and not hot:
            return sets
        label = np.arange(len(lane), dtype=np.int64)  # per rank: smallest lane it is tied to
        tied = [lane[rows] for kind, rows in self.group_rows.items() if kind in ("tp", "cp", "ep")]
        while True:  # label propagation over the lock-step groups until it settles
            before = label.copy()
            for rows in tied:
                low = label[rows].min(axis=1)
                np.minimum.at(label, rows, low[:, None].repeat(rows.shape[1], axis=1))
            if np.array_equal(label, before):
                break
        comp = label[lane]
        keys: dict[int, tuple[Any, ...]] = {}  # component root -> what makes it slow
        for i, slow in enumerate(self.spec.stragglers):
            keys.setdefault(int(comp[slow.gpu]), ("straggler", i))
        if hot:
            rack = np.arange(len(lane), dtype=np.int64) // self.m.cluster.gpus_per_rack
            inside = np.isin(rack, hot)
            reached: dict[int, set[int]] = {}
            for root, r in np.unique(np.stack([comp[inside], rack[inside]]), axis=1).T.tolist():
                reached.setdefault(root, set()).add(r)
            for root in sorted(reached):
                keys.setdefault(root, ("hot", tuple(sorted(reached[root]))))
        index: dict[tuple[Any, ...], int] = {}
        for root, key in keys.items():
            sets[comp == root] = index.setdefault(key, len(index))
        self._set_kinds = ["slow" if key[0] == "straggler" else "hot" for key in index]
        return sets

    # ------------------------------------------------------------------ programs
    def _layer_program(self, layer: int, phase: str, mtp: bool = False) -> tuple[Step, ...]:
        """Programs depend on the layer only through its kind (a hybrid model's block), dense vs MoE, its
        attention window, its recompute and its precision: share them (and the engine's memo). ``mtp``: the
        layer's kind as run by an MTP module (kernels.bf16_mtp may keep it in bf16)."""
        mode = self.layer_recompute(layer)
        model = self.spec.model
        bf16 = self.spec.bf16_layer(layer) or (mtp and self.spec.kernels.bf16_mtp)
        bf16 = bf16 and bool(high_precision(self.spec.precision))
        key = (
            model.layer_kind(layer),
            model.is_moe_layer(layer),
            model.attention_window(layer),
            phase,
            mode,
            bf16,
        )
        prog = self._programs.get(key)
        if prog is None:
            prog = self._programs[key] = layer_segments(self.spec, layer, phase, mode, bf16)
        return prog

    def layer_recompute(self, layer: int) -> str:
        """Recompute mode of one layer: with ``recompute_layers`` only the first N layers of each chunk
        replay their whole forward; the rest keep their activations."""
        par = self.spec.parallelism
        if par.recompute != "full" or par.recompute_layers <= 0:
            return par.recompute
        return "full" if layer in self._recomputed else "none"

    def _edge_program(self, which: str, phase: str) -> tuple[Step, ...]:
        """Embedding (first virtual stage), output layer + loss (last) or an MTP module's input projection,
        with their TP collectives."""
        key = (which, phase)
        prog = self._programs.get(key)
        if prog is None:
            par = self.spec.parallelism
            if which == "embedding":
                program = mdl.embedding_program(self.spec.model, phase=phase, **_program_kwargs(self.spec))
            elif which == "mtp":
                program = mdl.mtp_input_program(self.spec.model, phase=phase, **_program_kwargs(self.spec))
            else:
                program = mdl.output_program(
                    self.spec.model,
                    phase=phase,
                    fused_cross_entropy=self.spec.kernels.fused_cross_entropy,
                    **_program_kwargs(self.spec),
                )
            prog = program_segments(program, phase, {"tp": par.tp, "cp": par.cp, "ep": par.ep})
            if which == "output" and high_precision(self.spec.precision):
                # Megatron/TE keep the output layer (LM head) in bf16 under FP8 and FP4 recipes.
                prog = tuple(
                    replace(seg, dtype="bf16") if isinstance(seg, Segment) and seg.work else seg
                    for seg in prog
                )
            self._programs[key] = prog
        return prog

    def vstage_layers(self, vstage: int) -> range:
        """Layers of virtual stage ``vstage`` (= chunk * pp + stage, Megatron's interleaving)."""
        chunk, stage = divmod(vstage, self.dims.pp)
        return self.stage_chunks[stage][chunk]

    # ------------------------------------------------------------------ parameters
    def layer_param_split(self, layer: int) -> tuple[float, float]:
        """(dense, routed-expert) parameters one GPU holds for a layer, before ZeRO sharding."""
        hit = self._layer_params.get(layer)
        if hit is None:
            par = self.spec.parallelism
            hit = self._layer_params[layer] = mdl.layer_param_split(
                self.spec.model, layer, tp=par.tp, ep=par.ep
            )
        return hit

    def _edge_params(self, vstage: int, layers: list[int]) -> float:
        """Embedding (with the first layer of the first virtual stage) and final norm + LM head (with the
        last layer of the last one): parameters one GPU holds, gathered and reduced with those layers."""
        model, tp = self.spec.model, self.spec.parallelism.tp
        out = 0.0
        if self._holds_edge(vstage, layers, first=True):
            out += model.vocab * model.hidden / tp
            if model.position_embedding == "learned":
                out += model.seq_len * model.hidden
        if self._holds_edge(vstage, layers, first=False):
            out += model.hidden * (2 if model.bias else 1)
            if not model.tied_embeddings or self.dims.pp > 1:
                out += model.vocab * model.hidden / tp
            out += model.mtp_stored_modules * self._mtp_param_split()[0]
            if model.mtp_layers and self.dims.pp > 1:  # the modules' copy of the embedding
                out += model.vocab * model.hidden / tp
        return out

    def _holds_edge(self, vstage: int, layers: list[int], *, first: bool) -> bool:
        """Whether these layers of a virtual stage carry its embedding (``first``) or its output layer:
        the chunk's first or last layer does, or the empty bucket of a chunk that holds no layer at all
        (Megatron's embedding-only first and loss-only last chunk)."""
        if vstage != (0 if first else self.vstages - 1):
            return False
        chunk = self.vstage_layers(vstage)
        if not chunk:
            return not layers
        return (chunk[0] if first else chunk[-1]) in layers

    def _mtp_param_split(self) -> tuple[float, float]:
        """(dense, routed-expert) parameters one GPU holds for one MTP module (its layer, norms, eh_proj)."""
        par = self.spec.parallelism
        return mdl.mtp_param_split(self.spec.model, tp=par.tp, ep=par.ep)

    def _bucket_params(self, vstage: int, layers: list[int]) -> tuple[float, float]:
        """(dense, expert) parameters of a bucket of layers of a virtual stage, edge layers included."""
        dense = expert = 0.0
        for layer in layers:
            d, e = self.layer_param_split(layer)
            dense += d
            expert += e
        if self._holds_edge(
            vstage, layers, first=False
        ):  # the MTP modules' routed experts go with the model's last layer
            expert += self.spec.model.mtp_stored_modules * self._mtp_param_split()[1]
        return dense + self._edge_params(vstage, layers), expert

    def _stage_params(self, cls: int) -> tuple[float, float]:
        """(dense, expert) parameters this GPU holds for its stage (TP/EP-sharded, embedding/head included)."""
        par = self.spec.parallelism
        sp = stage_params(
            self.spec.model,
            tp=par.tp,
            pp=par.pp,
            vp=par.vp,
            ep=par.ep,
            stage_index=self.class_stage[cls],
            layers_per_chunk=par.layers_per_chunk,
        )
        return sp.dense, sp.experts

    def _dp_collective(
        self, cls: int, op: str, dense: float, expert: float, bytes_per: float, name: str
    ) -> list[simpy.Event]:
        """One data-parallel collective for dense parameters (dp·cp group) and one for experts (edp group)."""
        events = []
        for kind, count in (("dp", dense), ("edp", expert)):
            grp = self._group(kind, cls)
            if grp is not None and count > 0:
                self.m.host_issue(cls, 1)
                events.append(self.m.collective(cls, grp, op, bytes_per * count, name=f"{name}", stream="dp"))
        return events

    # ------------------------------------------------------------------ processes
    def start(self) -> list[simpy.Process]:
        self._setup_memory()
        return [self.env.process(self._rank_process(c)) for c in range(len(self.m.classes))]

    def _setup_memory(self) -> None:
        """Static memory per class (weights, grads, optimizer, buffers); each forward then keeps its model
        chunk's activations until its backward, so the simulated peak is the memory model's."""
        self.act_bytes: list[tuple[float, ...]] = []
        for c in range(len(self.m.classes)):
            mem = self.memory[self.class_stage[c]]
            self.m.alloc(c, mem.total - mem.in_flight)
            self.act_bytes.append(mem.chunk_activations)

    def _buckets(self, vstage: int, reverse: bool) -> list[list[int]]:
        """Layers of a virtual stage in gradient/parameter buckets of ``dp_bucket_layers``."""
        layers = list(self.vstage_layers(vstage))
        if reverse:
            layers.reverse()
        n = self.spec.parallelism.dp_bucket_layers
        buckets = [layers[i : i + n] for i in range(0, len(layers), n)]
        if not buckets and vstage in (0, self.vstages - 1):  # an edge-only chunk: its embedding / LM head
            buckets = [[]]
        return buckets

    def _rank_process(self, cls: int) -> Generator[simpy.Event, Any, None]:
        spec, m, par = self.spec, self.m, self.spec.parallelism
        stage = self.class_stage[cls]
        actions: list[Any] = interleaved(
            stage, self.dims.pp, spec.microbatches, self.chunks, self._min_warmup
        )
        if par.ep_comm_overlap:
            actions = combined(actions)
        last_mb = spec.microbatches - 1
        for step in range(spec.steps):
            m.class_step[cls] = step
            m.host_sync(cls)  # the previous step ended with the loss and gradient norm read on the host
            if m.step_host_s:  # ... then the host does its per-iteration work before the first kernel
                yield m.host_work(cls, m.step_host_s)
            state = _StepState()
            if self.zero in (1, 2):
                yield from self._param_gather_at_step_start(cls, state)
            for action in actions:
                if action[0] == "FB":  # both at once: one's communication under the other's compute
                    (_, fmb, fchunk), (_, bmb, bchunk) = action[1], action[2]
                    fwd = self.env.process(self._forward(cls, fchunk * self.dims.pp + stage, fmb, state))
                    bwd = self.env.process(
                        self._backward(cls, bchunk * self.dims.pp + stage, bmb, bmb == last_mb, state)
                    )
                    yield fwd & bwd
                    continue
                phase, mb, chunk = action
                vstage = chunk * self.dims.pp + stage
                if phase == "F":
                    yield from self._forward(cls, vstage, mb, state)
                else:
                    yield from self._backward(cls, vstage, mb, mb == last_mb, state)
            if not par.dp_overlap and self.zero < 3:
                for chunk in range(self.chunks):
                    vstage = chunk * self.dims.pp + stage
                    for bucket in self._buckets(vstage, reverse=True):
                        state.dp_events += self._grad_sync(cls, vstage, bucket)
            if state.dp_events:
                yield simpy.AllOf(self.env, state.dp_events)
            m.host_issue(cls, 1)
            yield m.collective(cls, self.world_group, "allreduce", 4.0, name="grad_norm", stream="dp")
            yield from self._optimizer(cls)
            self._class_done(step)

    def _class_done(self, step: int) -> None:
        """A class finished ``step``; the step ends with the last one (every class passed the step's
        gradient-norm all-reduce, so no class can finish a later step before this one ends)."""
        times = self.step_times
        done = times.finished[step] = times.finished.get(step, 0) + 1
        if done < len(self.m.classes):
            return
        del times.finished[step]
        times.ends.append(self.env.now)
        if self.on_step is not None:
            self.on_step(len(times.ends))

    def _param_gather_at_step_start(self, cls: int, state: _StepState) -> Generator[simpy.Event, Any, None]:
        """ZeRO-1/2: all-gather the bf16 parameters the previous optimizer step updated, bucket by bucket in
        forward order; with ``dp_overlap`` each layer's first forward waits only for its own bucket."""
        par = self.spec.parallelism
        stage = self.class_stage[cls]
        events: list[simpy.Event] = []
        for chunk in range(self.chunks):
            vstage = chunk * self.dims.pp + stage
            for bucket in self._buckets(vstage, reverse=False):
                dense, expert = self._bucket_params(vstage, bucket)
                evs = self._dp_collective(
                    cls, "allgather", dense, expert, PARAM_COMM_BYTES, "dp_param_allgather"
                )
                if not evs:
                    continue
                ev = evs[0] if len(evs) == 1 else simpy.AllOf(self.env, evs)
                events.append(ev)
                for key in bucket or [("edge", vstage)]:  # an edge-only chunk waits under its own key
                    state.param_ready[key] = ev
        if events and not par.dp_overlap:
            yield simpy.AllOf(self.env, events)
            state.param_ready.clear()

    def _zero3_gather(
        self, cls: int, vstage: int, layers: list[int], i: int, tag: tuple, state: _StepState
    ) -> Generator[simpy.Event, Any, None]:
        """ZeRO-3/FSDP: all-gather layer ``layers[i]`` (prefetching the next one on the dp stream), wait.

        Idempotent: a layer gathered (or prefetched) already for this pass is not gathered again. An
        edge-only chunk (no layers) gathers its embedding or LM head alone. Without ``dp_overlap`` nothing
        is prefetched: each layer's gather starts when the layer needs it.
        """
        units = [[layer] for layer in layers] or [[]]
        for j in (i, i + 1) if self.spec.parallelism.dp_overlap else (i,):
            if j >= len(units):
                break
            key = (*tag, vstage, *units[j])
            if key not in state.gathers:
                dense, expert = self._bucket_params(vstage, units[j])
                evs = self._dp_collective(cls, "allgather", dense, expert, PARAM_COMM_BYTES, "fsdp_allgather")
                state.gathers[key] = evs
        evs = state.gathers[(*tag, vstage, *units[i])]
        if evs:
            yield simpy.AllOf(self.env, evs) if len(evs) > 1 else evs[0]

    def _forward(
        self, cls: int, vstage: int, mb: int, state: _StepState
    ) -> Generator[simpy.Event, Any, None]:
        m = self.m
        if vstage > 0:
            yield m.recv(("act", m.class_step[cls], mb, vstage, cls))
            if self.p2p_sync:
                m.host_sync(cls)
        m.alloc(cls, self.act_bytes[cls][vstage // self.dims.pp])
        layers = list(self.vstage_layers(vstage))
        zero3 = self.zero == 3
        if vstage == 0:
            if zero3:  # the embedding is gathered with the first layer
                yield from self._zero3_gather(cls, vstage, layers, 0, ("F", mb), state)
            else:  # ... or all-gathered in its bucket at the step start (ZeRO-1/2)
                yield from self._params_ready(state, layers[0] if layers else ("edge", vstage))
            yield from self._run_program(cls, self._edge_program("embedding", "fwd"), mb)
        for i, layer in enumerate(layers):
            if zero3:
                yield from self._zero3_gather(cls, vstage, layers, i, ("F", mb), state)
            else:  # inline, not _params_ready: this runs for every layer of every micro-batch
                ready = state.param_ready.pop(layer, None)
                if ready is not None:
                    yield ready
            yield from self._run_program(cls, self._layer_program(layer, "fwd"), mb)
        if vstage == self.vstages - 1 and not layers:  # a loss-only chunk: its LM head on its own
            if zero3:
                yield from self._zero3_gather(cls, vstage, layers, 0, ("F", mb), state)
            else:
                yield from self._params_ready(state, ("edge", vstage))
        if vstage == self.vstages - 1:
            yield from self._run_program(cls, self._edge_program("output", "fwd"), mb)
            yield from self._mtp(cls, mb, "fwd")
        else:
            self._send(cls, +1, ("act", m.class_step[cls], mb, vstage + 1), f"pp_send_act mb{mb}", mb)

    @staticmethod
    def _params_ready(state: _StepState, key: Any) -> Generator[simpy.Event, Any, None]:
        """Wait (once per step) for the ZeRO-1/2 parameter all-gather of the bucket holding ``key``."""
        ready = state.param_ready.pop(key, None)
        if ready is not None:
            yield ready

    def _backward(
        self, cls: int, vstage: int, mb: int, last_mb: bool, state: _StepState
    ) -> Generator[simpy.Event, Any, None]:
        m, par = self.m, self.spec.parallelism
        layers = list(self.vstage_layers(vstage))[::-1]
        zero3 = self.zero == 3
        if vstage == self.vstages - 1:
            if zero3:  # the LM head is gathered with the last layer
                yield from self._zero3_gather(cls, vstage, layers, 0, ("B", mb), state)
            yield from self._mtp(cls, mb, "bwd")
            yield from self._run_program(cls, self._edge_program("output", "bwd"), mb)
        else:
            yield m.recv(("grad", m.class_step[cls], mb, vstage, cls))
            if self.p2p_sync:
                m.host_sync(cls)
        bucket: list[int] = []
        reduce_now = last_mb and par.dp_overlap and not zero3
        for i, layer in enumerate(layers):
            if zero3:
                yield from self._zero3_gather(cls, vstage, layers, i, ("B", mb), state)
            yield from self._run_program(cls, self._layer_program(layer, "bwd"), mb)
            if zero3:
                # FSDP / ZeRO-3: each micro-batch's layer gradients are reduce-scattered right away (and,
                # without dp_overlap, the backward waits for them).
                dense, expert = self._bucket_params(vstage, [layer])
                yield from self._zero3_reduce(cls, dense, expert, state)
            elif reduce_now:
                bucket.append(layer)
                if len(bucket) >= par.dp_bucket_layers:
                    state.dp_events += self._grad_sync(cls, vstage, bucket)
                    bucket = []
        if vstage == 0:
            if zero3 and not layers:  # FSDP re-gathers the embedding-only chunk for its backward too
                yield from self._zero3_gather(cls, vstage, layers, 0, ("B", mb), state)
            yield from self._run_program(cls, self._edge_program("embedding", "bwd"), mb)
        if not layers and zero3:  # an edge-only chunk: its embedding / LM head gradients on their own
            dense, expert = self._bucket_params(vstage, [])
            yield from self._zero3_reduce(cls, dense, expert, state)
        elif reduce_now and (bucket or not layers):
            state.dp_events += self._grad_sync(cls, vstage, bucket)
        m.free(cls, self.act_bytes[cls][vstage // self.dims.pp])
        if vstage > 0:
            self._send(cls, -1, ("grad", m.class_step[cls], mb, vstage - 1), f"pp_send_grad mb{mb}", mb)

    def _zero3_reduce(
        self, cls: int, dense: float, expert: float, state: _StepState
    ) -> Generator[simpy.Event, Any, None]:
        """ZeRO-3/FSDP: reduce-scatter one unit's gradients; overlapped with the rest of the backward
        (``dp_overlap``) or waited for before it goes on."""
        evs = self._dp_collective(
            cls, "reducescatter", dense, expert, self.grad_bytes, "fsdp_grad_reducescatter"
        )
        if self.spec.parallelism.dp_overlap:
            state.dp_events += evs
        elif evs:
            yield simpy.AllOf(self.env, evs) if len(evs) > 1 else evs[0]

    def _mtp(self, cls: int, mb: int, phase: str) -> Generator[simpy.Event, Any, None]:
        """The multi-token-prediction modules on the last virtual stage: input projection, the module's
        layer(s) (``mtp_block_layers``: the last layer's kind, or a hybrid model's attention and FFN block) and
        the shared output head with its loss; backward in reverse."""
        model = self.spec.model
        if not model.mtp_layers:
            return
        parts = (
            self._edge_program("mtp", phase),
            *(self._layer_program(layer, phase, mtp=True) for layer in model.mtp_block_layers()),
            self._edge_program("output", phase),
        )
        for _ in range(self.spec.model.mtp_layers):
            for program in parts if phase == "fwd" else parts[::-1]:
                yield from self._run_program(cls, program, mb)

    def _send(self, cls: int, delta: int, tag_base: tuple, name: str, mb: int) -> None:
        peer = self._peer(cls, delta)
        self.m.host_issue(cls, 1)
        self.m.send(
            cls,
            peer,
            self._p2p_bytes,
            tag=(*tag_base, peer),
            layout=self.layouts["pp_p2p"],
            name=name,
            micro=mb,
        )

    def _run_program(self, cls: int, program: tuple[Step, ...], mb: int) -> Generator[simpy.Event, Any, None]:
        """Run a layer program. With ``tp_comm_overlap`` TP collectives run beside the GEMMs (chunked,
        userbuffers-style) and the layer only waits for them at its end, so a layer costs about
        max(compute, TP communication) instead of their sum."""
        m = self.m
        overlap = self.spec.parallelism.tp_comm_overlap
        pending: list[simpy.Event] = []
        for seg in program:
            if isinstance(seg, Overlapped):
                evs = [self._issue(cls, c, mb) for c in seg.comms]
                yield self._compute(cls, seg.compute, mb)
                yield simpy.AllOf(self.env, evs) if len(evs) > 1 else evs[0]
            elif seg.work:
                yield self._compute(cls, seg, mb)
                if seg.host_sync:
                    m.host_sync(cls)
            else:
                ev = self._issue(cls, seg, mb)
                if overlap and seg.group == "tp":
                    pending.append(ev)
                else:
                    yield ev
        if pending:
            yield simpy.AllOf(self.env, pending) if len(pending) > 1 else pending[0]

    def _compute(self, cls: int, seg: Segment, mb: int) -> simpy.Event:
        return self.m.compute_fused(
            cls,
            seg.work,
            dtype=seg.dtype or self.dtype,
            name=seg.name,
            micro=mb,
            launches=seg.launches,
            kernels=seg.kernels,
        )

    def _issue(self, cls: int, seg: Segment, mb: int) -> simpy.Event:
        if not (self.spec.kernels.cuda_graphs and seg.group in ("tp", "cp")):  # else inside the graph
            self.m.host_issue(cls, 1)
        grp = self.groups[(seg.group, cls)]
        nbytes = seg.nbytes * self.ep_send_scale if seg.group == "ep" and seg.op == "alltoall" else seg.nbytes
        return self.m.collective(cls, grp, seg.op, nbytes, name=seg.name, micro=mb)

    def _grad_sync(self, cls: int, vstage: int, layers: list[int]) -> list[simpy.Event]:
        """Reduce-scatter (ZeRO >= 1) or all-reduce (ZeRO 0) of one gradient bucket on the dp stream:
        dense gradients over dp·cp, routed-expert gradients over the expert-data-parallel group."""
        dense, expert = self._bucket_params(vstage, layers)
        op = "reducescatter" if self.zero >= 1 else "allreduce"
        return self._dp_collective(cls, op, dense, expert, self.grad_bytes, f"dp_grad_{op}")

    def _optimizer(self, cls: int) -> Generator[simpy.Event, Any, None]:
        """Adam on this rank's shard (ZeRO >= 1: dense / dp·cp, experts / edp)."""
        dense, expert = self._stage_params(cls)
        opt = self.spec.optimizer
        shard = dense / self.dense_dp + expert / self.expert_dp if self.zero >= 1 else dense + expert
        yield self.m.compute(
            cls,
            mdl.optimizer_flops(shard),
            mdl.optimizer_bytes(
                shard,
                grad_dtype_bytes=self.grad_bytes,  # the gradient buffer it reads (fp32 with grad_reduce: fp32)
                # fp32_params: the fp32 master is the parameter, read and written with no 16-bit copy
                param_dtype_bytes=4 if opt.fp32_params else 2,
                master_weights=opt.master_weights and not opt.fp32_params,
                moment_bytes=opt.moment_bytes,
            ),
            dtype="bf16",
            name="optimizer",
            kind="optimizer",
        )


@dataclass
class _StepState:
    """Per-class bookkeeping of one step: outstanding data-parallel events and parameter gathers."""

    dp_events: list[simpy.Event] = field(default_factory=list)
    param_ready: dict[Any, simpy.Event] = field(default_factory=dict)
    gathers: dict[tuple, list[simpy.Event]] = field(default_factory=dict)
