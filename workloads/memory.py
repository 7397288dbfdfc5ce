"""HBM a training job needs on one GPU of one pipeline stage, item by item, and why a job does not fit.

Activation formulas generalize Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
Transformer Models", §4) to gated MLPs, grouped-query and latent attention, flash attention and experts;
the derivation is in docs/models.md. Bytes are SI (1 GB = 1e9 B).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from simcore.errors import ConfigError
from workloads.model import (
    ModelSpec,
    check_parallelism,
    check_recompute,
    check_recompute_modules,
    kv_heads_per_rank,
    layer_param_split,
    mtp_param_split,
    pipeline_layers,
)
from workloads.schedule import interleaved

_ACT_BYTES = 2.0  # activations are kept in bf16/fp16 (Korthikanti's 2-byte tensors)
_MASK_BYTES = 1.0  # a dropout mask is one byte per element
_LSE_BYTES = 4.0  # flash attention keeps one fp32 log-sum-exp per query and head
_PROB_BYTES = 4.0  # fp32 router probabilities and cross-entropy probabilities
_MASTER_BYTES = 4.0  # fp32 master weights
# MLP inner activations per token, in bytes per unit of FFN width.
_INNER_PER_WIDTH = MappingProxyType({"gelu": 4.0, "squared_relu": 4.0, "swiglu": 6.0})
_OPTIMIZERS = ("adam",)


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes per GPU on one pipeline stage; `total` is their sum."""

    stage_index: int
    weights: float
    gradients: float
    optimizer_states: float
    activations: float
    cp_buffers: float  # context-parallel K/V gather buffers
    workspace: float  # transients: ZeRO-3 gathered layers, SP all-gather buffer, logits
    # Of the activations: the peak of the micro-batch chunks in flight under the schedule, and what one
    # micro-batch of each of the stage's model chunks keeps (the training job allocates exactly these).
    in_flight: float = field(compare=False)
    chunk_activations: tuple[float, ...] = field(compare=False)
    spec: ModelSpec = field(repr=False, compare=False)
    settings: Mapping[str, Any] = field(repr=False, compare=False)  # the training_memory arguments

    @property
    def total(self) -> float:
        return sum(self.items().values())

    def items(self) -> dict[str, float]:
        """The memory items by the names explain_oom prints."""
        return {
            "weights": self.weights,
            "gradients": self.gradients,
            "optimizer": self.optimizer_states,
            "activations": self.activations,
            "cp buffers": self.cp_buffers,
            "workspace": self.workspace,
        }


def _check_stage(stage_index: int, pp: int) -> None:
    if isinstance(stage_index, bool) or not isinstance(stage_index, int) or not 0 <= stage_index < pp:
        raise ConfigError(
            "no such pipeline stage", path="stage_index", value=stage_index, expected=f"0..{pp - 1}"
        )


@dataclass(frozen=True)
class StageParams:
    """Parameters one GPU of a pipeline stage holds before ZeRO sharding."""

    dense: float  # everything but routed experts; its data-parallel (ZeRO) group is dp·cp
    experts: float  # routed experts; their data-parallel group is dp·cp·tp/ep (expert-TP = 1)
    largest_layer: float  # the biggest unit ZeRO-3 gathers at once: a layer, with the embedding or head

    @property
    def total(self) -> float:
        return self.dense + self.experts


