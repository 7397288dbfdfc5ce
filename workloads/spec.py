"""Workload specs (the DESIGN.md contract): YAML -> validated frozen dataclasses.

``--workload`` takes a spec file, or a model preset name, in which case racksim picks a sensible
parallelism for the hardware (``auto_training_spec``). The same field specs as hardware profiles are
used, so errors read the same way: file, field path, value, expectation.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from simcore.errors import ConfigError
from simcore.profile import apply_overrides, parse_set_option, read_yaml
from simcore.schema import (
    build,
    choice,
    flag,
    int_list,
    number,
    quantity,
    section,
    section_list,
    text,
    text_list,
)
from workloads import pipeline_layout
from workloads.model import (
    ModelSpec,
    auto_chunk_layers,
    list_presets,
    model_to_mapping,
    resolve_model_section,
)

WORKLOAD_KEYS = (
    "kind",
    "model",
    "preset",
    "parallelism",
    "batch",
    "precision",
    "steps",
    "name",
    "kernels",
    "optimizer",
    "job",
    "stragglers",
    "hot_racks",
)
PRECISIONS = ("bf16", "fp16", "fp8", "fp4")
# Bytes per element of a linear layer's input kept for its weight gradient: FP8/FP4 recipes keep the
# quantized copy the forward GEMM used (Transformer Engine); NVFP4 adds one fp8 scale per 16 values.
SAVED_GEMM_INPUT_BYTES = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "fp4": 0.5 + 1.0 / 16}


@dataclass(frozen=True)
class Parallelism:
    """How the model is split: TP, PP (with vp virtual stages), DP (ZeRO/FSDP), CP, EP."""

    tp: int = number("tensor-parallel size", 1, integer=True, minimum=1)
    pp: int = number("pipeline-parallel size", 1, integer=True, minimum=1)
    dp: int = number("data-parallel size", 1, integer=True, minimum=1)
    cp: int = number("context-parallel size", 1, integer=True, minimum=1)
    ep: int = number(
        "expert-parallel size (expert layers split the tp·cp·dp ranks of a stage into ep x expert-dp)",
        1,
        integer=True,
        minimum=1,
    )
    vp: int = number("virtual pipeline stages per rank (interleaved 1F1B)", 1, integer=True, minimum=1)
    layers_per_chunk: tuple[int, ...] | None = int_list(
        "layers of each of the pp·vp model chunks, in model order (chunk j runs on stage j % pp), for uneven "
        "stages (Megatron's --decoder-first/last-pipeline-num-layers, pipeline layouts); the first and last "
        "may be 0 (embedding only, output layer and loss only); default: an even split, or one layer fewer on "
        "the first and last chunk when layers + 2 divides",
        None,
        minimum=0,
        optional=True,
    )
    pipeline_layout: str | None = text(
        "Megatron's --pipeline-model-parallel-layout string, read into layers_per_chunk (E embedding, t layer, "
        "m MTP depth, L loss, a vertical bar between chunks, *N repeats; example under Uneven pipeline stages)",
        None,
        optional=True,
    )
    sequence_parallel: bool = flag(
        "shard norms/dropout over TP (all-gather + reduce-scatter instead of all-reduce)", True
    )
    zero: int = number(
        "ZeRO stage: 0 none, 1 optimizer, 2 + gradients, 3 + parameters",
        1,
        integer=True,
        minimum=0,
        maximum=3,
    )
    fsdp: bool = flag(
        "fully sharded data parallel (same communication as ZeRO-3); implies zero: 3, which the recorded "
        "spec then says",
        False,
    )
    recompute: str = choice("activation recompute", ("none", "selective", "full"), "selective")
    recompute_layers: int = number(
        "with recompute: full, recompute only the first N layers of each pipeline chunk (Megatron's block "
        "method, --recompute-num-layers); 0 = every layer",
        0,
        integer=True,
        minimum=0,
    )
    recompute_modules: tuple[str, ...] = text_list(
        "with recompute: selective (ignored otherwise), what the backward rebuilds (Megatron's "
        "--recompute-modules): core_attn (the attention core), layernorm (the norms Transformer Engine does "
        "not fuse into a linear layer: an MoE layer's pre-MLP norm, MLA's input norm), moe_act (the "
        "experts' activation function), mlp (a dense MLP, norm to fc2), mla_up_proj (MLA's Q, K, V from "
        "the latents), moe (a whole MoE block, from its input)",
        ["core_attn"],
    )
    order: str = text("rank order, fastest-varying first (Megatron default)", "tp-cp-ep-dp-pp")
    tp_comm_overlap: bool = flag("overlap TP communication with GEMMs (userbuffers-style)", False)
    ep_comm_overlap: bool = flag(
        "MoE: run each steady-state forward together with the backward of another micro-batch so their "
        "expert all-to-alls hide under each other's compute (Megatron-Core's combined 1F1B, "
        "--overlap-moe-expert-parallel-comm); the last stage holds one more micro-batch",
        False,
    )
    ep_dispatch: str = choice(
        "MoE token dispatch across scale-up domains: alltoall (NCCL all-to-all: every token copy crosses "
        "the network to its expert's GPU) or deepep (DeepEP / hybrid-EP: one copy per destination domain "
        "over the NIC, forwarded to the experts over the scale-up links)",
        ("alltoall", "deepep"),
        "alltoall",
    )
    cp_comm: str = choice(
        "context-parallel K/V exchange: p2p ring overlapped with the attention core (Transformer Engine's "
        "default) or a plain all-gather before it",
        ("p2p", "allgather"),
        "p2p",
    )
    dp_overlap: bool = flag(
        "overlap gradient reduce-scatter with backward, param all-gather with forward", True
    )
    dp_bucket_layers: int = number("layers per gradient bucket", 2, integer=True, minimum=1)
    grad_reduce: str = choice(
        "precision of the data-parallel gradient reduction: fp32 (Megatron's default for bf16 training) "
        "or bf16 (fp16/bf16 reduction: 2021 Megatron fp16, FSDP bf16 mixed precision)",
        ("fp32", "bf16"),
        "fp32",
    )

    @property
    def world(self) -> int:
        return self.tp * self.pp * self.dp * self.cp


@dataclass(frozen=True)
class Kernels:
    """Implementation choices that change the kernels a layer runs (and the activations it keeps)."""

    flash_attention: bool = flag(
        "fused flash attention; false = Megatron's unfused core (scores and softmax through HBM)", True
    )
    dropout: bool = flag("dropout on block outputs (and on attention scores when unfused)", False)
    fused_cross_entropy: bool = flag(
        "fused softmax cross-entropy (flash-attn/Liger/TE style): one pass over the 16-bit logits with the "
        "gradient written in place; no fp32 probabilities kept for backward",
        False,
    )
    cuda_graphs: bool = flag(
        "capture each transformer layer's forward and backward in CUDA graphs (Megatron --cuda-graph-impl, "
        "TE make_graphed_callables): a captured segment costs its host one graph launch instead of one per "
        "kernel; the experts and token permutation of dropless MoE (token counts known only at run time) "
        "stay eager, as in Megatron's partial scopes (attn, moe_router, moe_preprocess)",
        False,
    )
    bf16_first_layers: int = number(
        "layers at the start of the model whose GEMMs stay bf16 under an fp8 / fp4 recipe (Megatron's "
        "--first-last-layers-bf16 with --num-layers-at-start-in-bf16)",
        0,
        integer=True,
        minimum=0,
    )
    bf16_mtp: bool = flag(
        "the MTP modules' GEMMs stay bf16 under an fp8 / fp4 recipe (Megatron-Bridge's keep_mtp_spec_in_bf16, "
        "set by Nemotron 3 Super's recipes)",
        False,
    )
    bf16_last_layers: int = number(
        "layers at the end of the model (and the MTP modules after them) whose GEMMs stay bf16 under an "
        "fp8 / fp4 recipe (--num-layers-at-end-in-bf16; Nemotron 3 Super's NVFP4 recipe keeps 14 of 88)",
        0,
        integer=True,
        minimum=0,
    )


@dataclass(frozen=True)
class Batch:
    """Global batch in sequences and the micro-batch size per pipeline pass."""

    global_seqs: int = number("sequences per optimizer step, over all DP replicas", integer=True, minimum=1)
    micro: int = number("sequences per micro-batch", 1, integer=True, minimum=1)


@dataclass(frozen=True)
class Optimizer:
    """Adam's state in HBM (the optimizer step and its memory)."""

    moments: str = choice(
        "storage precision of Adam's first and second moments: fp32, or bf16 (Megatron's precision-aware "
        "optimizer, --exp-avg-dtype / --exp-avg-sq-dtype bf16; DeepSeek-V3 trains so, its report §3.3.2); "
        "the fp32 master weights stay",
        ("fp32", "bf16"),
        "fp32",
    )
    fp32_params: bool = flag(
        "the fp32 master weights are the (sharded) parameters themselves, cast to 16 bits for each use, as "
        "PyTorch FSDP's mixed precision keeps them: no separate 16-bit copy in HBM (Megatron keeps both)",
        False,
    )
    master_weights: bool = flag(
        "keep fp32 master weights for the update; false is pure 16-bit training: the bf16 parameters are the "
        "only copy and Adam updates them in place (a PyTorch model held in bf16, e.g. NeMo AutoModel's MoE "
        "models; Adam's moments then take the parameters' precision: set moments: bf16)",
        True,
    )

    @property
    def moment_bytes(self) -> float:
        return 2.0 if self.moments == "bf16" else 4.0

    @property
    def checkpoint_bytes_per_param(self) -> float:
        """The training state a checkpoint saves per parameter: the weights (16-bit, or the fp32 parameters
        themselves with fp32_params), the fp32 master copy if one is kept beside them, and Adam's moments."""
        if self.fp32_params and self.master_weights:
            return 4.0 + 2 * self.moment_bytes
        return 2.0 + (4.0 if self.master_weights else 0.0) + 2 * self.moment_bytes