def stage_params(
    spec: ModelSpec,
    *,
    tp: int = 1,
    pp: int = 1,
    vp: int = 1,
    ep: int = 1,
    stage_index: int = 0,
    layers_per_chunk: tuple[int, ...] | None = None,
) -> StageParams:
    """Per-GPU parameters of one pipeline stage: TP shards attention and dense MLPs (norms, routers, shared
    experts and MLA down-projections are whole on every TP rank), EP shards routed experts. Stage 0 adds the
    vocab-parallel embedding; the last stage the final norm and LM head (a tied head is a second copy when
    pp > 1, as in Megatron-LM).
    """
    _check_stage(stage_index, pp)
    h = spec.hidden
    first_edge = 0.0  # the embedding, gathered and reduced with the first layer of model chunk 0
    last_edge, last_edge_routed = 0.0, 0.0  # final norm, LM head, MTP modules: with the model's last layer
    if stage_index == 0:
        first_edge = spec.vocab * h / tp + (spec.seq_len * h if spec.position_embedding == "learned" else 0)
    if stage_index == pp - 1:
        last_edge = h * (2 if spec.bias else 1)
        if not spec.tied_embeddings or pp > 1:
            last_edge += spec.vocab * h / tp
        if spec.mtp_layers:  # MTP modules: their layer(s), norms and eh_proj (one module if shared)
            local, routed = mtp_param_split(spec, tp=tp, ep=ep)
            last_edge += spec.mtp_stored_modules * local
            last_edge_routed = spec.mtp_stored_modules * routed
            if pp > 1:  # the modules' embedding lookup: a copy of the embedding on the last stage
                last_edge += spec.vocab * h / tp
    dense, experts, largest = first_edge + last_edge, last_edge_routed, 0.0
    chunks = pipeline_layers(spec, pp, vp, layers_per_chunk=layers_per_chunk)[stage_index]
    for c, chunk in enumerate(chunks):
        # ZeRO-3 gathers one layer at a time, the edges with their layer (or alone in an edge-only chunk)
        units = []
        for i in chunk:
            local, routed = layer_param_split(spec, i, tp=tp, ep=ep)
            dense += local
            experts += routed
            units.append(local + routed)
        if first_edge and c == 0:
            units[:1] = [(units[0] if units else 0.0) + first_edge]
        if stage_index == pp - 1 and c == len(chunks) - 1:
            units[-1:] = [(units[-1] if units else 0.0) + last_edge + last_edge_routed]
        largest = max([largest, *units])
    return StageParams(dense, experts, largest)


def layer_activation_bytes(
    spec: ModelSpec,
    layer_index: int,
    *,
    micro_batch: int,
    seq_len: int | None = None,
    tp: int = 1,
    sp: bool = False,
    cp: int = 1,
    recompute: str = "none",
    flash_attention: bool = True,
    dropout: bool = False,
    gemm_input_bytes: float = _ACT_BYTES,
    recompute_modules: tuple[str, ...] = ("core_attn",),
) -> float:
    """Activation bytes one layer keeps for the backward pass, for one micro-batch, on one GPU.

    ``recompute: selective`` drops what its ``recompute_modules`` rebuild in the backward: ``core_attn`` the
    attention scores (unfused core; flash attention keeps none), ``layernorm`` the outputs of the norms that
    are modules of their own (an expert layer's pre-MLP norm: the router's input; MLA's input norm: the
    down-projections' input; Transformer Engine fuses the other norms into their linear layers),
    ``moe_act`` the experts' activation output (fc2's saved input), ``mlp`` a dense MLP's fc1 input and
    inner activations, ``mla_up_proj`` MLA's per-head Q, K and V (rebuilt from the latents).

    ``gemm_input_bytes``: bytes per element of the linear layers' saved inputs (their weight gradient reads
    them). FP8/FP4 recipes (Transformer Engine) keep the quantized copy the forward GEMM used, 1 B (fp8)
    or ~0.56 B (nvfp4 with its scales), instead of the 16-bit tensor; the attention output stays 16-bit
    for flash attention's backward, so there the quantized copy comes on top.

    With flash_attention=False, dropout=True and a GPT layer this is exactly Korthikanti et al. §4-5:
    s·b·h·(34 + 5·a·s/h) without parallelism, s·b·h·(10 + 24/t + 5·a·s/(h·t)) with TP, s·b·h/t·(34 + 5·a·s/h)
    with TP + SP, 34·s·b·h/t selective, 2·s·b·h (/t with SP) full.
    """
    check_recompute(recompute)
    modules = frozenset(recompute_modules) if recompute == "selective" else frozenset()
    s = spec.seq_len if seq_len is None else seq_len
    tokens = micro_batch * s / cp
    h = spec.hidden
    seq_split = tp if sp else 1  # what SP divides; the rest is per rank already
    if recompute == "full":
        return tokens * _ACT_BYTES * h / seq_split

    mask = _MASK_BYTES if dropout else 0.0
    heads = spec.heads / tp
    kv = kv_heads_per_rank(spec, tp)
    dqk, dv = spec.qk_head_dim, spec.v_head_dim
    g = gemm_input_bytes
    quantized = g < _ACT_BYTES  # linear layers keep a separate quantized copy of their input
    replicated = per_rank = 0.0
    if spec.is_mamba_layer(layer_index):
        replicated, per_rank = _mamba_activation_bytes(spec, tp, g, mask)
    if spec.has_attention(layer_index):
        # Per-token bytes of the attention block.
        replicated += (_ACT_BYTES + g) * h + mask * h  # norm input, projection input; output dropout mask
        if "layernorm" in modules and spec.mla is not None:
            # MLA's input norm is a module of its own (Transformer Engine fuses a standard attention's norm
            # into the QKV projection, which the layernorm module then leaves alone): its output is rebuilt
            replicated -= g * h
        attn = _ACT_BYTES * (heads * dqk + kv * (dqk + dv))  # Q, K, V
        if spec.mla is not None and "mla_up_proj" in modules:
            attn = 0.0  # MLA's Q, K, V are rebuilt from the kept latents (kept below)
        per_rank += attn
        if spec.qk_norm and spec.mla is None:
            per_rank += _ACT_BYTES * (heads + kv) * dqk  # the per-head norms' inputs
        # The attention output: 16-bit for flash attention's backward (and, unquantized, the out-projection's
        # input too); a quantized out-projection keeps its own copy.
        per_rank += (_ACT_BYTES if flash_attention or not quantized else 0.0) * heads * dv
        per_rank += g * heads * dv if quantized else 0.0
        if spec.mla is not None:
            m = spec.mla
            replicated += _ACT_BYTES * (m.q_lora_rank + m.kv_lora_rank)  # latent norm inputs (local tokens)
            # the q and kv down-projections each quantize the norm output
            if quantized and m.q_lora_rank and "layernorm" not in modules:
                replicated += g * h
            # Gathered latents feed the up-projections on every TP rank: SP does not split them.
            per_rank += g * (m.q_lora_rank + m.kv_lora_rank) + _ACT_BYTES * m.qk_rope_head_dim
        if flash_attention:
            per_rank += _LSE_BYTES * heads
        elif "core_attn" not in modules:
            # softmax output (+ dropout mask and dropout output) over all s keys; selective recomputes them.
            per_rank += heads * s * (_ACT_BYTES + (mask + _ACT_BYTES if dropout else 0.0))
    if spec.has_ffn(layer_index):
        # Per-token bytes of the MLP block.
        # fc1's 16-bit output (the activation's backward reads it) and fc2's input (the activation's output)
        inner = _INNER_PER_WIDTH[spec.ffn] - _ACT_BYTES + g
        moe = spec.moe
        if moe is None or not spec.is_moe_layer(layer_index):
            replicated += _ACT_BYTES * h + mask * h  # norm input; dropout mask
            if "mlp" not in modules:
                replicated += g * h  # fc1 input (the norm output, fused into fc1: only mlp rebuilds it)
                per_rank += inner * spec.dense_ffn_hidden / tp
        else:
            # Expert layers work on sequence-parallel shards (tokens / tp) with whole experts. Each routed
            # copy keeps the experts' fc1 input (the dispatched token) and the inner activations.
            # Megatron-Core (>= 0.13, "memory-efficient permutation") weights by the router probability
            # inside the expert activation, whose backward rebuilds what the probabilities' gradient needs
            # from fc1's output: the expert output is not kept (arXiv:2603.07685 §4.1.2: 26.3 GB per GPU for
            # DeepSeek-V3).
            if "moe" in modules:  # the whole block is rebuilt in the backward: it keeps only its input
                per_rank += _ACT_BYTES * h / tp
            else:
                per_rank += _moe_activation_bytes(spec, g, inner, quantized, mask, modules) / tp
    return tokens * (replicated / seq_split + per_rank)


def _moe_activation_bytes(
    spec: ModelSpec, g: float, inner: float, quantized: bool, mask: float, modules: frozenset[str]
) -> float:
    """Bytes per token an MoE block keeps (before the 1/tp of its sequence-parallel shard)."""
    moe = spec.moe
    assert moe is not None
    h = spec.hidden
    routed = moe.top_k * moe.load_factor
    act_out = 0.0 if "moe_act" in modules else g  # fc2's input, per unit of expert width
    io = moe.latent or h  # LatentMoE: the dispatched tokens are latent-wide
    expert = g * io + (inner - g + act_out) * moe.expert_ffn_hidden
    moe_bytes = _ACT_BYTES * h + _PROB_BYTES * moe.experts + mask * h  # norm in, probs
    if moe.latent:
        moe_bytes += g * moe.latent  # fc2_latent_proj's input (the combined latent tokens)
    if "layernorm" not in modules:
        moe_bytes += _ACT_BYTES * h  # the router's input (the norm output)
        if quantized and moe.shared_experts:  # the shared experts' fc1 quantizes it too
            moe_bytes += g * h
    return moe_bytes + routed * expert + moe.shared_experts * inner * moe.expert_ffn_hidden