@dataclass(frozen=True)
class Job:
    """A multi-day job replayed from the simulated step time: failures, checkpoints, restarts."""

    steps: int = number("optimizer steps of the whole job", integer=True, minimum=1)
    checkpoint_every: int = number(
        "steps between checkpoints; 0 = Daly's optimum for the job's failure rate", 0, integer=True, minimum=0
    )
    checkpoint_bytes: float | None = quantity(
        "bytes",
        "size of one checkpoint (default: the full training state, gradients not saved: 2 B bf16 weights + "
        "12 B fp32 master weights and Adam moments per parameter, Megatron's distributed checkpoint; 10 B "
        "with optimizer.moments: bf16, 12 with fp32_params, 6 for pure bf16 training)",
        None,
        optional=True,
    )


@dataclass(frozen=True)
class Straggler:
    """One GPU slower than its peers (a part stuck at low clocks, a failing fan, a bad power supply): its
    clock never exceeds ``speed`` of the maximum. A synchronous job waits for it, so it breaks the symmetry
    the representative ranks rely on: the GPUs in lock-step with it get rank classes of their own."""

    gpu: int = number(
        "global rank of the slow GPU (0 .. gpus - 1, in the job's rank order)", integer=True, minimum=0
    )
    speed: float = number(
        "its clock ceiling as a fraction of the maximum clock (compute-bound work takes 1/speed as long)",
        minimum=0.0,
        maximum=1.0,
        exclusive_minimum=True,
    )


@dataclass(frozen=True)
class HotRack:
    """One rack whose coolant (or inlet air) arrives warmer than the facility supply: a failing CDU, a
    partly blocked loop, hot-aisle recirculation. Its GPUs run hotter and, past the slowdown temperature,
    throttle; a synchronous job waits for them, so they break the symmetry of the representative ranks as a
    straggler does, with a clock set by the heat instead of a fixed ceiling."""

    rack: int = number(
        "index of the rack among the job's racks (GPU g of the job sits in rack g // GPUs per rack)",
        integer=True,
        minimum=0,
    )
    supply_offset: float = quantity(
        "temperature_delta",
        "how much warmer its coolant (or inlet air) arrives than the supply",
        allow_zero=True,
        example="10 K",
    )


@dataclass(frozen=True)
class _TrainingFields:
    """Schema of the non-model fields of a training spec."""

    kind: str = choice("workload kind", ("training", "inference"), "training")
    name: str = text("name of this workload", "")
    parallelism: Parallelism = section("how the model is split over GPUs", {})
    batch: Batch = section("global batch and micro-batch")
    precision: str = choice("compute precision of the GEMMs", PRECISIONS, "bf16")
    steps: int = number("training steps to simulate", 2, integer=True, minimum=1)
    kernels: Kernels = section("kernel implementation choices", {})
    optimizer: Optimizer = section("Adam's state", {})
    job: Job | None = section(
        "a multi-day job replayed from the step time (failures, checkpoints)", None, optional=True
    )
    stragglers: tuple[Straggler, ...] = section_list("GPUs slower than the rest (one entry each)", ())
    hot_racks: tuple[HotRack, ...] = section_list("racks cooled worse than the rest (one entry each)", ())


@dataclass(frozen=True)
class TrainingSpec:
    """A validated training workload."""

    name: str
    model: ModelSpec
    parallelism: Parallelism
    batch: Batch
    precision: str
    steps: int
    source_file: str = ""
    source_text: str = ""
    kernels: Kernels = Kernels(
        flash_attention=True,
        dropout=False,
        fused_cross_entropy=False,
        cuda_graphs=False,
        bf16_first_layers=0,
        bf16_mtp=False,
        bf16_last_layers=0,
    )
    job: Job | None = None
    optimizer: Optimizer = Optimizer(moments="fp32", fp32_params=False, master_weights=True)
    stragglers: tuple[Straggler, ...] = ()
    hot_racks: tuple[HotRack, ...] = ()

    @property
    def gpus(self) -> int:
        return self.parallelism.world

    def bf16_layer(self, layer: int) -> bool:
        """Whether this layer keeps its GEMMs in bf16 while the job runs fp8 or fp4 (kernels.bf16_first_layers
        / bf16_last_layers)."""
        if self.precision not in ("fp8", "fp4"):
            return False
        k = self.kernels
        return layer < k.bf16_first_layers or layer >= self.model.layers - k.bf16_last_layers

    @property
    def microbatches(self) -> int:
        """Micro-batches per DP replica per step (gradient accumulation steps x pipeline fill)."""
        return self.batch.global_seqs // (self.parallelism.dp * self.batch.micro)

    @property
    def tokens_per_step(self) -> int:
        return self.batch.global_seqs * self.model.seq_len


def resolve_workload_path(name: str) -> Path | None:
    """A spec file given by path (or path without .yaml); None when ``name`` is not a file."""
    if not name.strip():
        raise ConfigError("empty workload name", path="--workload", expected="a spec file or a model preset")
    for candidate in (Path(name), Path(name).with_suffix(".yaml")):
        if candidate.is_file():
            return candidate
    return None