def _mamba_activation_bytes(spec: ModelSpec, tp: int, g: float, mask: float) -> tuple[float, float]:
    """(replicated, per-TP-rank) bytes per token a Mamba-2 block keeps for its backward. Megatron-Core's
    memory-efficient path (mamba_split_conv1d_scan_combined, given z) keeps in_proj's output (z, x, B, C,
    dt) and the ungated scan output, and rebuilds the conv output in the backward; the group RMSNorm after
    it keeps its own input (the gated y, a second tensor; its per-group rstd is negligible, as every
    norm's); out_proj keeps its input (the norm's output), in_proj the block norm's output, the block norm its input."""
    m = spec.mamba
    if m is None:
        raise ValueError(f"{spec.name} has Mamba blocks and no mamba section")
    replicated = (_ACT_BYTES + g) * spec.hidden + mask * spec.hidden
    per_rank = (_ACT_BYTES * (m.in_proj_width + 2 * m.inner) + g * m.inner) / tp
    return replicated, per_rank


def recomputed_layers(
    spec: ModelSpec,
    pp: int,
    vp: int,
    stage_index: int,
    recompute: str,
    recompute_layers: int = 0,
    layers_per_chunk: tuple[int, ...] | None = None,
) -> frozenset[int]:
    """Layers of a stage whose whole forward is recomputed: all of them under ``recompute: full``, or with
    ``recompute_layers = N > 0`` the first N layers of each model chunk (Megatron's ``block`` method,
    ``--recompute-num-layers N``); the other layers keep their activations (or run selective recompute)."""
    if recompute != "full":
        return frozenset()
    out: set[int] = set()
    for chunk in pipeline_layers(spec, pp, vp, layers_per_chunk=layers_per_chunk)[stage_index]:
        n = len(chunk) if recompute_layers <= 0 else min(recompute_layers, len(chunk))
        out.update(chunk[:n])
    return frozenset(out)


def _check_choice(value: Any, choices: tuple[Any, ...], path: str) -> None:
    if value not in choices:
        raise ConfigError(
            "unsupported value", path=path, value=value, expected="one of " + ", ".join(map(str, choices))
        )


def training_memory(
    spec: ModelSpec,
    *,
    tp: int = 1,
    pp: int = 1,
    dp: int = 1,
    cp: int = 1,
    ep: int = 1,
    vp: int = 1,
    zero: int = 0,
    fsdp: bool = False,
    recompute: str = "none",
    recompute_layers: int = 0,
    recompute_modules: tuple[str, ...] = ("core_attn",),
    sequence_parallel: bool = False,
    cp_comm: str = "p2p",
    micro_batch: int = 1,
    num_microbatches: int = 1,
    seq_len: int | None = None,
    param_dtype_bytes: float = 2,
    grad_dtype_bytes: float = 2,
    optimizer: str = "adam",
    master_weights: bool = True,
    moment_bytes: float = 4.0,
    fp32_params: bool = False,
    flash_attention: bool = True,
    dropout: bool = False,
    fused_cross_entropy: bool = False,
    combined_1f1b: bool = False,
    stage_index: int = 0,
    layers_per_chunk: tuple[int, ...] | None = None,
    gemm_input_bytes: float = _ACT_BYTES,
    bf16_layers: frozenset[int] = frozenset(),
    bf16_mtp: bool = False,
) -> MemoryBreakdown:
    """Training memory per GPU on pipeline stage `stage_index` (mixed-precision Adam, 1F1B pipelining).

    Weights `param_dtype_bytes`, gradients `grad_dtype_bytes` (4 = fp32 accumulation), optimizer 12 B/param
    (fp32 master + m + v, each moment `moment_bytes`: 8 B/param with bf16 moments; 4 less without master
    weights; with `fp32_params` the master is the weights, 4 B, and no 16-bit copy is kept) on the parameters
    of stage_params(). ZeRO-1 shards the
    optimizer over dp·cp, ZeRO-2 also the gradients, ZeRO-3 / FSDP also the weights; routed experts shard
    over their own data-parallel group dp·cp·tp/ep.
    """
    settings = dict(locals())
    del settings["spec"]
    s = spec.seq_len if seq_len is None else seq_len
    check_recompute(recompute)
    recompute_modules = check_recompute_modules(recompute_modules)
    _check_choice(zero, (0, 1, 2, 3), "parallelism.zero")
    _check_choice(optimizer, _OPTIMIZERS, "optimizer")
    _check_choice(cp_comm, ("p2p", "allgather"), "parallelism.cp_comm")
    for key in ("dp", "micro_batch", "num_microbatches"):
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError("must be a positive integer", path=key, value=value, expected="an integer >= 1")
    check_parallelism(
        spec,
        tp,
        pp,
        cp,
        ep,
        vp,
        dp=dp,
        sequence_parallel=sequence_parallel,
        seq_len=s,
        layers_per_chunk=layers_per_chunk,
    )
    _check_stage(stage_index, pp)
    if fsdp:
        zero = 3
    h = spec.hidden
    last = stage_index == pp - 1
    stage_chunks = pipeline_layers(spec, pp, vp, layers_per_chunk=layers_per_chunk)[stage_index]
    layers = [i for chunk in stage_chunks for i in chunk]
    base_mode = "none" if recompute == "full" else recompute

    params = stage_params(
        spec, tp=tp, pp=pp, vp=vp, ep=ep, stage_index=stage_index, layers_per_chunk=layers_per_chunk
    )
    dense_group, expert_group = dp * cp, dp * cp * tp / ep

    def per_gpu(sharded: bool) -> float:
        if sharded:
            return params.dense / dense_group + params.experts / expert_group
        return params.dense + params.experts

    optimizer_per_param = 2 * moment_bytes + (_MASTER_BYTES if master_weights else 0.0)  # Adam's m and v
    weight_bytes = param_dtype_bytes
    if fp32_params and master_weights:  # PyTorch FSDP: the fp32 master is the parameter, no 16-bit copy
        weight_bytes, optimizer_per_param = _MASTER_BYTES, optimizer_per_param - _MASTER_BYTES
    weights = weight_bytes * per_gpu(zero >= 3)
    gradients = grad_dtype_bytes * per_gpu(zero >= 2)
    optimizer_states = optimizer_per_param * per_gpu(zero >= 1)

    # Activations: micro-batches in flight under 1F1B times one micro-batch's stage activations.
    act_kw = {
        "micro_batch": micro_batch,
        "seq_len": s,
        "tp": tp,
        "sp": sequence_parallel,
        "cp": cp,
        "flash_attention": flash_attention,
        "dropout": dropout,
        "gemm_input_bytes": gemm_input_bytes,
        "recompute_modules": recompute_modules,
    }
    recomputed = recomputed_layers(spec, pp, vp, stage_index, recompute, recompute_layers, layers_per_chunk)

    def layer_kept(i: int, mode: str, bf16: bool = False) -> float:
        """One layer's activations; a layer kept in bf16 saves its GEMM inputs in 16 bit."""
        kw = {**act_kw, "gemm_input_bytes": _ACT_BYTES} if bf16 or i in bf16_layers else act_kw
        return layer_activation_bytes(spec, i, recompute=mode, **kw)

    chunk_activations = tuple(
        sum(layer_kept(i, "full" if i in recomputed else base_mode) for i in chunk) for chunk in stage_chunks
    )
    # Walk the stage's schedule (Megatron's 1F1B or interleaved; a combined schedule warms up one more
    # micro-batch on the last stage): a forward keeps its chunk's activations until its backward.
    in_flight = live = 0.0
    for phase, _mb, chunk in interleaved(stage_index, pp, num_microbatches, vp, 1 if combined_1f1b else 0):
        live += chunk_activations[chunk] if phase == "F" else -chunk_activations[chunk]
        in_flight = max(in_flight, live)
    activations = in_flight
    if recomputed:
        # The layer being recomputed during its backward holds its full activations once: on top of the
        # micro-batches in flight, which count its input already, what it rebuilds (the largest such
        # layer). Layers not recomputed keep their activations and add nothing here.
        activations += max(layer_kept(i, "none") - layer_kept(i, "full") for i in layers if i in recomputed)
    tokens = micro_batch * s / cp
    seq_split = tp if sequence_parallel else 1
    if last:
        # final-norm input and LM-head input (bf16), and for backward the fp32 cross-entropy probabilities,
        # or with the fused kernel the 16-bit logit gradient it wrote over the logits; one micro-batch.
        kept = _ACT_BYTES if fused_cross_entropy else _PROB_BYTES
        head = tokens * (2 * _ACT_BYTES * h / seq_split + kept * spec.vocab / tp)
        activations += head
        if spec.mtp_layers:
            # each MTP module (depth), for the micro-batch in flight: its layer(s), the two norm inputs and
            # eh_proj's 2h input, and the shared head's tensors once more; recomputed as the model's layers
            # (a block's model layer may sit on an earlier stage: its recompute, as the job runs it, counts)
            anywhere = frozenset().union(
                *(
                    recomputed_layers(spec, pp, vp, st, recompute, recompute_layers, layers_per_chunk)
                    for st in range(pp)
                )
            )
            module = sum(
                layer_kept(i, "full" if i in anywhere else base_mode, bf16_mtp)
                for i in spec.mtp_block_layers()
            )
            module += tokens * (2 * _ACT_BYTES + gemm_input_bytes * 2) * h / seq_split
            activations += spec.mtp_layers * (module + head)

    cp_buffers = 0.0
    if cp > 1:
        kv = micro_batch * s * kv_heads_per_rank(spec, tp) * (spec.qk_head_dim + spec.v_head_dim) * _ACT_BYTES
        # all-gather: one layer's gathered K and V (forward) and their gradients (backward); ring: the K/V
        # block in use and the one arriving, in the forward and (dK, dV travel too) the backward
        cp_buffers = 2 * kv if cp_comm == "allgather" else 2 * 2 * kv / cp

    workspace = 0.0
    if zero >= 3:
        # The layer in use and the prefetched next one, gathered, plus one layer's unsharded gradients.
        workspace += params.largest_layer * (2 * param_dtype_bytes + grad_dtype_bytes)
    if tp > 1 and sequence_parallel:
        workspace += tokens * h * _ACT_BYTES  # the all-gathered layer input
    if last and not fused_cross_entropy:
        workspace += tokens * spec.vocab / tp * _ACT_BYTES  # bf16 logits before the fp32 loss

    return MemoryBreakdown(
        stage_index=stage_index,
        weights=weights,
        gradients=gradients,
        optimizer_states=optimizer_states,
        activations=activations,
        cp_buffers=cp_buffers,
        workspace=workspace,
        in_flight=in_flight,
        chunk_activations=chunk_activations,
        spec=spec,
        settings=MappingProxyType(settings),
    )