def load_training_spec(data: Mapping[str, Any], *, file: str, source_text: str = "") -> TrainingSpec:
    """Validate a training spec mapping (model inline or by ``preset:``)."""
    data = dict(data)
    for key in data:
        if key not in WORKLOAD_KEYS:
            close = difflib.get_close_matches(str(key), WORKLOAD_KEYS, n=1)
            raise ConfigError(
                "unknown field",
                file=file,
                path=str(key),
                expected=f"one of {', '.join(WORKLOAD_KEYS)}",
                hint=f"did you mean {close[0]!r}?" if close else None,
            )
    if data.get("kind") == "inference":  # only a bare preset with --set kind=inference gets here
        raise ConfigError(
            "a model preset named on its own is laid out as a training job",
            file=file,
            path="kind",
            value="inference",
            expected="a serving spec file with kind: inference, a model and requests (docs/inference.md, "
            "e.g. examples/llama3-70b-serving.yaml)",
        )
    if data.get("kind", "training") != "training":
        raise ConfigError(
            "unknown workload kind",
            file=file,
            path="kind",
            value=data.get("kind"),
            expected="training or inference (docs/workloads.md, docs/inference.md)",
        )
    model = resolve_model_section(data.pop("model", None), data.pop("preset", None), file=file)
    fields = build(_TrainingFields, data, file=file, path="")
    spec = TrainingSpec(
        name=fields.name or model.name,
        model=model,
        parallelism=_with_layout_read(_fsdp_is_zero3(fields.parallelism), model, file),
        batch=fields.batch,
        precision=fields.precision,
        steps=fields.steps,
        source_file=file,
        source_text=source_text,
        kernels=fields.kernels,
        job=fields.job,
        optimizer=_checked_optimizer(fields.optimizer, file),
        stragglers=fields.stragglers,
        hot_racks=fields.hot_racks,
    )
    validate_training_spec(spec)
    return spec


def _checked_optimizer(opt: Optimizer, file: str) -> Optimizer:
    """fp32_params says the fp32 master is the parameter, so it needs a master to be."""
    if opt.fp32_params and not opt.master_weights:
        raise ConfigError(
            "fp32_params without master weights",
            file=file,
            path="optimizer.fp32_params",
            value=True,
            expected="false when optimizer.master_weights is false (pure 16-bit training keeps no fp32 copy)",
            hint="drop one: fp32_params: true is PyTorch FSDP's fp32 sharded parameters, master_weights: "
            "false a model held in bf16",
        )
    return opt


def _fsdp_is_zero3(par: Parallelism) -> Parallelism:
    """FSDP shards parameters, gradients and optimizer state (ZeRO-3) whatever ``zero`` says: the spec
    records the stage that is simulated, so summaries and saved specs do not claim zero: 0 with fsdp."""
    return replace(par, zero=3) if par.fsdp and par.zero != 3 else par


def _with_layout_read(par: Parallelism, model: ModelSpec, file: str) -> Parallelism:
    """``pipeline_layout`` turned into the ``layers_per_chunk`` the rest of racksim reads."""
    if par.pipeline_layout is None:
        return par
    path = "parallelism.pipeline_layout"
    if par.layers_per_chunk is not None:
        raise ConfigError(
            "both a pipeline layout and layers_per_chunk",
            file=file,
            path=path,
            value=par.pipeline_layout,
            expected="one of pipeline_layout (Megatron's string) or layers_per_chunk (a list)",
            hint="drop one, e.g. --set parallelism.pipeline_layout=null",
        )
    chunks = pipeline_layout.layers_per_chunk(
        par.pipeline_layout, mtp_layers=model.mtp_layers, file=file, path=path
    )
    if len(chunks) != par.pp * par.vp or sum(chunks) != model.layers:
        raise ConfigError(
            f"the layout has {len(chunks)} chunks and {sum(chunks)} layers (t)",
            file=file,
            path=path,
            value=par.pipeline_layout,
            expected=f"pp·vp = {par.pp * par.vp} chunks holding the model's {model.layers} layers",
            hint="a layout for another pp or vp goes with it: --set parallelism.pipeline_layout=null for the "
            "automatic split",
        )
    empty = [i for i, n in enumerate(chunks[1:-1], start=1) if n == 0]
    if empty:
        raise ConfigError(
            f"chunk {empty[0]} holds no layer",
            file=file,
            path=path,
            value=par.pipeline_layout,
            expected="at least one t in every chunk but the first and the last",
        )
    return replace(par, layers_per_chunk=chunks)


# Steps simulated event by event (every one in the trace): ~0.1 s of wall time each for a small job, so
# 100,000 is hours of simulation and gigabytes of trace; a longer job is a job: section, replayed.
MAX_SIMULATED_STEPS = 100_000
# Micro-batches per replica per step, each simulated event by event as well: a mistyped global_seqs
# (2,000,000,000) would run for days. Published recipes run at most a few thousand.
MAX_MICROBATCHES = 100_000


def check_simulated_steps(steps: int, *, file: str | None, path: str = "steps") -> None:
    """A step count racksim can simulate event by event in a sitting; the rest is the job replay's."""
    if steps > MAX_SIMULATED_STEPS:
        raise ConfigError(
            "too many steps to simulate one by one",
            file=file,
            path=path,
            value=steps,
            expected=f"at most {MAX_SIMULATED_STEPS:,}; for a whole training job give job: {{steps: {steps}}} "
            "and a few simulated steps: the job is replayed from their step time, with failures and "
            "checkpoints (docs/workloads.md)",
        )


def validate_training_spec(spec: TrainingSpec) -> None:
    """Cross-field checks: parallel sizes divide the model and the batch."""
    from workloads.model import check_parallelism, check_recompute_modules

    par, file = spec.parallelism, spec.source_file
    check_simulated_steps(spec.steps, file=file)
    modules = check_recompute_modules(list(par.recompute_modules), file=file)
    model = spec.model
    dense_layers = any(model.has_ffn(i) and not model.is_moe_layer(i) for i in range(model.layers))
    for module, applies, what in (
        ("mla_up_proj", model.mla is not None, "multi-head latent attention (an mla section)"),
        ("moe_act", model.moe is not None, "routed experts (a moe section)"),
        ("moe", model.moe is not None, "routed experts (a moe section)"),
        ("mlp", dense_layers, "dense MLP layers (no moe section, moe.dense_layers > 0, or '-' blocks)"),
    ):
        # as in Megatron, the modules only matter with selective recompute (ignored otherwise)
        if par.recompute == "selective" and module in modules and not applies:
            raise ConfigError(
                f"{module} rebuilds what only a model with {what} has",
                file=file,
                path="parallelism.recompute_modules",
                value=list(modules),
                expected=f"no {module} for {model.name}",
            )
    kern = spec.kernels
    if kern.bf16_first_layers + kern.bf16_last_layers > model.layers:
        raise ConfigError(
            "more bf16 end layers than the model has",
            file=file,
            path="kernels.bf16_first_layers",
            value=f"{kern.bf16_first_layers} first + {kern.bf16_last_layers} last",
            expected=f"at most {model.layers} together (for an all-bf16 job, precision: bf16)",
        )
    if par.recompute_layers > model.layers:
        raise ConfigError(
            "more layers to recompute than the model has",
            file=file,
            path="parallelism.recompute_layers",
            value=par.recompute_layers,
            expected=f"0 (every layer) .. {model.layers} (the first N layers of each pipeline chunk)",
        )
    check_parallelism(
        spec.model,
        tp=par.tp,
        pp=par.pp,
        cp=par.cp,
        ep=par.ep,
        vp=par.vp,
        file=file,
        dp=par.dp,
        sequence_parallel=par.sequence_parallel,
        seq_len=spec.model.seq_len,
        layers_per_chunk=par.layers_per_chunk,
    )
    if spec.model.sliding_window is not None and par.cp > 1 and par.cp_comm == "p2p":
        raise ConfigError(
            "Transformer Engine's ring (p2p) context parallelism does not run sliding-window attention",
            file=file,
            path="parallelism.cp_comm",
            value=par.cp_comm,
            expected="allgather (or cp: 1) for a model with sliding_window",
        )
    if spec.model.moe is None:  # settings of expert all-to-alls on a model without experts
        for key, what, dense_value in (
            ("ep_dispatch", "chooses how expert all-to-alls move tokens", "alltoall"),
            ("ep_comm_overlap", "overlaps expert all-to-alls", False),
        ):
            value = getattr(par, key)
            if value != dense_value:
                raise ConfigError(
                    f"{key} {what}, and this model has no experts",
                    file=file,
                    path=f"parallelism.{key}",
                    value=value,
                    expected=f"{str(dense_value).lower()} for a dense model",
                )
    per_replica = spec.batch.global_seqs / par.dp
    if spec.batch.global_seqs % par.dp:
        raise ConfigError(
            "global batch does not split evenly over data-parallel replicas",
            file=file,
            path="batch.global_seqs",
            value=spec.batch.global_seqs,
            expected=f"a multiple of dp={par.dp}",
        )
    if per_replica % spec.batch.micro:
        raise ConfigError(
            "micro-batch does not divide the per-replica batch",
            file=file,
            path="batch.micro",
            value=spec.batch.micro,
            expected=f"a divisor of global_seqs/dp = {int(per_replica)}",
        )
    if spec.microbatches > MAX_MICROBATCHES:
        raise ConfigError(
            "too many micro-batches per step to simulate one by one",
            file=file,
            path="batch.global_seqs",
            value=spec.batch.global_seqs,
            expected=f"at most {MAX_MICROBATCHES:,} micro-batches per data-parallel replica, global_seqs/(dp*micro) "
            f"(here {spec.microbatches:,}): fewer global_seqs, or a larger batch.micro or dp",
        )
    if par.vp > 1 and spec.microbatches % par.pp:
        raise ConfigError(
            "interleaved pipelines need micro-batches divisible by pp",
            file=file,
            path="batch.global_seqs",
            value=spec.batch.global_seqs,
            expected=f"global_seqs/(dp*micro) a multiple of pp={par.pp}",
        )
    if spec.model.seq_len % par.cp:
        raise ConfigError(
            "cp must divide the sequence length",
            file=file,
            path="parallelism.cp",
            value=par.cp,
            expected=f"a divisor of seq_len={spec.model.seq_len}",
        )
    _check_stragglers(spec)