def _candidates(spec: ModelSpec, st: Mapping[str, Any]) -> list[list[tuple[str, dict[str, Any]]]]:
    """Changes a user could make, one group per knob, each group ordered from mild to strong."""
    groups: list[list[tuple[str, dict[str, Any]]]] = []
    modes = ("none", "selective", "full")
    ladder = [(f"recompute: {r}", {"recompute": r}) for r in modes[modes.index(st["recompute"]) + 1 :]]
    # the modules that free memory here: the unfused core's scores, the expert layers' router input and
    # activations, a dense MLP, MLA's Q, K, V
    more = (
        *(("core_attn",) if not st["flash_attention"] else ()),
        *(("layernorm", "moe_act") if spec.moe is not None else ()),
        *(("mlp",) if any(spec.has_ffn(i) and not spec.is_moe_layer(i) for i in range(spec.layers)) else ()),
        *(("mla_up_proj",) if spec.mla is not None else ()),
    )
    if st["recompute"] != "full" and set(more) - set(st["recompute_modules"]):
        listed = ", ".join(more)
        ladder.insert(
            len(ladder) - 1,
            (
                f"recompute: selective with recompute_modules: [{listed}]",
                {"recompute": "selective", "recompute_modules": more},
            ),
        )
    if st["recompute"] != "full" and spec.moe is not None and "moe" not in st["recompute_modules"]:
        # stronger: whole MoE blocks rebuilt from their input (covers moe_act and their layernorm)
        whole = (*(m for m in more if m not in ("layernorm", "moe_act")), "moe")
        ladder.insert(
            len(ladder) - 1,
            (
                f"recompute: selective with recompute_modules: [{', '.join(whole)}]",
                {"recompute": "selective", "recompute_modules": whole},
            ),
        )
    groups.append(ladder)
    zero = 3 if st["fsdp"] else st["zero"]
    groups.append([(f"zero: {z}", {"zero": z}) for z in range(zero + 1, 4)])
    if st["tp"] > 1 and not st["sequence_parallel"]:
        groups.append([("sequence_parallel: true", {"sequence_parallel": True})])
    sp_for_moe = spec.moe is not None and not st["sequence_parallel"]
    with_sp = " with sequence_parallel: true" if sp_for_moe else ""
    sp = st["sequence_parallel"] or sp_for_moe
    groups.append(
        [(f"tp: {k * st['tp']}{with_sp}", {"tp": k * st["tp"], "sequence_parallel": sp}) for k in (2, 4, 8)]
    )
    # A new pp needs its own chunk split: the suggestion uses the automatic one.
    groups.append(
        [(f"pp: {p}", {"pp": p, "layers_per_chunk": None}) for p in range(st["pp"] + 1, spec.layers + 1)]
    )
    # ring (p2p) context parallelism cannot run sliding-window layers: the all-gather form can
    cp_with, cp_set = (
        (" with cp_comm: allgather", {"cp_comm": "allgather"}) if spec.sliding_window else ("", {})
    )
    groups.append([(f"cp: {k * st['cp']}{cp_with}", {"cp": k * st["cp"], **cp_set}) for k in (2, 4, 8)])
    if spec.moe is not None:
        groups.append([(f"ep: {k * st['ep']}", {"ep": k * st["ep"]}) for k in (2, 4, 8)])
    if st["micro_batch"] > 1:
        groups.append([("micro: 1", {"micro_batch": 1})])
    return groups