def _check_stragglers(spec: TrainingSpec) -> None:
    """Each straggler names a GPU of the job, once, and each hot rack a rack, once (whether the rack is one
    of the job's depends on the profile's rack size: the runner checks that)."""
    for i, slow in enumerate(spec.stragglers):
        if slow.gpu >= spec.gpus:
            raise ConfigError(
                "no such GPU in this job",
                file=spec.source_file,
                path=f"stragglers[{i}].gpu",
                value=slow.gpu,
                expected=f"a global rank 0 .. {spec.gpus - 1} (the job has tp*pp*dp*cp = {spec.gpus} GPUs)",
            )
    _once(
        spec, [s.gpu for s in spec.stragglers], "stragglers[{}].gpu", "this GPU is already a straggler", "GPU"
    )
    _once(spec, [h.rack for h in spec.hot_racks], "hot_racks[{}].rack", "this rack is already listed", "rack")


def _once(spec: TrainingSpec, values: list[int], path: str, message: str, what: str) -> None:
    """The first entry of a list section that repeats an earlier one's ``values[i]`` is an error."""
    seen: set[int] = set()
    for i, value in enumerate(values):
        if value in seen:
            raise ConfigError(
                message,
                file=spec.source_file,
                path=path.format(i),
                value=value,
                expected=f"one entry per {what}",
            )
        seen.add(value)


def load_workload(name: str, overrides: Iterable[str] = ()) -> tuple[dict[str, Any], str, str]:
    """Raw mapping, file label and source text of ``--workload NAME`` (a spec file or a model preset)."""
    path = resolve_workload_path(name)
    if path is not None:
        raw = read_yaml(path, expected="a workload spec: kind:, model:, parallelism:, batch: ...")
        if not isinstance(raw, Mapping):
            raise ConfigError(
                "a workload spec must be a mapping",
                file=str(path),
                value=type(raw).__name__,
                expected="kind:, model:, parallelism:, batch: ...",
            )
        return apply_workload_overrides(dict(raw), overrides), str(path), path.read_text()
    presets = list_presets()
    if name not in presets and (name.endswith((".yaml", ".yml")) or "/" in name or Path(name).is_dir()):
        where = "is a directory" if Path(name).is_dir() else "no such file"
        raise ConfigError(
            where, file=name, expected="a workload spec YAML file (docs/workloads.md) or a model preset"
        )
    if name not in presets:
        close = difflib.get_close_matches(name, presets, n=3)
        raise ConfigError(
            "workload not found",
            file=name,
            expected="a workload spec YAML file or a model preset",
            hint=f"did you mean {', '.join(close)}?" if close else f"presets: {', '.join(presets)}",
        )
    return {"preset": name}, f"preset:{name}", ""


def apply_workload_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """``--set`` options on a workload spec, in order. ``model: NAME`` becomes ``model: {preset: NAME}``
    when a ``--set model.KEY=...`` reaches into it (also after a ``--set model=NAME``), so
    ``--set model.layers=4`` works on a spec that names its model by preset (docs/models.md)."""
    for option in overrides:
        keys = parse_set_option(option)[0]
        if keys[0] == "model" and "preset" in raw and "model" not in raw:  # `preset: X` is `model: X`
            raw = {k: v for k, v in raw.items() if k != "preset"} | {"model": raw["preset"]}
        if keys[0] == "model" and len(keys) > 1 and isinstance(raw.get("model"), str):
            raw = {**raw, "model": {"preset": raw["model"]}}
        raw = apply_overrides(raw, [option])
    return raw


def auto_training_spec(
    model: ModelSpec,
    *,
    gpus: int,
    domain_size: int,
    hbm_bytes: float,
    precision: str = "bf16",
    steps: int = 2,
    file: str = "",
) -> TrainingSpec:
    """A reasonable Megatron-style layout for ``gpus`` GPUs when the user gave only a model.

    TP divides the heads (and a Mamba model's heads and groups), is at most 8 and sits inside the scale-up
    domain. A dense model takes the smallest TP x PP whose every stage fits in 90 % of HBM by the memory
    model (TP before PP at equal size; Narayanan et al. SC21); an MoE model the narrowest TP that fits, with
    the experts spread over the widest expert-parallel group within the domain; every TP and EP group sits
    inside one domain. PP (even splits, or Llama-3 style with the end stages one layer short) grows as
    needed, first with selective recompute, then with full recompute; DP takes the rest; 8
    micro-batches per replica (at least 4 per stage) keep the pipeline bubble modest. With TP, sequence
    parallelism and TP communication overlap are on, as in the Megatron-Bridge / NeMo pretraining recipes
    (without overlap a TP 8 job spends a quarter of its step waiting on TP collectives).
    """

    mamba = model.mamba
    domain = max(1, domain_size)

    def inside_domains(block: int) -> bool:
        """Consecutive rank blocks of this size (a TP group; an EP group, ``ep`` consecutive ranks of a
        stage as workloads.training.expert_groups forms them) each sit inside one scale-up domain: the
        block divides the domain, or the whole job fits in one."""
        return gpus <= domain or domain % block == 0

    tps = [
        t
        for t in (1, 2, 4, 8)
        if model.heads % t == 0
        and (mamba is None or (mamba.heads % t == 0 and mamba.groups % t == 0))
        and inside_domains(t)
        and gpus % t == 0
    ]
    layers = model.layers

    def expert_parallel(tp: int, dp: int) -> int:
        """The widest EP (experts over data-parallel ranks, up to the scale-up domain and 64) that divides
        the experts and dp·tp and keeps each EP group inside one scale-up domain (an EP group straddling two
        domains runs its all-to-all over the scale-out network and paces every step): each GPU then runs
        few experts with many tokens, as MoE recipes do."""
        if model.moe is None:
            return 1
        width = min(model.moe.experts, domain, 64)
        return max(
            e
            for e in range(1, width + 1)
            if model.moe.experts % e == 0 and (dp * tp) % e == 0 and inside_domains(e)
        )

    # Dense models: the smallest model-parallel size TP x PP that fits, TP before PP at equal size (Narayanan
    # et al., SC21, takeaways 1-2: model parallelism only as far as memory needs, data parallelism for the
    # rest; TP within the server, then PP). MoE models: TP as narrow as fits, the experts spread by EP
    # instead (Megatron's MoE recipes: TP 1-2, EP 8-64).
    layouts = [
        (tp, pp)
        for tp in tps
        for pp in range(1, layers + 1)
        if gpus % (tp * pp) == 0 and auto_chunk_layers(layers, pp, 1) is not None
    ]
    if model.moe is None:
        layouts.sort(key=lambda layout: (layout[0] * layout[1], layout[1]))
    best: TrainingSpec | None = None
    least = math.inf
    for recompute in ("selective", "full"):
        for tp, pp in layouts:
            dp = gpus // (tp * pp)
            spec = _auto_layout_spec(
                model, tp, pp, dp, expert_parallel(tp, dp), recompute, precision, steps, file
            )
            worst = worst_stage_bytes(spec)
            if worst <= 0.9 * hbm_bytes:
                return spec
            if best is None or worst < least:  # nothing fits: the layout closest to fitting
                best, least = spec, worst
    if best is None:
        raise ConfigError(
            f"cannot lay out {model.name} on {gpus} GPUs",
            value=gpus,
            expected=f"a multiple of a TP size dividing {model.heads} heads (and a Mamba model's heads, groups)",
        )
    return best


def _auto_layout_spec(
    model: ModelSpec,
    tp: int,
    pp: int,
    dp: int,
    ep: int,
    recompute: str,
    precision: str,
    steps: int,
    file: str,
) -> TrainingSpec:
    """One layout the automatic layout considers: 8+ micro-batches per replica (at least 4 per stage), TP
    with sequence parallelism and overlapped communication."""
    nmb = max(8, 4 * pp)
    return TrainingSpec(
        name=model.name,
        model=model,
        parallelism=Parallelism(
            tp=tp,
            pp=pp,
            dp=dp,
            cp=1,
            ep=ep,
            vp=1,
            layers_per_chunk=None,
            pipeline_layout=None,
            sequence_parallel=tp > 1,
            zero=1,
            fsdp=False,
            recompute=recompute,
            recompute_layers=0,
            recompute_modules=("core_attn",),
            ep_comm_overlap=False,
            ep_dispatch="alltoall",
            order="tp-cp-ep-dp-pp",
            tp_comm_overlap=tp > 1,
            cp_comm="p2p",
            dp_overlap=True,
            dp_bucket_layers=2,
            grad_reduce="fp32",
        ),
        batch=Batch(global_seqs=dp * nmb, micro=1),
        precision=precision,
        steps=steps,
        source_file=file or f"preset:{model.name} (auto parallelism)",
    )


def _memory_kwargs(spec: TrainingSpec, stage: int) -> dict[str, Any]:
    """Arguments of workloads.memory.training_memory for one pipeline stage of ``spec``."""
    par = spec.parallelism
    return dict(
        tp=par.tp,
        pp=par.pp,
        dp=par.dp,
        cp=par.cp,
        ep=par.ep,
        vp=par.vp,
        zero=par.zero,
        fsdp=par.fsdp,
        recompute=par.recompute,
        recompute_layers=par.recompute_layers,
        recompute_modules=tuple(par.recompute_modules),
        sequence_parallel=par.sequence_parallel,
        cp_comm=par.cp_comm,
        micro_batch=spec.batch.micro,
        num_microbatches=spec.microbatches,
        seq_len=spec.model.seq_len,
        param_dtype_bytes=2,
        # the gradient buffer holds what the reduction moves (Megatron's main_grad: fp32 unless
        # grad_reduce_in_fp32 is off); FP4 recipes keep 16-bit gradients
        grad_dtype_bytes=4 if par.grad_reduce == "fp32" and spec.precision != "fp4" else 2,
        flash_attention=spec.kernels.flash_attention,
        dropout=spec.kernels.dropout,
        fused_cross_entropy=spec.kernels.fused_cross_entropy,
        combined_1f1b=par.ep_comm_overlap,
        stage_index=stage,
        layers_per_chunk=par.layers_per_chunk,
        gemm_input_bytes=SAVED_GEMM_INPUT_BYTES.get(spec.precision, 2.0),
        moment_bytes=spec.optimizer.moment_bytes,
        fp32_params=spec.optimizer.fp32_params,
        master_weights=spec.optimizer.master_weights,
        bf16_layers=frozenset(i for i in range(spec.model.layers) if spec.bf16_layer(i)),
        bf16_mtp=spec.kernels.bf16_mtp and spec.precision in ("fp8", "fp4"),
    )