def explain_oom(breakdown: MemoryBreakdown, capacity_bytes: float) -> str:
    """One line: what the stage needs, its two largest items, and single changes that make it fit.

    For each knob (recompute, ZeRO, SP, tp, pp, cp, ep, micro-batch) the mildest change after which
    training_memory says the stage fits is offered (up to three). When no single change fits, each knob's
    strongest change that shrinks the largest item is printed with what the stage would still need.
    """
    items = sorted(breakdown.items().items(), key=lambda kv: kv[1], reverse=True)
    head = (
        f"stage {breakdown.stage_index} needs {breakdown.total / 1e9:.1f} GB of {capacity_bytes / 1e9:.1f} GB"
    )
    if breakdown.total <= capacity_bytes:
        return f"{head}: fits with {(capacity_bytes - breakdown.total) / 1e9:.1f} GB free"
    detail = ", ".join(f"{name} {value / 1e9:.1f} GB" for name, value in items[:2] if value > 0)
    largest, largest_bytes = items[0]
    fitting: list[tuple[int, float, str]] = []  # (group order, total, label): the mildest fit per knob
    shrinking: list[tuple[float, str]] = []
    for order, group in enumerate(_candidates(breakdown.spec, breakdown.settings)):
        best_shrink = None
        for label, change in group:
            try:
                after = _worst_stage(breakdown, change)
            except ConfigError:
                continue  # this model cannot run that way (e.g. pp not dividing the layers)
            if after.total <= capacity_bytes:
                fitting.append((order, after.total, label))
                break
            shrinks = after.items()[largest] < largest_bytes * (1 - 1e-9)
            if shrinks and (best_shrink is None or after.total < best_shrink[0]):
                best_shrink = (after.total, label)
        else:
            if best_shrink is not None:
                shrinking.append(best_shrink)
    if fitting:
        labels = [label for _, _, label in sorted(fitting)[:3]]
        return f"{head}: {detail}; try {_or(labels)}"
    if not shrinking:
        return f"{head}: {detail}; no single change of recompute, ZeRO or parallelism shrinks {largest}"
    closest = [f"{label} ({total / 1e9:.0f} GB)" for total, label in sorted(shrinking)[:3]]
    return f"{head}: {detail}; no single change fits: combine them (alone, {_or(closest)})"


def _worst_stage(breakdown: MemoryBreakdown, change: Mapping[str, Any]) -> MemoryBreakdown:
    """The fullest stage after ``change``: a new pp (or recompute) can make another stage the worst."""
    settings = {**breakdown.settings, **change}
    return max(
        (training_memory(breakdown.spec, **{**settings, "stage_index": i}) for i in range(settings["pp"])),
        key=lambda mem: mem.total,
    )


def _or(labels: list[str]) -> str:
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " or " + labels[-1]