def stage_memory(spec: TrainingSpec, capacity_bytes: float | None = None) -> dict[int, Any]:
    """Memory of every pipeline stage (uneven first/last stages make a middle one the largest).

    With ``capacity_bytes``, a stage that does not fit raises a one-line CapacityError for the worst one,
    before anything is simulated.
    """
    from simcore.errors import CapacityError
    from workloads.memory import explain_oom, training_memory

    out = {
        stage: training_memory(spec.model, **_memory_kwargs(spec, stage))
        for stage in range(spec.parallelism.pp)
    }
    worst = max(out.values(), key=lambda mem: mem.total)
    if capacity_bytes is not None and worst.total > capacity_bytes:
        where = f"{spec.source_file}: " if spec.source_file else ""
        raise CapacityError(where + explain_oom(worst, capacity_bytes))
    return out


def worst_stage_bytes(spec: TrainingSpec) -> float:
    """Memory per GPU of the spec's fullest pipeline stage: what must fit in HBM."""
    return max(mem.total for mem in stage_memory(spec).values())


def with_overrides(spec: TrainingSpec, **changes: Any) -> TrainingSpec:
    return replace(spec, **changes)


def spec_mapping(spec: TrainingSpec) -> dict[str, Any]:
    """The effective spec as a workload-spec mapping (overridable with --set, reloadable as YAML)."""
    par = {k: getattr(spec.parallelism, k) for k in spec.parallelism.__dataclass_fields__}
    del par["pipeline_layout"]  # read into layers_per_chunk
    if par["layers_per_chunk"] is None:
        del par["layers_per_chunk"]  # the automatic split
    else:
        par["layers_per_chunk"] = list(par["layers_per_chunk"])
    par["recompute_modules"] = list(par["recompute_modules"])
    return {
        "kind": "training",
        "name": spec.name,
        "model": model_to_mapping(spec.model),
        "parallelism": par,
        "batch": {"global_seqs": spec.batch.global_seqs, "micro": spec.batch.micro},
        "precision": spec.precision,
        "steps": spec.steps,
        "kernels": {k: getattr(spec.kernels, k) for k in spec.kernels.__dataclass_fields__},
        "optimizer": {
            "moments": spec.optimizer.moments,
            "fp32_params": spec.optimizer.fp32_params,
            "master_weights": spec.optimizer.master_weights,
        },
        **({"job": _job_mapping(spec.job)} if spec.job is not None else {}),
        **(
            {"stragglers": [{"gpu": s.gpu, "speed": s.speed} for s in spec.stragglers]}
            if spec.stragglers
            else {}
        ),
        **(
            {"hot_racks": [{"rack": h.rack, "supply_offset": f"{h.supply_offset} K"} for h in spec.hot_racks]}
            if spec.hot_racks
            else {}
        ),
    }


def _job_mapping(job: Job) -> dict[str, Any]:
    out: dict[str, Any] = {"steps": job.steps, "checkpoint_every": job.checkpoint_every}
    if job.checkpoint_bytes is not None:
        out["checkpoint_bytes"] = f"{job.checkpoint_bytes:.17g} B"
    return out


def spec_text(spec: TrainingSpec) -> str:
    """YAML text of the effective spec (stored in the trace so a run can be reproduced)."""
    return yaml.safe_dump(spec_mapping(spec), sort_keys=False)


def auto_layout_floor_bytes(
    model: ModelSpec, *, max_gpus: int, domain_size: int, precision: str = "bf16"
) -> float:
    """A lower bound of the worst stage's memory (bytes per GPU) of every layout :func:`auto_training_spec`
    can take for ``model`` on up to ``max_gpus`` GPUs: so a caller looking for how many GPUs a preset needs
    knows at once when no count up to ``max_gpus`` will do.

    Each TP, PP and recompute mode it could try (a superset: TP up to 8 dividing the heads and the domain,
    every EP dividing the experts within the domain and 64) at the most data parallelism ``max_gpus`` allows
    it: a layout's memory does not grow with dp (ZeRO-1 shards the optimizer over it; the micro-batches per
    replica are fixed)."""
    mamba = model.mamba
    domain = max(1, domain_size)
    tps = [
        t
        for t in (1, 2, 4, 8)
        if t <= max_gpus
        and model.heads % t == 0
        and (mamba is None or (mamba.heads % t == 0 and mamba.groups % t == 0))
        and t <= domain
    ]
    eps = (1,)
    if model.moe is not None:
        eps = tuple(e for e in range(1, min(model.moe.experts, domain, 64) + 1) if model.moe.experts % e == 0)
    floor = math.inf
    for tp in tps:
        for pp in range(1, model.layers + 1):
            if tp * pp > max_gpus or auto_chunk_layers(model.layers, pp, 1) is None:
                continue
            for ep in eps:
                step = ep // math.gcd(ep, tp)  # dp·tp must be a multiple of ep
                dp = max_gpus // (tp * pp) // step * step
                if dp < 1:
                    continue
                for recompute in ("selective", "full"):
                    spec = _auto_layout_spec(model, tp, pp, dp, ep, recompute, precision, 2, "")
                    floor = min(floor, worst_stage_bytes(spec))
    return floor
