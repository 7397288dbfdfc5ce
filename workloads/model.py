"""Transformer model description and its arithmetic: parameters, FLOPs, per-layer ops and collectives.

This module knows models and parallelism, never hardware: every quantity is a count (parameters), FLOP or
byte, per GPU after sharding. The simulator turns ops into time and comms into collectives. The counting
conventions (6N + attention model FLOPs, flash-style attention, nccl-tests byte sizes) are written out in
docs/models.md; the code follows that document.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import Any

import yaml

from simcore.errors import ConfigError
from simcore.schema import MAX_COUNT

FFN_KINDS = ("gelu", "swiglu", "squared_relu")
POSITION_KINDS = ("rope", "alibi", "learned")
RECOMPUTE_KINDS = ("none", "selective", "full")
# Megatron-Core's selective-recompute modules (--recompute-modules) racksim models: the attention core
# (Megatron's default and Korthikanti's selective), the two input norms, the MoE experts' activation
# function, the dense MLP (fc1 and its activation), MLA's up-projections (Q, K, V from the latents), the
# whole MoE block (router, dispatch, experts, combine: only its input kept).
RECOMPUTE_MODULES = ("core_attn", "layernorm", "moe_act", "mlp", "mla_up_proj", "moe")
PHASES = ("fwd", "bwd")
# The loader builds per-layer tables, so a mistyped layer count (1e18) would hang it; the deepest presets
# have 126-128 layers.
MAX_LAYERS = 10_000
# Megatron's hybrid_override_pattern: one character per block, each block a pre-norm and one mixer.
HYBRID_BLOCKS = MappingProxyType({"M": "mamba", "*": "attention", "-": "mlp", "E": "moe"})

# Old or informal names that map to a preset file named after the printed parameter count.
_PRESET_ALIASES = (("gpt-1t", "gpt-1008b"),)

# Nominal FLOPs per element of the memory-bound kernels: they never decide the time (bytes do), but a
# non-zero count keeps hardware-FLOP totals honest.
_NORM_FLOPS_PER_ELEMENT = 5.0
_ACT_FLOPS_PER_ELEMENT = MappingProxyType({"gelu": 8.0, "swiglu": 5.0, "squared_relu": 2.0})
_SOFTMAX_XENT_FLOPS_PER_ELEMENT = 5.0
_XENT_FWD_BYTES = 22.0  # per logit: 16-bit read, fp32 copy, max pass, exp + sum, probabilities
_XENT_BWD_BYTES = 6.0  # per logit: read fp32 probabilities, write the 16-bit gradient
# Fused cross-entropy (flash-attn / Liger / TE style): one online max + sum-exp pass over the 16-bit
# logits, a second that writes the 16-bit gradient in place (2 + 2 + 2 B); backward scales it in place.
_FUSED_XENT_FWD_BYTES = 6.0
_FUSED_XENT_BWD_BYTES = 4.0
_ADAM_FLOPS_PER_PARAM = 16.0
# FlashAttention-2 backward runs 5 matmuls against the forward's 2 (it recomputes the scores).
_FLASH_BWD_FLOP_FACTOR = 2.5
# The chunked SSD scan's backward (mamba_ssm's _mamba_chunk_scan_combined_bwd) recomputes the chunk states
# and the C·Bᵀ blocks, then runs the gradient products for x, B, C and dt: ~2.5x the forward, as flash.
_SSD_BWD_FLOP_FACTOR = 2.5
# fp32 intermediates of the SSD kernels: chunk states (written, read by the state passing, written again,
# read by the output kernel) and the C·Bᵀ blocks (written, read).
_SSD_STATE_BYTES = 4.0
# Depthwise causal conv: a multiply-add per tap, then SiLU (~4 FLOPs).
_CONV_SILU_FLOPS = 4.0


# --------------------------------------------------------------------------------------------------
# Model description
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class MoESpec:
    """Mixture-of-experts FFN: which layers are sparse and how big the experts are."""

    experts: int
    top_k: int
    expert_ffn_hidden: int
    shared_experts: int = 0
    dense_layers: int = 0  # the first `dense_layers` layers use a dense FFN
    imbalance: float = 1.0  # tokens on the busiest expert-parallel rank / the mean (>= 1)
    dense_ffn_hidden: int | None = None  # FFN width of the dense layers; None = ModelSpec.ffn_hidden
    # Group-limited routing (DeepSeek-V3's node-limited routing): the experts form `route_groups` equal
    # groups and a token picks its top_k experts among its best `route_group_topk` groups (0 = no limit).
    route_groups: int = 1
    route_group_topk: int = 0
    # Token-drop MoE: each expert takes at most capacity_factor x its mean share of the routed tokens and
    # its input is padded to that capacity (static shapes: no host synchronisation per layer). None =
    # dropless (Megatron's default): the busiest rank takes `imbalance` x its share and the host reads the
    # tokens-per-expert counts every layer.
    capacity_factor: float | None = None
    # LatentMoE (Nemotron 3 Super / Ultra; Megatron's moe_latent_size): routed experts work in this width;
    # fc1_latent_proj (hidden -> latent) runs before the dispatch and fc2_latent_proj after the combine, so
    # the all-to-all carries latent-wide tokens. None = experts read and write the hidden state.
    latent: int | None = None

    @property
    def load_factor(self) -> float:
        """Token copies the busiest expert-parallel rank computes and receives, relative to the mean."""
        return self.imbalance if self.capacity_factor is None else self.capacity_factor

    @property
    def dropless(self) -> bool:
        return self.capacity_factor is None


@dataclass(frozen=True, kw_only=True)
class MLASpec:
    """Multi-head latent attention (DeepSeek-V2/V3, Kimi K2): low-rank Q and compressed KV."""

    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    q_lora_rank: int = 0  # 0 = queries projected directly from the hidden state


@dataclass(frozen=True, kw_only=True)
class MambaSpec:
    """Mamba-2 mixer (Dao & Gu 2024, state-space duality) as Megatron-Core's MambaMixer builds it: in_proj
    to z, x, B, C and dt; a causal depthwise conv over x, B, C; the chunked SSD scan; a gated RMSNorm;
    out_proj. ``heads`` x ``head_dim`` is the inner width; B and C are shared by the heads of a group."""

    heads: int
    head_dim: int
    state: int  # N: the state size per head channel
    groups: int = 1
    conv_kernel: int = 4
    chunk: int = 128  # SSD chunk length Q (the block size of its quadratic, attention-like part)

    @property
    def inner(self) -> int:
        return self.heads * self.head_dim

    @property
    def conv_channels(self) -> int:
        """Channels the depthwise conv runs over: x, B and C."""
        return self.inner + 2 * self.groups * self.state

    @property
    def in_proj_width(self) -> int:
        """Output width of in_proj: z, x, B, C and one dt per head."""
        return 2 * self.inner + 2 * self.groups * self.state + self.heads


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """A decoder-only transformer, as in the `model:` block of a workload spec (DESIGN.md)."""

    name: str
    layers: int
    hidden: int
    ffn_hidden: int
    heads: int
    kv_heads: int
    vocab: int
    seq_len: int
    ffn: str
    head_dim: int | None = None  # None = hidden // heads (filled in at construction)
    moe: MoESpec | None = None
    mla: MLASpec | None = None
    tied_embeddings: bool = False
    bias: bool = False  # linear layers and norms carry biases (GPT-2/3, Megatron GPT, MPT yamls)
    position_embedding: str = "rope"  # rope | alibi | learned (learned adds seq_len x hidden params)
    qk_norm: bool = False  # RMSNorm over each query and key head before RoPE (Qwen3, OLMo 2, Gemma 3)
    # Multi-token prediction (DeepSeek-V3 §2.2): modules after the last layer, each one more transformer
    # layer (the last layer's kind) predicting one more token through the shared output head.
    mtp_layers: int = 0
    # Megatron's mtp_use_repeated_layer: one MTP module's weights run at every depth (Nemotron 3 Super,
    # Ultra and 3.5 Lightning train 2 depths of one shared module).
    mtp_shared: bool = False
    # Sliding-window attention: a windowed layer's query attends to its last `sliding_window` tokens only.
    # Every `full_attention_every`-th layer (1-based) keeps full causal attention (GPT-OSS: 2, Gemma 3: 6);
    # 0 = every layer is windowed (Mistral 7B v0.1). None = no window.
    sliding_window: int | None = None
    full_attention_every: int = 0
    # Hybrid models (Nemotron-H, Nemotron 3): one block per character of Megatron's hybrid_override_pattern
    # (M Mamba-2, * attention, - dense MLP, E MoE), each a pre-norm and a single mixer. None = every layer
    # is a transformer layer (attention + FFN).
    hybrid_pattern: str | None = None
    mamba: MambaSpec | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if self.head_dim is None:
            object.__setattr__(self, "head_dim", self.hidden // self.heads)

    def attention_window(self, layer_index: int) -> int | None:
        """Keys a query of this layer attends to at most (None = the whole causal prefix)."""
        if self.sliding_window is None:
            return None
        every = self.full_attention_every
        if every and (layer_index + 1) % every == 0:
            return None
        return self.sliding_window

    @property
    def qk_head_dim(self) -> int:
        """Per-head width of queries and keys (MLA: no-PE part + RoPE part)."""
        if self.mla is not None:
            return self.mla.qk_nope_head_dim + self.mla.qk_rope_head_dim
        return int(self.head_dim or 0)

    @property
    def v_head_dim(self) -> int:
        """Per-head width of values and of the attention output."""
        if self.mla is not None:
            return self.mla.v_head_dim
        return int(self.head_dim or 0)

    def is_moe_layer(self, layer_index: int) -> bool:
        """True when layer `layer_index` (0-based) has a routed-expert FFN."""
        if self.moe is None:
            return False
        if self.hybrid_pattern is not None:
            return self.hybrid_pattern[layer_index] == "E"
        return layer_index >= self.moe.dense_layers

    def layer_kind(self, layer_index: int) -> str:
        """``transformer`` (attention + FFN) for an ordinary model; a hybrid block's one mixer otherwise:
        ``mamba``, ``attention``, ``mlp`` or ``moe``."""
        if self.hybrid_pattern is None:
            return "transformer"
        return HYBRID_BLOCKS[self.hybrid_pattern[layer_index]]

    def has_attention(self, layer_index: int) -> bool:
        return self.layer_kind(layer_index) in ("transformer", "attention")

    def has_ffn(self, layer_index: int) -> bool:
        return self.layer_kind(layer_index) in ("transformer", "mlp", "moe")

    def is_mamba_layer(self, layer_index: int) -> bool:
        return self.layer_kind(layer_index) == "mamba"

    def mtp_block_layers(self) -> tuple[int, ...]:
        """Layers whose kinds make up one MTP module: the last layer for a transformer; for a hybrid model an
        attention block and an FFN block ("*E" for Nemotron 3), those of its last attention and FFN blocks."""
        if self.hybrid_pattern is None:
            return (self.layers - 1,)
        attention = max((i for i in range(self.layers) if self.has_attention(i)), default=None)
        ffn = max((i for i in range(self.layers) if self.has_ffn(i)), default=None)
        return tuple(i for i in (attention, ffn) if i is not None)

    @property
    def mtp_stored_modules(self) -> int:
        """MTP modules with weights of their own: one when the depths share it."""
        return min(1, self.mtp_layers) if self.mtp_shared else self.mtp_layers

    @property
    def dense_ffn_hidden(self) -> int:
        """FFN width of the dense layers (all layers of a dense model)."""
        if self.moe is not None and self.moe.dense_ffn_hidden is not None:
            return self.moe.dense_ffn_hidden
        return self.ffn_hidden


# --------------------------------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------------------------------

_MODEL_REQUIRED = ("name", "layers", "hidden", "ffn_hidden", "heads", "kv_heads", "vocab", "seq_len", "ffn")
_MODEL_OPTIONAL = (
    "head_dim",
    "moe",
    "mla",
    "tied_embeddings",
    "bias",
    "qk_norm",
    "mtp_layers",
    "mtp_shared",
    "position_embedding",
    "sliding_window",
    "full_attention_every",
    "hybrid_pattern",
    "mamba",
    "source",
)
_MOE_REQUIRED = ("experts", "top_k", "expert_ffn_hidden")
_MOE_OPTIONAL = (
    "shared_experts",
    "dense_layers",
    "imbalance",
    "dense_ffn_hidden",
    "route_groups",
    "route_group_topk",
    "capacity_factor",
    "latent",
)
_MLA_REQUIRED = ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
_MLA_OPTIONAL = ("q_lora_rank",)
_MAMBA_REQUIRED = ("heads", "head_dim", "state")
_MAMBA_OPTIONAL = ("groups", "conv_kernel", "chunk")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str | None:
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.5)
    if not close:
        return None
    return "did you mean " + " or ".join(repr(c) for c in close) + "?"


class _Reader:
    """Reads one mapping of a spec, raising a ConfigError that names the file and field path."""

    def __init__(self, data: Any, *, file: str | None, path: str) -> None:
        self.file = file
        self.path = path
        if not isinstance(data, Mapping):
            raise ConfigError(
                "expected a mapping", file=file, path=path or None, value=data, expected="key: value pairs"
            )
        self.data = data

    def error(self, key: str, message: str, **kw: Any) -> ConfigError:
        return ConfigError(message, file=self.file, path=_join(self.path, key), **kw)

    def check_keys(self, required: tuple[str, ...], optional: tuple[str, ...]) -> None:
        allowed = required + optional
        for key in self.data:
            if key not in allowed:
                raise self.error(
                    str(key),
                    "unknown key",
                    expected="one of " + ", ".join(allowed),
                    hint=_did_you_mean(str(key), allowed),
                )
        for key in required:
            if key not in self.data:
                raise self.error(key, "missing required key", expected="a value for it")

    def get_int(
        self, key: str, *, minimum: int = 1, default: int | None = None, maximum: int = MAX_COUNT
    ) -> int:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, "must be an integer", value=value, expected=f"an integer >= {minimum}")
        if value < minimum:
            raise self.error(key, "out of range", value=value, expected=f"an integer >= {minimum}")
        if value > maximum:
            raise self.error(
                key, "implausibly large", value=value, expected=f"an integer from {minimum} to {maximum:,}"
            )
        return value

    def optional_int(self, key: str) -> int | None:
        if self.data.get(key) is None:
            return None
        return self.get_int(key)

    def get_number(self, key: str, *, minimum: float, default: float) -> float:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.error(key, "must be a finite number", value=value, expected=f"a number >= {minimum}")
        if not value >= minimum:
            raise self.error(key, "out of range", value=value, expected=f"a number >= {minimum}")
        return float(value)

    def optional_number(self, key: str, *, minimum: float) -> float | None:
        if self.data.get(key) is None:
            return None
        return self.get_number(key, minimum=minimum, default=minimum)

    def get_bool(self, key: str, *, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, "must be true or false", value=value, expected="true or false")
        return value

    def get_str(self, key: str, *, default: str | None = None, choices: tuple[str, ...] | None = None) -> str:
        value = self.data.get(key, default)
        if not isinstance(value, str) or not value:
            raise self.error(key, "must be a non-empty string", value=value, expected="a string")
        if choices is not None and value not in choices:
            raise self.error(
                key,
                "unknown value",
                value=value,
                expected="one of " + ", ".join(choices),
                hint=_did_you_mean(value, choices),
            )
        return value


def _load_moe(data: Any, *, file: str | None, path: str, layers: int) -> MoESpec:
    r = _Reader(data, file=file, path=path)
    r.check_keys(_MOE_REQUIRED, _MOE_OPTIONAL)
    experts = r.get_int("experts")
    top_k = r.get_int("top_k")
    if top_k > experts:
        raise r.error("top_k", f"top_k = {top_k} exceeds experts = {experts}", expected=f"1..{experts}")
    dense_layers = r.get_int("dense_layers", minimum=0, default=0)
    if dense_layers >= layers:
        raise r.error(
            "dense_layers",
            f"dense_layers = {dense_layers} leaves no MoE layer of {layers}",
            expected=f"0..{layers - 1}",
        )
    groups = r.get_int("route_groups", minimum=1, default=1)
    if experts % groups:
        raise r.error(
            "route_groups",
            f"route_groups = {groups} does not divide experts = {experts}",
            expected=f"a divisor of {experts}",
        )
    group_topk = r.get_int("route_group_topk", minimum=0, default=0)
    if group_topk > groups:
        raise r.error(
            "route_group_topk",
            f"route_group_topk = {group_topk} exceeds route_groups = {groups}",
            expected=f"0 (no limit) or 1..{groups}",
        )
    if group_topk and group_topk * (experts // groups) < top_k:
        raise r.error(
            "route_group_topk",
            f"{group_topk} group(s) of {experts // groups} experts cannot supply top_k = {top_k}",
            expected=f"at least {math.ceil(top_k / (experts // groups))}",
        )
    return MoESpec(
        experts=experts,
        top_k=top_k,
        expert_ffn_hidden=r.get_int("expert_ffn_hidden"),
        shared_experts=r.get_int("shared_experts", minimum=0, default=0),
        dense_layers=dense_layers,
        imbalance=r.get_number("imbalance", minimum=1.0, default=1.0),
        dense_ffn_hidden=r.optional_int("dense_ffn_hidden"),
        route_groups=groups,
        route_group_topk=group_topk,
        capacity_factor=r.optional_number("capacity_factor", minimum=1.0),
        latent=r.optional_int("latent"),
    )


def domains_per_token(moe: MoESpec, domains: int | Sequence[int]) -> float:
    """Expected number of distinct expert-parallel domains (scale-up domains) holding at least one of a
    token's top_k experts, under uniform routing within the groups a token may use (the force-balanced
    routing of benchmarks).

    ``domains`` is a count (the experts split evenly) or the experts each domain holds, in order: experts
    lie in contiguous blocks over the EP ranks, so a 72-GPU domain may hold an uneven share. Exact for any
    layout: for each domain, the chance that none of the k picks lands on it is averaged over the sets of
    routing groups a token can choose (counted by how many of the domain's experts they contain).
    DeepSeek-V3 on 8 domains: 8 groups, 4 per token -> 3.6 of 8, against 5.3 without the limit.
    """
    return float(sum(domain_touch_probabilities(moe, domains)))


def domain_touch_probabilities(moe: MoESpec, domains: int | Sequence[int]) -> list[float]:
    """P(a token reaches domain j) for each domain (see ``domains_per_token``)."""
    e, k = moe.experts, moe.top_k
    if isinstance(domains, int):
        if domains < 1 or e % domains:
            raise ValueError(f"{domains} domains do not split {e} experts evenly")
        sizes = [e // domains] * domains
    else:
        sizes = [int(n) for n in domains]
    if sum(sizes) != e or min(sizes) < 1:
        raise ValueError(f"domain sizes {sizes} do not cover {e} experts")
    g_all = moe.route_groups
    g_pick = moe.route_group_topk or g_all
    per_group = e // g_all
    pool = g_pick * per_group  # experts a token chooses among
    sets = math.comb(g_all, g_pick)
    out: list[float] = []
    start = 0
    for size in sizes:
        end = start + size
        # experts of this domain in each routing group
        overlap = [max(0, min(end, (i + 1) * per_group) - max(start, i * per_group)) for i in range(g_all)]
        # ways[c][t]: sets of c groups holding t of the domain's experts
        ways: list[dict[int, int]] = [dict() for _ in range(g_pick + 1)]
        ways[0][0] = 1
        for o in overlap:
            for c in range(g_pick - 1, -1, -1):
                for t, n in ways[c].items():
                    ways[c + 1][t + o] = ways[c + 1].get(t + o, 0) + n
        miss = sum(n * math.comb(pool - t, k) for t, n in ways[g_pick].items()) / (sets * math.comb(pool, k))
        out.append(1.0 - miss)
        start = end
    return out


def _load_mla(data: Any, *, file: str | None, path: str) -> MLASpec:
    r = _Reader(data, file=file, path=path)
    r.check_keys(_MLA_REQUIRED, _MLA_OPTIONAL)
    return MLASpec(
        q_lora_rank=r.get_int("q_lora_rank", minimum=0, default=0),
        kv_lora_rank=r.get_int("kv_lora_rank"),
        qk_nope_head_dim=r.get_int("qk_nope_head_dim"),
        qk_rope_head_dim=r.get_int("qk_rope_head_dim"),
        v_head_dim=r.get_int("v_head_dim"),
    )


def _load_mamba(data: Any, *, file: str | None, path: str) -> MambaSpec:
    r = _Reader(data, file=file, path=path)
    r.check_keys(_MAMBA_REQUIRED, _MAMBA_OPTIONAL)
    heads = r.get_int("heads")
    groups = r.get_int("groups", default=1)
    if heads % groups:
        raise r.error(
            "groups",
            f"groups = {groups} does not divide heads = {heads}",
            expected=f"a divisor of {heads} (B and C are shared by the heads of a group)",
        )
    return MambaSpec(
        heads=heads,
        head_dim=r.get_int("head_dim"),
        state=r.get_int("state"),
        groups=groups,
        conv_kernel=r.get_int("conv_kernel", default=4),
        chunk=r.get_int("chunk", default=128),
    )


def _check_hybrid(r: _Reader, data: Any, layers: int, moe: MoESpec | None, mamba: MambaSpec | None) -> None:
    """A hybrid pattern names one block per layer, and the blocks it uses have their sections."""
    pattern = data.get("hybrid_pattern")
    if pattern is None:
        if mamba is not None:
            raise r.error(
                "mamba",
                "a mamba section without hybrid_pattern: racksim does not know where the Mamba blocks go",
                expected="hybrid_pattern: a string of M (Mamba-2), * (attention), - (MLP), E (MoE) blocks",
            )
        return
    symbols = "".join(HYBRID_BLOCKS)
    if isinstance(pattern, str) and set(pattern) & set("|/"):
        raise r.error(
            "hybrid_pattern",
            "Megatron's pipeline-stage ('|') and MTP ('/') separators are not read here",
            value=pattern,
            expected="the model's blocks only; stage boundaries go in parallelism.layers_per_chunk and MTP "
            "depths in mtp_layers (a hybrid MTP module is an attention and an FFN block)",
        )
    if not isinstance(pattern, str) or not pattern or set(pattern) - set(symbols):
        bad = sorted(set(pattern) - set(symbols)) if isinstance(pattern, str) else []
        raise r.error(
            "hybrid_pattern",
            "unknown block symbol(s) " + " ".join(repr(c) for c in bad)
            if bad
            else "must be a non-empty string",
            value=pattern,
            expected=f"characters of {symbols!r}: M Mamba-2, * attention, - MLP, E MoE (Megatron's "
            "hybrid_override_pattern)",
        )
    if len(pattern) != layers:
        raise r.error(
            "layers",
            f"hybrid_pattern has {len(pattern)} blocks and layers = {layers}",
            value=layers,
            expected=f"layers: {len(pattern)} (one per block of hybrid_pattern)",
        )
    for symbol, section, spec in (("M", "mamba", mamba), ("E", "moe", moe)):
        if symbol in pattern and spec is None:
            raise r.error(
                section,
                f"hybrid_pattern has {symbol!r} blocks and no {section} section",
                expected=f"a {section}: mapping",
            )
        if symbol not in pattern and spec is not None:
            raise r.error(
                section,
                f"a {section} section but no {symbol!r} block in hybrid_pattern",
                expected=f"{symbol!r} blocks in hybrid_pattern, or no {section} section",
            )
    if moe is not None and moe.dense_layers:
        raise r.error(
            "moe.dense_layers",
            "in a hybrid model hybrid_pattern says which blocks are dense MLP ('-') and which MoE ('E')",
            value=moe.dense_layers,
            expected="0 (or no dense_layers)",
        )
    if data.get("mtp_layers") and ("*" not in pattern or not set(pattern) & set("-E")):
        raise r.error(
            "mtp_layers",
            "a hybrid model's MTP module is an attention block and an FFN block (Nemotron 3's \"*E\")",
            value=data["mtp_layers"],
            expected="0, or a hybrid_pattern with '*' and '-' or 'E' blocks",
        )


def load_model(data: Any, *, file: str | None = None, path: str = "model") -> ModelSpec:
    """Validate a `model:` mapping and build a ModelSpec; the first problem raises a ConfigError."""
    r = _Reader(data, file=file, path=path)
    r.check_keys(_MODEL_REQUIRED, _MODEL_OPTIONAL)
    layers = r.get_int("layers", maximum=MAX_LAYERS)
    hidden = r.get_int("hidden")
    heads = r.get_int("heads")
    kv_heads = r.get_int("kv_heads")
    if kv_heads > heads or heads % kv_heads:
        raise r.error(
            "kv_heads",
            f"kv_heads = {kv_heads} does not divide heads = {heads}",
            expected="a divisor of heads (grouped-query attention)",
        )
    head_dim = r.optional_int("head_dim")
    if head_dim is None and hidden % heads:
        raise r.error(
            "heads",
            f"heads = {heads} does not divide hidden = {hidden}",
            expected="a divisor of hidden",
            hint="or give head_dim explicitly",
        )
    moe = (
        None
        if data.get("moe") is None
        else _load_moe(data["moe"], file=file, path=_join(path, "moe"), layers=layers)
    )
    mla = None if data.get("mla") is None else _load_mla(data["mla"], file=file, path=_join(path, "mla"))
    mamba = (
        None
        if data.get("mamba") is None
        else _load_mamba(data["mamba"], file=file, path=_join(path, "mamba"))
    )
    _check_hybrid(r, data, layers, moe, mamba)
    if mla is not None and kv_heads != heads:
        raise r.error(
            "kv_heads",
            "multi-head latent attention decompresses K and V per head",
            value=kv_heads,
            expected=f"kv_heads = heads = {heads}",
        )
    if mla is not None and r.get_bool("qk_norm", default=False):
        raise r.error(
            "qk_norm",
            "multi-head latent attention normalizes its q and kv latents (mla), not each head",
            value=True,
            expected="qk_norm: false (or no mla section)",
        )
    window = r.optional_int("sliding_window")
    full_every = r.get_int("full_attention_every", minimum=0, default=0)
    if full_every and window is None:
        raise r.error(
            "full_attention_every",
            "full_attention_every only applies to a model with sliding_window",
            value=full_every,
            expected="sliding_window: TOKENS as well, or no full_attention_every",
        )
    source = data.get("source", "")
    if not isinstance(source, str):
        raise r.error("source", "must be a string", value=source, expected="a citation")
    return ModelSpec(
        name=r.get_str("name"),
        layers=layers,
        hidden=hidden,
        ffn_hidden=r.get_int("ffn_hidden"),
        heads=heads,
        kv_heads=kv_heads,
        vocab=r.get_int("vocab"),
        seq_len=r.get_int("seq_len"),
        ffn=r.get_str("ffn", choices=FFN_KINDS),
        head_dim=head_dim,
        moe=moe,
        mla=mla,
        tied_embeddings=r.get_bool("tied_embeddings", default=False),
        bias=r.get_bool("bias", default=False),
        qk_norm=r.get_bool("qk_norm", default=False),
        mtp_layers=r.get_int("mtp_layers", minimum=0, default=0),
        mtp_shared=r.get_bool("mtp_shared", default=False),
        position_embedding=r.get_str("position_embedding", default="rope", choices=POSITION_KINDS),
        sliding_window=window,
        full_attention_every=full_every,
        hybrid_pattern=data.get("hybrid_pattern"),
        mamba=mamba,
        source=source,
    )


def model_to_mapping(model: ModelSpec) -> dict[str, Any]:
    """The model as a spec mapping (None fields dropped), so presets can be overridden field by field."""
    return {k: v for k, v in dataclasses.asdict(model).items() if v is not None}


def resolve_model_section(model_data: Any, preset: Any = None, *, file: str | None = None) -> ModelSpec:
    """A workload's model: a preset name, an inline mapping, or a mapping that starts from ``preset:`` and
    overrides fields (nested sections such as ``moe`` merge key by key)."""
    if model_data is not None and preset is not None:
        raise ConfigError(
            "the model is given twice",
            file=file,
            path="preset",
            value=preset,
            expected="either `model:` (a preset name or a mapping) or `preset: NAME`, not both",
        )
    if isinstance(model_data, str):
        return load_preset(model_data, file=file, path="model")
    if model_data is None and preset is None:
        raise ConfigError(
            "missing model", file=file, path="model", expected="a model mapping or `preset: NAME`"
        )
    if model_data is None:
        return load_preset(preset, file=file, path="preset")
    if not isinstance(model_data, Mapping):
        raise ConfigError(
            "must be a mapping or a preset name",
            file=file,
            path="model",
            value=model_data,
            expected="a model mapping or a preset name",
        )
    if "preset" not in model_data:
        return load_model(model_data, file=file, path="model")
    base = load_preset(model_data["preset"], file=file, path="model.preset")
    merged = model_to_mapping(base)
    if (
        ("hidden" in model_data or "heads" in model_data)
        and "head_dim" not in model_data
        and base.head_dim == base.hidden // base.heads
    ):  # the preset's head_dim is the hidden // heads default: derive it again from the new sizes
        merged.pop("head_dim", None)
    for key, value in model_data.items():
        if key == "preset":
            continue
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}  # e.g. `moe: {capacity_factor: 1.0}` on a preset
        else:
            merged[key] = value
    if "sliding_window" in model_data and model_data["sliding_window"] is None:
        # `sliding_window: null` turns the preset's window off, with the layer pattern that belonged to it
        merged.pop("sliding_window", None)
        if "full_attention_every" not in model_data:
            merged.pop("full_attention_every", None)
    return load_model(merged, file=file, path="model")


def _preset_dir() -> Any:
    return resources.files(__package__) / "presets"


def list_presets() -> list[str]:
    """Names of the bundled model presets (workloads/presets/*.yaml), sorted."""
    return sorted(p.name[: -len(".yaml")] for p in _preset_dir().iterdir() if p.name.endswith(".yaml"))


def load_preset(name: Any, *, file: str | None = None, path: str = "preset") -> ModelSpec:
    """Load a bundled preset by name (e.g. ``llama3-405b``); an unknown name lists the close ones and is
    reported against ``file`` and ``path`` (the workload field that named it)."""
    names = list_presets()
    canonical = dict(_PRESET_ALIASES).get(name, name) if isinstance(name, str) else None
    if canonical not in names:
        raise ConfigError(
            "unknown model preset",
            file=file,
            path=path,
            value=name,
            expected="one of " + ", ".join(names),
            hint=_did_you_mean(str(name), names),
        )
    file = f"workloads/presets/{canonical}.yaml"
    try:
        data = yaml.safe_load((_preset_dir() / f"{canonical}.yaml").read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=file) from exc
    return load_model(data, file=file, path="")


# --------------------------------------------------------------------------------------------------
# Parameter counts
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerParams:
    """Parameters of one transformer layer, split the way parallelism shards them."""

    attention: int  # all attention projections (+ their biases and MLA latent norms)
    attention_tp_duplicated: int  # part of `attention` every TP rank holds whole (MLA down-projections)
    norms: int  # the two pre-norms
    dense_ffn: int  # dense MLP (0 on MoE layers)
    routed_experts: int  # all routed experts of the layer
    active_routed: int  # the top_k experts one token uses
    shared_experts: int
    router: int
    mamba: int = 0  # a Mamba-2 mixer (in_proj, conv, dt/A/D, gated norm, out_proj): all TP-sharded
    latent_proj: int = 0  # LatentMoE's fc1/fc2 latent projections (whole on every TP rank, as the router)

    @property
    def total(self) -> int:
        return (
            self.attention
            + self.mamba
            + self.norms
            + self.dense_ffn
            + self.routed_experts
            + self.shared_experts
            + self.router
            + self.latent_proj
        )

    @property
    def active(self) -> int:
        """Parameters one token touches: everything but the unselected routed experts."""
        return self.total - self.routed_experts + self.active_routed


def _ffn_matrix_params(spec: ModelSpec, ffn_hidden: int, io_width: int | None = None) -> int:
    """One MLP (dense, expert or shared expert): up (x2 when gated) and down projections, plus biases;
    ``io_width`` is what it reads and writes (the hidden size, or a LatentMoE expert's latent width)."""
    width = spec.hidden if io_width is None else io_width
    up_width = 2 * ffn_hidden if spec.ffn == "swiglu" else ffn_hidden
    params = width * up_width + ffn_hidden * width
    if spec.bias:
        params += up_width + width
    return params


def _norm_params(spec: ModelSpec, width: int) -> int:
    return width * (2 if spec.bias else 1)


def _attention_params(spec: ModelSpec) -> tuple[int, int]:
    """(all attention parameters, the TP-duplicated part)."""
    h, a = spec.hidden, spec.heads
    if spec.mla is not None:
        m = spec.mla
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        duplicated = h * (m.kv_lora_rank + m.qk_rope_head_dim) + m.kv_lora_rank  # kv down-proj + kv norm
        if m.q_lora_rank:
            duplicated += h * m.q_lora_rank + m.q_lora_rank  # q down-proj + q norm
            q_up = m.q_lora_rank * a * qk
        else:
            q_up = h * a * qk
        sharded = q_up + m.kv_lora_rank * a * (m.qk_nope_head_dim + m.v_head_dim) + a * m.v_head_dim * h
        return duplicated + sharded, duplicated
    d = int(spec.head_dim or 0)
    qkv_width = (a + 2 * spec.kv_heads) * d
    params = h * qkv_width + a * d * h
    if spec.bias:
        params += qkv_width + h
    if spec.qk_norm:  # one norm of width d for the queries and one for the keys, shared by the heads
        params += 2 * _norm_params(spec, d)
    return params, 0


def mla_up_proj_params(spec: ModelSpec) -> int:
    """Parameters of MLA's up-projections (Q from its latent, or from the hidden state without one; K's
    no-RoPE part and V from the KV latent): what ``recompute_modules: [mla_up_proj]`` runs again."""
    m = spec.mla
    if m is None:
        return 0
    a, qk = spec.heads, m.qk_nope_head_dim + m.qk_rope_head_dim
    q_up = (m.q_lora_rank or spec.hidden) * a * qk
    return q_up + m.kv_lora_rank * a * (m.qk_nope_head_dim + m.v_head_dim)


def mamba_params(spec: ModelSpec) -> int:
    """One Mamba-2 mixer: in_proj (z, x, B, C, dt), the depthwise conv over x, B, C with its bias, dt_bias,
    A_log and D per head, the gated RMSNorm's weight and out_proj (Megatron-Core's MambaMixer; no
    projection biases)."""
    m = spec.mamba
    if m is None:
        return 0
    conv = m.conv_channels * (m.conv_kernel + 1)
    return spec.hidden * m.in_proj_width + conv + 3 * m.heads + m.inner + m.inner * spec.hidden


def layer_params(spec: ModelSpec, layer_index: int) -> LayerParams:
    """Parameter breakdown of layer `layer_index` (0-based); MoE layers follow `moe.dense_layers` (or the
    ``E`` blocks of a hybrid pattern, whose blocks have one pre-norm and one mixer each)."""
    if not 0 <= layer_index < spec.layers:
        raise IndexError(f"layer_index {layer_index} out of range for {spec.layers} layers")
    kind = spec.layer_kind(layer_index)
    norm = _norm_params(spec, spec.hidden)
    if kind == "mamba":
        return LayerParams(0, 0, norm, 0, 0, 0, 0, 0, mamba=mamba_params(spec))
    attention, duplicated = _attention_params(spec) if spec.has_attention(layer_index) else (0, 0)
    norms = 2 * norm if kind == "transformer" else norm
    moe = spec.moe
    if not spec.has_ffn(layer_index):
        return LayerParams(attention, duplicated, norms, 0, 0, 0, 0, 0)
    if moe is None or not spec.is_moe_layer(layer_index):
        return LayerParams(
            attention, duplicated, norms, _ffn_matrix_params(spec, spec.dense_ffn_hidden), 0, 0, 0, 0
        )
    expert = _ffn_matrix_params(spec, moe.expert_ffn_hidden, moe.latent)
    shared = _ffn_matrix_params(spec, moe.expert_ffn_hidden)
    router = spec.hidden * moe.experts + (moe.experts if spec.bias else 0)
    return LayerParams(
        attention=attention,
        attention_tp_duplicated=duplicated,
        norms=norms,
        dense_ffn=0,
        routed_experts=moe.experts * expert,
        active_routed=moe.top_k * expert,
        shared_experts=moe.shared_experts * shared,
        router=router,
        latent_proj=2 * spec.hidden * moe.latent if moe.latent else 0,
    )


def embedding_params(spec: ModelSpec) -> int:
    """Input token embedding (+ learned position embedding)."""
    params = spec.vocab * spec.hidden
    if spec.position_embedding == "learned":
        params += spec.seq_len * spec.hidden
    return params


def output_params(spec: ModelSpec) -> int:
    """Final norm + LM head; the head adds nothing when it is tied to the input embedding."""
    head = 0 if spec.tied_embeddings else spec.vocab * spec.hidden
    return _norm_params(spec, spec.hidden) + head


def non_embedding_params(spec: ModelSpec, *, active: bool = False) -> int:
    """All transformer layers (active = only what one token touches); excludes embeddings and head."""
    layers = (layer_params(spec, i) for i in range(spec.layers))
    return sum(p.active if active else p.total for p in layers)


def mtp_extra_params(spec: ModelSpec) -> int:
    """One MTP module beyond its transformer layer: the embedding and hidden-state norms, the 2h -> h
    projection (eh_proj) and the module's final norm (embedding and output head are the model's)."""
    return 2 * spec.hidden * spec.hidden + 3 * _norm_params(spec, spec.hidden)


def layer_param_split(spec: ModelSpec, layer_index: int, *, tp: int = 1, ep: int = 1) -> tuple[float, float]:
    """(dense, routed-expert) parameters one GPU holds for a layer: TP shards attention, Mamba mixers and
    dense MLPs (norms, routers, shared experts and MLA down-projections are whole on every TP rank), EP
    shards the routed experts."""
    p = layer_params(spec, layer_index)
    whole = p.attention_tp_duplicated + p.norms + p.router + p.latent_proj + p.shared_experts
    sharded = p.attention - p.attention_tp_duplicated + p.mamba + p.dense_ffn
    return sharded / tp + whole, p.routed_experts / ep


def mtp_param_split(spec: ModelSpec, *, tp: int = 1, ep: int = 1) -> tuple[float, float]:
    """``layer_param_split`` of one MTP module: its layer(s) (``mtp_block_layers``), its norms and its
    column-parallel eh_proj."""
    dense = experts = 0.0
    for layer in spec.mtp_block_layers():
        d, e = layer_param_split(spec, layer, tp=tp, ep=ep)
        dense, experts = dense + d, experts + e
    proj = 2 * spec.hidden * spec.hidden
    return dense + proj / tp + mtp_extra_params(spec) - proj, experts


def mtp_params(spec: ModelSpec, *, active: bool = False) -> int:
    """MTP modules, each its layer(s) (``mtp_block_layers``) plus ``mtp_extra_params``: the parameters
    stored (one module when the depths share it), or with ``active`` those every token runs through at
    every depth (what the model FLOPs count)."""
    blocks = [layer_params(spec, i) for i in spec.mtp_block_layers()]
    module = sum(b.active if active else b.total for b in blocks) + mtp_extra_params(spec)
    return (spec.mtp_layers if active else spec.mtp_stored_modules) * module


def total_params(spec: ModelSpec) -> int:
    """Every parameter of the model, counted once (tied embeddings once; MTP modules included)."""
    return embedding_params(spec) + non_embedding_params(spec) + output_params(spec) + mtp_params(spec)


def active_params(spec: ModelSpec) -> int:
    """Parameters used per token: total minus the unselected routed experts (embeddings included)."""
    return embedding_params(spec) + non_embedding_params(spec, active=True) + output_params(spec)


# --------------------------------------------------------------------------------------------------
# FLOP conventions (docs/models.md)
# --------------------------------------------------------------------------------------------------


def _attention_core_flops_fwd_per_token(spec: ModelSpec, seq_len: int, window: int | None = None) -> float:
    """QK^T and PV of one layer for one query token, counting twice the keys a causal query attends to: the
    full (unmasked) `seq_len` for an ordinary layer, ~2w for a sliding-window one (one rule for both)."""
    keys = 2.0 * causal_keys_per_query(seq_len, window)
    return 2.0 * keys * spec.heads * (spec.qk_head_dim + spec.v_head_dim)


def _attention_fwd_all_layers(spec: ModelSpec, seq_len: int) -> float:
    """``_attention_core_flops_fwd_per_token`` summed over the layers with attention (their windows)."""
    return sum(
        _attention_core_flops_fwd_per_token(spec, seq_len, spec.attention_window(i))
        for i in range(spec.layers)
        if spec.has_attention(i)
    )


def ssd_scan_flops_per_token(spec: ModelSpec, seq_len: int | None = None) -> float:
    """Forward FLOPs of one Mamba-2 layer's chunked SSD scan per token (Dao & Gu 2024 §6, chunk length Q,
    state N, head dim P): C·Bᵀ inside a chunk, 2·Q·N per group; its masked product with X, 2·Q·P per head;
    the chunk states Bᵀ·X and the output C·h from the carried states, 2·N·P each per head. Like attention's
    s x s, the Q x Q blocks count whole (the kernels compute them whole). A sequence shorter than a chunk
    is one chunk."""
    return ssd_scan_cost(spec, seq_len=seq_len)[0]


def ssd_scan_cost(
    spec: ModelSpec, *, tp: int = 1, seq_len: int | None = None, dtype_bytes: float = 2
) -> tuple[float, float]:
    """(FLOPs, HBM bytes) per token of one Mamba-2 layer's chunked SSD scan on one of ``tp`` GPUs (whole
    heads and groups each): 16-bit x, B, C (read by two kernels each) and dt in, y out; the fp32 chunk states
    written, passed, rewritten and read, and the C·Bᵀ blocks written and read. A sequence shorter than a
    chunk is one chunk."""
    m = spec.mamba
    if m is None:
        return 0.0, 0.0
    heads, groups = m.heads / tp, m.groups / tp
    q = min(m.chunk, spec.seq_len if seq_len is None else seq_len)
    inner, bc = heads * m.head_dim, 2.0 * groups * m.state
    nbytes = dtype_bytes * (3.0 * inner + 2.0 * bc + heads) + _SSD_STATE_BYTES * (
        4.0 * heads * m.head_dim * m.state / q + 2.0 * groups * q
    )
    flops = 2.0 * q * m.state * groups + heads * (2.0 * q * m.head_dim + 4.0 * m.state * m.head_dim)
    return flops, nbytes


def ssd_scan_bwd_bytes(
    spec: ModelSpec, *, tp: int = 1, seq_len: int | None = None, dtype_bytes: float = 2
) -> float:
    """HBM bytes per token of the gated SSD scan's backward on one of ``tp`` GPUs, kernel by kernel as
    mamba_ssm's _mamba_chunk_scan_combined_bwd runs them for Megatron's memory-efficient path (z given, so
    the gate's backward is in the scan). Per token: ``I`` = local inner width, ``S`` = I·N/Q chunk-state
    elements, ``GN`` = local groups x N (B or C), ``CB`` = local groups x Q, ``H`` local heads; ``a`` the
    16-bit size, ``f`` = 4 (fp32 intermediates). Counted once per kernel that reads or writes a tensor; a
    group's B, C and C·Bᵀ shared by its heads count once (caches catch the re-reads). The dt-sized terms
    are kept for completeness; they are tiny."""
    m = spec.mamba
    if m is None:
        return 0.0
    a, f = float(dtype_bytes), _SSD_STATE_BYTES
    q = min(m.chunk, spec.seq_len if seq_len is None else seq_len)
    h = m.heads / tp
    inner = h * m.head_dim
    s = inner * m.state / q
    gn = m.groups / tp * m.state
    cb = m.groups / tp * q
    kernels = (
        h * (a + 2.0 * f),  # chunk cumsum again: dt in, dA_cumsum and dt out (fp32)
        2.0 * gn * a + cb * f,  # C·Bᵀ blocks again (fp32)
        gn * a + inner * a + 2.0 * h * f + s * f,  # chunk states again: B, x in, fp32 states out
        2.0 * s * f,  # state passing again (fp32 in and out)
        6.0 * inner * a,  # gate: x, z, ungated y, dout in; dz and the ungated dout out
        gn * a + inner * a + s * f,  # dstates from C and dout (fp32)
        s * (2.0 * f + 2.0 * a),  # state passing backward: states, dstates in; both out in 16 bit
        4.0 * inner * a + cb * f + gn * a + s * a + h * f,  # dx, ddt, dD: x, dout twice, dx; C·Bᵀ; B; dstates
        inner * a + s * a + gn * a + 3.0 * gn * f,  # dB: x, dstates, B; fp32 partials written and summed
        inner * a + s * a + gn * a + 3.0 * gn * f,  # dC: dout, states, C; fp32 partials written and summed
        2.0 * inner * a + 3.0 * cb * f,  # d(C·Bᵀ): x, dout; fp32 partials written and summed
        2.0 * (2.0 * gn * a + gn * f + cb * f),  # dB, dC += d(C·Bᵀ) products: B or C, d(C·Bᵀ), residual
        2.0 * inner * a + cb * f + h * f,  # ddA from x, dout and C·Bᵀ
    )
    return sum(kernels)


def mamba_state_bytes(spec: ModelSpec, *, tp: int = 1, dtype_bytes: float = 2) -> float:
    """One sequence's recurrent state in one Mamba-2 layer on one of ``tp`` GPUs, what serving keeps in place
    of a KV cache: the SSM state (heads x head_dim x state, fp32 as mamba_ssm_cache_dtype) and the conv's
    last conv_kernel - 1 inputs of x, B and C."""
    m = spec.mamba
    if m is None:
        return 0.0
    ssm = m.heads / tp * m.head_dim * m.state * _SSD_STATE_BYTES
    return ssm + (m.conv_kernel - 1) * m.conv_channels / tp * dtype_bytes


def _mixer_core_fwd_all_layers(spec: ModelSpec, seq_len: int) -> float:
    """Attention cores and SSD scans of all layers, forward, per token: the non-parameter FLOPs."""
    mamba_layers = sum(1 for i in range(spec.layers) if spec.is_mamba_layer(i))
    return _attention_fwd_all_layers(spec, seq_len) + mamba_layers * ssd_scan_flops_per_token(spec, seq_len)


# Key-block width of flash attention kernels (FlashAttention-2/3, cuDNN: 128 keys per tile on Hopper and
# Blackwell). A sliding window skips whole tiles outside its band; the tiles its edges cut run in full.
FLASH_TILE = 128


def causal_keys_per_query(seq_len: float, window: int | None = None) -> float:
    """Mean keys a query attends to under the causal mask (and a sliding window), continuous: s/2 without a
    window, w - w²/(2s) with one (w < s), which meets s/2 at w = s and never grows as the window shrinks."""
    if window is None or window >= seq_len:
        return 0.5 * seq_len
    return window - window * window / (2.0 * seq_len)


def flash_keys_per_query(seq_len: float, window: int | None = None) -> float:
    """Keys a flash kernel computes per query: the causal band plus the tiles a window's edges cut (one tile
    more per query block: a 128-token window runs ~2x its band), never more than the whole causal triangle."""
    band = causal_keys_per_query(seq_len, window)
    if window is None:
        return band
    return min(band + FLASH_TILE, 0.5 * seq_len)


def layer_attention_flops_per_token(
    spec: ModelSpec, seq_len: int | None = None, layer_index: int | None = None
) -> float:
    """Forward attention-core FLOPs of one layer per token (full s x s matrix, the model-FLOP convention;
    a sliding-window layer's band when ``layer_index`` names one)."""
    if layer_index is not None and not spec.has_attention(layer_index):
        return 0.0
    window = None if layer_index is None else spec.attention_window(layer_index)
    return _attention_core_flops_fwd_per_token(spec, spec.seq_len if seq_len is None else seq_len, window)


def layer_core_flops_per_token(spec: ModelSpec, seq_len: int | None, layer_index: int) -> float:
    """Forward FLOPs of one layer beyond its parameters (attention core or SSD scan) per token: what a full
    recompute of the layer runs again besides its GEMMs."""
    if spec.is_mamba_layer(layer_index):
        return ssd_scan_flops_per_token(spec, seq_len)
    return layer_attention_flops_per_token(spec, seq_len, layer_index)


def check_recompute_modules(
    modules: Any, *, file: str | None = None, path: str = "parallelism.recompute_modules"
) -> tuple[str, ...]:
    """The modules as a tuple; a ConfigError for an unknown name (with a did-you-mean) or an empty list."""
    if isinstance(modules, str) or not isinstance(modules, list | tuple) or not modules:
        raise ConfigError(
            "must be a non-empty list",
            file=file,
            path=path,
            value=modules,
            expected="a list of " + ", ".join(RECOMPUTE_MODULES),
        )
    for i, name in enumerate(modules):
        _check_name(name, RECOMPUTE_MODULES, "unknown recompute module", file=file, path=f"{path}[{i}]")
    return tuple(modules)


def check_recompute(recompute: str, *, file: str | None = None, path: str = "parallelism.recompute") -> None:
    """Raise a ConfigError unless `recompute` is none, selective or full."""
    _check_name(recompute, RECOMPUTE_KINDS, "unknown recompute mode", file=file, path=path)


def _check_name(value: Any, choices: tuple[str, ...], problem: str, *, file: str | None, path: str) -> None:
    """A ConfigError naming the choices (and the closest one) unless ``value`` is one of them."""
    if value not in choices:
        raise ConfigError(
            problem,
            file=file,
            path=path,
            value=value,
            expected="one of " + ", ".join(choices),
            hint=_did_you_mean(str(value), choices),
        )


def model_flops_per_token(spec: ModelSpec, seq_len: int | None = None) -> float:
    """Model FLOPs per trained token: 6 x (active non-embedding + LM-head params) + 6 x attention.

    The attention term is 6·layers·s·heads·(d_qk + d_v) = 12·l·s·d_attn for ordinary attention: the full
    s x s score matrix, causal mask NOT halving it (Megatron, PaLM, NeMo, llm-foundry count it this way).
    A hybrid model's Mamba-2 layers add 3 x their SSD scan (``ssd_scan_flops_per_token``), as attention
    layers add 3 x their core. No recompute. This is the numerator of ``model_tflops_per_gpu`` and MFU.
    """
    s = spec.seq_len if seq_len is None else seq_len
    dense = non_embedding_params(spec, active=True) + spec.vocab * spec.hidden
    # each MTP module: its layer and projection, the shared head once more, the last layer's attention
    dense += mtp_params(spec, active=True) + spec.mtp_layers * spec.vocab * spec.hidden
    attention = _mixer_core_fwd_all_layers(spec, s) + spec.mtp_layers * sum(
        layer_attention_flops_per_token(spec, s, i) for i in spec.mtp_block_layers()
    )
    return 6.0 * dense + 3.0 * attention


def hardware_flops_per_token(spec: ModelSpec, seq_len: int | None = None, recompute: str = "none") -> float:
    """Model FLOPs plus the forward work recomputed in the backward pass (same counting otherwise).

    selective: the attention core forward once more; full: the whole layer stack forward once more (the
    LM head is not recomputed, as in Megatron). Used for HFU.
    """
    check_recompute(recompute)
    s = spec.seq_len if seq_len is None else seq_len
    flops = model_flops_per_token(spec, s)
    if recompute == "selective":
        flops += _attention_fwd_all_layers(spec, s)
    elif recompute == "full":
        flops += 2.0 * non_embedding_params(spec, active=True) + _mixer_core_fwd_all_layers(spec, s)
    return flops


def megatron_flops_per_iteration(
    spec: ModelSpec, global_batch_seqs: int, seq_len: int | None = None, *, full_recompute: bool = False
) -> float:
    """Narayanan et al. SC21 closed form, for converting numbers printed with that convention.

    72·B·s·l·h²·(1 + s/(6h) + V/(12·l·h)) without recompute; 96·B·s·l·h²·(1 + s/(6h) + V/(16·l·h)) with
    full recompute (SC21 §5.1). Exact only for GPT-style models (MHA, 4h GELU MLP).
    """
    s = spec.seq_len if seq_len is None else seq_len
    b, n_layers, h, v = float(global_batch_seqs), float(spec.layers), float(spec.hidden), float(spec.vocab)
    if full_recompute:
        return 96.0 * b * s * n_layers * h * h * (1.0 + s / (6.0 * h) + v / (16.0 * n_layers * h))
    return 72.0 * b * s * n_layers * h * h * (1.0 + s / (6.0 * h) + v / (12.0 * n_layers * h))


# --------------------------------------------------------------------------------------------------
# Per-layer ops and collectives for the simulator
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    """One kernel on one GPU for one micro-batch: FLOPs and HBM bytes after TP/CP/EP sharding.

    ``gemm_mnk`` is the shape of one GEMM and ``count`` how many of that shape run (a grouped expert GEMM
    has one per local expert; a backward GEMM has dgrad + wgrad). ``flops`` is authoritative; the shape is
    for looking up GEMM efficiency.
    """

    name: str
    kind: str  # gemm | attention | elementwise | norm
    flops: float
    nbytes: float
    gemm_mnk: tuple[int, int, int] | None = None
    count: int = 1


@dataclass(frozen=True)
class Comm:
    """One collective, sized in the nccl-tests convention.

    allreduce: the full buffer; allgather / reducescatter: the total gathered (unscattered) size;
    alltoall: the total bytes one rank sends (its whole send buffer); sendrecv: bytes sent.
    """

    name: str
    group: str  # tp | cp | ep
    op: str  # allreduce | allgather | reducescatter | alltoall | sendrecv
    nbytes: float


@dataclass(frozen=True)
class _FwdOp:
    op: Op
    bwd_flops: float  # backward FLOPs / forward FLOPs
    bwd_bytes: float  # backward bytes / forward bytes


@dataclass(frozen=True)
class _CommPoint:
    """Collectives at one point of the forward program, and those at the mirrored point of the backward."""

    fwd: tuple[Comm, ...] = ()
    bwd: tuple[Comm, ...] = ()


_Item = _FwdOp | _CommPoint


def _gemm(name: str, m: float, n: float, k: float, dtype_bytes: float, count: int = 1) -> _FwdOp:
    flops = 2.0 * m * n * k * count
    nbytes = dtype_bytes * (m * k + k * n + m * n) * count
    shape = (math.ceil(m), math.ceil(n), math.ceil(k))
    return _FwdOp(Op(name, "gemm", flops, nbytes, shape, count), 2.0, 2.0)


def _pointwise(
    name: str, kind: str, elements: float, flops_per_element: float, tensors: float, dtype_bytes: float
) -> _FwdOp:
    """A memory-bound kernel touching `tensors` element-sized tensors (reads + writes)."""
    return _FwdOp(Op(name, kind, elements * flops_per_element, elements * tensors * dtype_bytes), 2.0, 2.0)


def _norm(name: str, tokens: float, width: int, dtype_bytes: float) -> _FwdOp:
    # Fused residual-add + norm: reads input and residual, writes normed output and new residual.
    return _pointwise(name, "norm", tokens * width, _NORM_FLOPS_PER_ELEMENT, 4, dtype_bytes)


def _emit(items: list[_Item], phase: str) -> list[Op | Comm]:
    """The program of `phase`: forward as built; backward reversed, each op scaled, each point mirrored.

    A backward GEMM is dgrad + wgrad: twice the FLOPs and bytes, `count` doubled, shape of the dgrad.
    """
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    out: list[Op | Comm] = []
    if phase == "fwd":
        for item in items:
            out.extend(item.fwd if isinstance(item, _CommPoint) else (item.op,))
        return out
    for item in reversed(items):
        if isinstance(item, _CommPoint):
            out.extend(item.bwd)
            continue
        op = item.op
        flops, nbytes = op.flops * item.bwd_flops, op.nbytes * item.bwd_bytes
        if op.gemm_mnk is not None and op.kind == "attention":  # dQ, dK, dV, dS: the same head dimension
            out.append(Op(op.name, op.kind, flops, nbytes, op.gemm_mnk, op.count))
        elif op.gemm_mnk is not None:
            m, n, k = op.gemm_mnk
            out.append(Op(op.name, op.kind, flops, nbytes, (m, k, n), 2 * op.count))
        else:
            out.append(Op(op.name, op.kind, flops, nbytes))
    return out


def _tp_points(name: str, in_bytes: float, out_bytes: float, sp: bool) -> tuple[_CommPoint, _CommPoint]:
    """TP collectives at the start and end of one column -> row parallel block (attention or MLP).

    SP: all-gather of the block input, reduce-scatter of its output; backward: all-gather of the output
    gradient plus a second all-gather of the saved sharded input for the weight gradient (Korthikanti et al.
    §4.2.2), reduce-scatter of the input gradient. No SP: all-reduce after the forward block and after the
    backward block (the conjugate of the identity at the block input).
    """
    if not sp:
        return (
            _CommPoint(bwd=(Comm(f"{name}_grad_allreduce", "tp", "allreduce", in_bytes),)),
            _CommPoint(fwd=(Comm(f"{name}_allreduce", "tp", "allreduce", out_bytes),)),
        )
    start = _CommPoint(
        fwd=(Comm(f"{name}_allgather", "tp", "allgather", in_bytes),),
        bwd=(Comm(f"{name}_grad_reducescatter", "tp", "reducescatter", in_bytes),),
    )
    end = _CommPoint(
        fwd=(Comm(f"{name}_reducescatter", "tp", "reducescatter", out_bytes),),
        bwd=(
            Comm(f"{name}_grad_allgather", "tp", "allgather", out_bytes),
            Comm(f"{name}_input_allgather", "tp", "allgather", in_bytes),
        ),
    )
    return start, end


def kv_heads_per_rank(spec: ModelSpec, tp: int) -> float:
    """KV heads one TP rank holds; Megatron replicates KV heads when tp > kv_heads."""
    if spec.mla is not None:
        return spec.heads / tp
    return spec.kv_heads / tp if spec.kv_heads >= tp else 1.0


@dataclass(frozen=True)
class _Shard:
    """How one micro-batch is split on this GPU."""

    b: int  # micro-batch (sequences)
    s: int  # sequence length
    tp: int
    sp: bool
    cp: int
    ep: int
    dt: float  # bytes per activation element
    flash: bool = True  # flash attention (fused, causal blocks skipped) or Megatron's unfused core
    dropout: bool = False  # dropout after attention and MLP (and on the scores when unfused)
    regroup: bool = True  # all-to-all dispatcher: regroup received tokens by local expert (DeepEP does not)

    @property
    def tokens(self) -> float:
        """Tokens of this CP rank, as seen inside a TP region."""
        return self.b * self.s / self.cp

    @property
    def tokens_sp(self) -> float:
        """Tokens per TP rank outside TP regions (sequence-parallel shard, or all of them without SP)."""
        return self.tokens / self.tp if self.sp else self.tokens


def _attention_fwd(spec: ModelSpec, x: _Shard, window: int | None = None) -> list[_Item]:
    h, tokens, dt = spec.hidden, x.tokens, x.dt
    heads = spec.heads / x.tp
    kv = kv_heads_per_rank(spec, x.tp)
    dqk, dv = spec.qk_head_dim, spec.v_head_dim
    activation = tokens * h * dt
    items: list[_Item] = [_norm("attn_norm", x.tokens_sp, h, dt)]
    if spec.mla is None:
        projections: list[_Item] = [_gemm("qkv_proj", tokens, heads * dqk + kv * (dqk + dv), h, dt)]
        gathered = activation
    else:
        m = spec.mla
        # Down-projections are duplicated on every TP rank and run on the local (sequence-parallel) tokens;
        # with SP the small latents, not the hidden state, are all-gathered (Megatron-Core MLA).
        if m.q_lora_rank:
            items += [
                _gemm("q_down_proj", x.tokens_sp, m.q_lora_rank, h, dt),
                _norm("q_norm", x.tokens_sp, m.q_lora_rank, dt),
            ]
            q_proj = _gemm("q_up_proj", tokens, heads * dqk, m.q_lora_rank, dt)
        else:
            q_proj = _gemm("q_proj", tokens, heads * dqk, h, dt)
        items += [
            _gemm("kv_down_proj", x.tokens_sp, m.kv_lora_rank + m.qk_rope_head_dim, h, dt),
            _norm("kv_norm", x.tokens_sp, m.kv_lora_rank, dt),
        ]
        projections = [
            q_proj,
            _gemm("kv_up_proj", tokens, heads * (m.qk_nope_head_dim + dv), m.kv_lora_rank, dt),
        ]
        latent = m.q_lora_rank + m.kv_lora_rank + m.qk_rope_head_dim
        gathered = tokens * latent * dt if x.sp else activation
    tp_start, tp_end = (
        _tp_points("attn", gathered, activation, x.sp) if x.tp > 1 else (_CommPoint(), _CommPoint())
    )
    if spec.qk_norm and spec.mla is None:
        # Per-head RMSNorm of the local queries and keys (two kernels, q and k: read + write each).
        qk_elements = tokens * (heads + kv) * dqk
        projections.append(_pointwise("qk_norm", "norm", qk_elements, _NORM_FLOPS_PER_ELEMENT, 2, dt))
    if spec.position_embedding == "rope":
        # Rotary embedding of the local queries and keys (a separate memory-bound kernel: read + write).
        rope_dims = spec.mla.qk_rope_head_dim if spec.mla is not None else dqk
        rope_elements = tokens * (heads + kv) * rope_dims
        projections.append(_pointwise("rope", "elementwise", rope_elements, 4.0, 2, dt))
    if x.flash:
        # Flash-style core: the causal mask halves the executed work (a sliding window bounds it: flash
        # kernels skip the tiles outside the band, not the ones its edges cut); bytes are Q, K, V read and O
        # written.
        core_flops = 2.0 * tokens * flash_keys_per_query(x.s, window) * heads * (dqk + dv)
        core_bytes = dt * (tokens * heads * (dqk + dv) + x.b * x.s * kv * (dqk + dv))
        # Its shape is that of the score GEMM QK^T (s x s x d_qk) per head: the head dimension sets how well
        # the kernel fills the tensor cores.
        shape = (math.ceil(x.s / x.cp), math.ceil(x.s), int(dqk))
        core: list[_Item] = [
            _FwdOp(
                Op("attn_core", "attention", core_flops, core_bytes, shape, math.ceil(heads)),
                _FLASH_BWD_FLOP_FACTOR,
                2.0,
            )
        ]
    else:
        core = _unfused_core(spec, x, heads, kv)
    if x.cp > 1:
        # K and V of the whole sequence (local heads) are all-gathered over CP before the core, forward and
        # backward; their gradients are reduce-scattered after the backward core.
        kv_bytes = x.b * x.s * kv * (dqk + dv) * dt
        gather = Comm("cp_kv_allgather", "cp", "allgather", kv_bytes)
        core = [
            _CommPoint(fwd=(gather,), bwd=(Comm("cp_dkv_reducescatter", "cp", "reducescatter", kv_bytes),)),
            *core,
            _CommPoint(bwd=(gather,)),
        ]
    items += [tp_start, *projections, *core]
    items += [_gemm("attn_out", tokens, h, heads * dv, dt), tp_end]
    if x.dropout:
        items.append(_hidden_dropout("attn_dropout", x, h))
    return items


def _mamba_fwd(spec: ModelSpec, x: _Shard) -> list[_Item]:
    """A Mamba-2 block as Megatron-Core runs it: pre-norm, in_proj (column-parallel: each TP rank holds
    whole heads and groups), causal depthwise conv + SiLU over x, B, C, the chunked SSD scan (four Triton
    kernels: chunk cumsum, chunk states, state passing, chunk scan), the gated RMSNorm (per TP rank's
    groups) and out_proj (row-parallel): the TP collectives sit where an attention block has them.

    Context parallelism (Megatron's MambaContextParallel): the conv and the scan need the whole sequence,
    so after in_proj five all-to-alls turn z, x, B, C and dt from sequence shards into head shards (each CP
    rank then holds 1/cp of the local heads over all tokens; B and C are repeated when a TP rank has fewer
    groups than cp) and one all-to-all turns y back before the gated norm. Per GPU the conv and the scan
    do the same work as on its own tokens with all its heads."""
    m = spec.mamba
    if m is None:
        raise ValueError(f"{spec.name} has Mamba blocks and no mamba section")
    h, tokens, dt = spec.hidden, x.tokens, x.dt
    heads, groups = m.heads / x.tp, m.groups / x.tp
    inner, bc = heads * m.head_dim, 2.0 * groups * m.state
    q = min(m.chunk, x.s)
    activation = tokens * h * dt
    tp_start, tp_end = (
        _tp_points("mamba", activation, activation, x.sp) if x.tp > 1 else (_CommPoint(), _CommPoint())
    )
    flops_per_token, bytes_per_token = ssd_scan_cost(spec, tp=x.tp, seq_len=x.s, dtype_bytes=dt)
    # Megatron's memory-efficient path hands z to the fused kernel, so the chunk scan applies the gate
    # y·SiLU(z) itself: it reads z and writes the ungated y (kept for the backward) beside the gated one.
    bytes_per_token += 2.0 * inner * dt
    scan_flops, scan_bytes = tokens * flops_per_token, tokens * bytes_per_token
    bwd_bytes = ssd_scan_bwd_bytes(spec, tp=x.tp, seq_len=x.s, dtype_bytes=dt) / bytes_per_token
    # Shaped like one Q x Q x P block per head: the head dimension sets how well it fills the tensor cores.
    scan = Op("mamba_scan", "attention", scan_flops, scan_bytes, (q, q, m.head_dim), math.ceil(heads))
    conv_elements = tokens * (inner + bc)
    to_heads: list[_Item] = []
    to_sequence: list[_Item] = []
    if x.cp > 1:
        repeat = max(1.0, x.cp / groups)  # B and C copies when the TP rank's groups cannot split over cp
        sizes = (("z", inner), ("x", inner), ("B", bc / 2 * repeat), ("C", bc / 2 * repeat), ("dt", heads))
        cp2hp = tuple(Comm(f"mamba_cp2hp_{n}", "cp", "alltoall", tokens * w * dt) for n, w in sizes)
        hp2cp = (Comm("mamba_hp2cp_y", "cp", "alltoall", tokens * inner * dt),)
        to_heads = [_CommPoint(fwd=cp2hp, bwd=cp2hp)]  # their gradients go back the same way
        to_sequence = [_CommPoint(fwd=hp2cp, bwd=hp2cp)]
    # Megatron's _ssm_training turns in_proj's sequence-first output batch-first for the fused kernel and
    # y back (rearrange(...).contiguous(): a copy each when the micro-batch holds several sequences; their
    # backward copies the gradients back)
    copies = x.b > 1
    to_batch_first = (
        [
            _FwdOp(
                Op("mamba_layout_in", "elementwise", 0.0, 2.0 * tokens * (2.0 * inner + bc + heads) * dt),
                1.0,
                1.0,
            )
        ]
        if copies
        else []
    )
    to_sequence_first = (
        [_FwdOp(Op("mamba_layout_out", "elementwise", 0.0, 2.0 * tokens * inner * dt), 1.0, 1.0)]
        if copies
        else []
    )
    return [
        _norm("mamba_norm", x.tokens_sp, h, dt),
        tp_start,
        _gemm("mamba_in_proj", tokens, 2.0 * inner + bc + heads, h, dt),
        *to_heads,
        *to_batch_first,
        # its backward first runs the conv forward again (the memory-efficient path keeps only in_proj's
        # output: x, B, C in, conv output out), then causal_conv1d_bwd (x, B, C and their output gradient
        # in, the input gradient out; SiLU rebuilt inside): 5 tensors against the forward's 2; ~3x the FLOPs
        _FwdOp(
            _pointwise(
                "mamba_conv", "elementwise", conv_elements, 2.0 * m.conv_kernel + _CONV_SILU_FLOPS, 2, dt
            ).op,
            3.0,
            2.5,
        ),
        _FwdOp(scan, _SSD_BWD_FLOP_FACTOR, bwd_bytes),
        *to_sequence_first,
        *to_sequence,
        # RMSNorm over each group of the gated y (Megatron calls its RMSNormGated without z: the gate ran
        # in the scan; its nominal FLOPs stay here): reads y, writes out_proj's input; the backward reads y
        # and the output gradient, writes the input gradient
        _FwdOp(
            _pointwise("mamba_gated_norm", "norm", tokens * inner, _NORM_FLOPS_PER_ELEMENT + 4.0, 2, dt).op,
            2.0,
            1.5,
        ),
        _gemm("mamba_out_proj", tokens, h, inner, dt),
        tp_end,
        *([_hidden_dropout("mamba_dropout", x, h)] if x.dropout else []),
    ]


def _hidden_dropout(name: str, x: _Shard, hidden: int) -> _FwdOp:
    """Dropout of a block's output (fused with the bias and residual add): writes a 1-byte mask and rereads
    the output once more, over the sequence-parallel shard's tokens x hidden elements."""
    return _pointwise(name, "elementwise", x.tokens_sp * hidden, 2.0, 1.0 + 1.0 / x.dt, x.dt)


def _unfused_core(spec: ModelSpec, x: _Shard, heads: float, kv: float) -> list[_Item]:
    """Megatron's pre-flash attention core (SC21, Korthikanti et al.): QKᵀ and PV as batched GEMMs over the
    whole s x s score matrix, with the scaled-masked softmax (and dropout) streaming the scores through HBM
    in between. Names start with ``attn_core`` so selective recompute replays exactly these ops.
    """
    dt, s = x.dt, x.s
    dqk, dv = spec.qk_head_dim, spec.v_head_dim
    q_rows = x.tokens  # queries of this CP rank
    mats = x.b * heads  # one score matrix per sequence and local head
    scores = mats * (q_rows / x.b) * s  # score elements (keys: the whole sequence)
    kv_bytes = x.b * s * kv * (dqk + dv) * dt
    qk = _FwdOp(
        Op(
            "attn_core_qk",
            "gemm",
            2.0 * scores * dqk,
            dt * (q_rows * heads * dqk) + kv_bytes / 2 + dt * scores,
            (math.ceil(q_rows / x.b), s, dqk),
            math.ceil(mats),
        ),
        2.0,
        2.0,
    )
    # Fused scale + causal mask + softmax: read the scores, write the probabilities.
    items: list[_Item] = [qk, _pointwise("attn_core_softmax", "elementwise", scores, 5.0, 2, dt)]
    if x.dropout:
        # Dropout on the probabilities: read them, write the mask (1 byte) and the dropped copy.
        items.append(_pointwise("attn_core_dropout", "elementwise", scores, 2.0, 2.0 + 1.0 / dt, dt))
    pv = _FwdOp(
        Op(
            "attn_core_pv",
            "gemm",
            2.0 * scores * dv,
            dt * scores + kv_bytes / 2 + dt * q_rows * heads * dv,
            (math.ceil(q_rows / x.b), dv, s),
            math.ceil(mats),
        ),
        2.0,
        2.0,
    )
    items.append(pv)
    return items


def _ffn_fwd(
    spec: ModelSpec,
    prefix: str,
    rows: float,
    width: float,
    dt: float,
    count: int = 1,
    io_width: int | None = None,
) -> list[_Item]:
    """Up, activation, down of an MLP of `width` (already sharded) on `rows` tokens, `count` times, reading
    and writing ``io_width`` (default the hidden size; a LatentMoE expert's latent width)."""
    gated = spec.ffn == "swiglu"
    act_flops = _ACT_FLOPS_PER_ELEMENT[spec.ffn]
    io = spec.hidden if io_width is None else io_width
    return [
        _gemm(f"{prefix}_up", rows, (2 if gated else 1) * width, io, dt, count),
        _pointwise(f"{prefix}_act", "elementwise", rows * width * count, act_flops, 3 if gated else 2, dt),
        _gemm(f"{prefix}_down", rows, io, width, dt, count),
    ]


def _mlp_fwd(spec: ModelSpec, layer_index: int, x: _Shard) -> list[_Item]:
    h, dt = spec.hidden, x.dt
    moe = spec.moe
    if moe is None or not spec.is_moe_layer(layer_index):
        ffn = _ffn_fwd(spec, "mlp", x.tokens, spec.dense_ffn_hidden / x.tp, dt)
        tail = [_hidden_dropout("mlp_dropout", x, h)] if x.dropout else []
        if x.tp == 1:
            return [_norm("mlp_norm", x.tokens_sp, h, dt), *ffn, *tail]
        start, end = _tp_points("mlp", x.tokens * h * dt, x.tokens * h * dt, x.sp)
        return [_norm("mlp_norm", x.tokens_sp, h, dt), start, *ffn, end, *tail]
    # Expert layers run on sequence-parallel shards (Megatron requires SP with TP for MoE) with whole experts
    # (expert-TP = 1): no TP collective, an all-to-all pair over EP. The busiest EP rank gets `load_factor` x
    # its share of token copies; its GEMMs and all-to-all bytes are the ones returned.
    # LatentMoE: tokens are projected to the latent width after routing, before the dispatch, and back after
    # the combine; the dispatched tokens, the all-to-all and the experts are latent-wide.
    t_moe = x.tokens / x.tp
    local_experts = moe.experts // x.ep
    routed = t_moe * moe.top_k * moe.load_factor
    io = moe.latent or h
    a2a = routed * io * dt
    items: list[_Item] = [
        _norm("mlp_norm", t_moe, h, dt),
        _gemm("router", t_moe, moe.experts, h, dt),
        *([_gemm("moe_latent_down", t_moe, io, h, dt)] if moe.latent else []),
        _pointwise("moe_permute", "elementwise", t_moe * moe.top_k * io, 0.0, 2, dt),
    ]
    if x.ep > 1:
        items.append(
            _CommPoint(
                fwd=(Comm("moe_dispatch", "ep", "alltoall", a2a),),
                bwd=(Comm("moe_dispatch", "ep", "alltoall", a2a),),
            )
        )
    # Megatron's all-to-all dispatcher receives the tokens grouped by source rank; with several local experts
    # it regroups them by expert ("permutation 2", sort_chunks_by_idxs; a transpose copy when token-drop
    # pads) and restores the rank order before the combine: one copy of the routed tokens each way, whose
    # backward is the inverse copy. DeepEP / hybrid-EP hand over tokens already laid out per local expert.
    regroup = x.regroup and x.ep > 1 and local_experts > 1
    if regroup:
        items.append(_FwdOp(Op("moe_sort_chunks", "elementwise", 0.0, 2.0 * a2a), 1.0, 1.0))
    items += _ffn_fwd(
        spec, "expert_mlp", routed / local_experts, moe.expert_ffn_hidden, dt, local_experts, moe.latent
    )
    if regroup:
        items.append(_FwdOp(Op("moe_unsort_chunks", "elementwise", 0.0, 2.0 * a2a), 1.0, 1.0))
    if x.ep > 1:
        items.append(
            _CommPoint(
                fwd=(Comm("moe_combine", "ep", "alltoall", a2a),),
                bwd=(Comm("moe_combine", "ep", "alltoall", a2a),),
            )
        )
    items.append(_pointwise("moe_unpermute", "elementwise", t_moe * io, 2.0 * moe.top_k, moe.top_k + 1, dt))
    if moe.latent:
        items.append(_gemm("moe_latent_up", t_moe, h, io, dt))
    if moe.shared_experts:
        items += _ffn_fwd(spec, "shared_expert", t_moe, moe.shared_experts * moe.expert_ffn_hidden, dt)
    return items


def layer_program(
    spec: ModelSpec,
    layer_index: int,
    *,
    micro_batch: int,
    seq_len: int | None = None,
    tp: int = 1,
    sp: bool = False,
    cp: int = 1,
    ep: int = 1,
    dtype_bytes: float = 2,
    phase: str = "fwd",
    flash_attention: bool = True,
    dropout: bool = False,
    ep_dispatch: str = "alltoall",
) -> list[Op | Comm]:
    """Kernels and collectives of one layer (a hybrid model's block) for one micro-batch on one GPU, in
    execution order.

    Recompute is not included: before a layer's backward the workload replays its ``phase="fwd"`` program
    (full) or what ``recompute_modules`` rebuild (selective). Data-parallel gradient reduction is per step, not here.
    ``flash_attention=False`` is Megatron's unfused core (scores through HBM); ``dropout`` adds the dropout
    kernels (on the block outputs, and on the scores when unfused). ``ep_dispatch`` is the MoE token
    dispatcher (``alltoall`` regroups the received tokens by local expert; ``deepep`` need not).
    """
    if not 0 <= layer_index < spec.layers:
        raise IndexError(f"layer_index {layer_index} out of range for {spec.layers} layers")
    s = spec.seq_len if seq_len is None else seq_len
    regroup = ep_dispatch == "alltoall"
    x = _Shard(micro_batch, s, tp, sp, cp, ep, float(dtype_bytes), flash_attention, dropout, regroup)
    kind = spec.layer_kind(layer_index)
    if kind == "mamba":
        return _emit(_mamba_fwd(spec, x), phase)
    items = (
        _attention_fwd(spec, x, spec.attention_window(layer_index)) if spec.has_attention(layer_index) else []
    )
    if spec.has_ffn(layer_index):
        items += _mlp_fwd(spec, layer_index, x)
    return _emit(items, phase)


def layer_ops(spec: ModelSpec, layer_index: int, **kwargs: Any) -> list[Op]:
    """The kernels of layer_program (same arguments): FLOPs and HBM bytes per GPU after sharding."""
    return [item for item in layer_program(spec, layer_index, **kwargs) if isinstance(item, Op)]


def layer_comm(spec: ModelSpec, layer_index: int, **kwargs: Any) -> list[Comm]:
    """The collectives of layer_program (same arguments), sized in the nccl-tests convention."""
    return [item for item in layer_program(spec, layer_index, **kwargs) if isinstance(item, Comm)]


def embedding_program(
    spec: ModelSpec,
    *,
    micro_batch: int,
    seq_len: int | None = None,
    tp: int = 1,
    sp: bool = False,
    cp: int = 1,
    dtype_bytes: float = 2,
    phase: str = "fwd",
) -> list[Op | Comm]:
    """Token (+ learned position) embedding of the first stage; vocab-parallel partial sums meet over TP."""
    s = spec.seq_len if seq_len is None else seq_len
    tokens = micro_batch * s / cp
    tensors = 3 if spec.position_embedding == "learned" else 2  # read row(s), write output
    items: list[_Item] = [
        _pointwise("embedding", "elementwise", tokens * spec.hidden, 0.0, tensors, dtype_bytes)
    ]
    if tp > 1:
        items.append(_vocab_parallel_point("embedding", tokens * spec.hidden * dtype_bytes, sp))
    return _emit(items, phase)


def _vocab_parallel_point(name: str, nbytes: float, sp: bool) -> _CommPoint:
    """Where a vocab-parallel embedding lookup's partial sums meet over TP: reduce-scattered into
    sequence-parallel shards (all-gathered back in the backward), or all-reduced without SP."""
    if sp:
        return _CommPoint(
            fwd=(Comm(f"{name}_reducescatter", "tp", "reducescatter", nbytes),),
            bwd=(Comm(f"{name}_grad_allgather", "tp", "allgather", nbytes),),
        )
    return _CommPoint(fwd=(Comm(f"{name}_allreduce", "tp", "allreduce", nbytes),))


def mtp_input_program(
    spec: ModelSpec,
    *,
    micro_batch: int,
    seq_len: int | None = None,
    tp: int = 1,
    sp: bool = False,
    cp: int = 1,
    dtype_bytes: float = 2,
    phase: str = "fwd",
) -> list[Op | Comm]:
    """The input of one MTP module (Megatron-Core's MultiTokenPredictionLayer): the next tokens'
    (vocab-parallel) embedding and the previous depth's hidden state, each RMS-normed, concatenated and
    projected 2h -> h by a column-parallel eh_proj whose output is gathered over TP (and split again into
    sequence-parallel shards). Its transformer layer and the shared output head follow (run by the
    workload, as the last layer's and the head's programs)."""
    s = spec.seq_len if seq_len is None else seq_len
    dt = float(dtype_bytes)
    tokens = micro_batch * s / cp
    h = spec.hidden
    shard = tokens / tp if sp else tokens
    items: list[_Item] = [_pointwise("mtp_embedding", "elementwise", tokens * h, 0.0, 2, dt)]
    if tp > 1:  # the vocab-parallel lookup, as the model's own embedding
        items.append(_vocab_parallel_point("mtp_embedding", tokens * h * dt, sp))
    items += [_norm("mtp_enorm", shard, h, dt), _norm("mtp_hnorm", shard, h, dt)]
    if tp > 1:
        items.append(_tp_points("mtp_eh_proj", tokens * 2 * h * dt, tokens * h * dt, sp)[0])
    items.append(_gemm("mtp_eh_proj", tokens, h / tp, 2 * h, dt))
    if tp > 1:  # gather the column-parallel output; with SP it is split again (whose backward gathers), and
        # the weight gradient re-gathers eh_proj's saved sharded input (Korthikanti et al. §4.2.2)
        gathered = (Comm("mtp_eh_proj_gather", "tp", "allgather", tokens * h * dt),)
        back = (
            Comm("mtp_sp_grad_allgather", "tp", "allgather", tokens * h * dt),
            Comm("mtp_eh_proj_input_allgather", "tp", "allgather", tokens * 2 * h * dt),
        )
        items.append(_CommPoint(fwd=gathered, bwd=back if sp else ()))
    return _emit(items, phase)


def output_program(
    spec: ModelSpec,
    *,
    micro_batch: int,
    seq_len: int | None = None,
    tp: int = 1,
    sp: bool = False,
    cp: int = 1,
    dtype_bytes: float = 2,
    phase: str = "fwd",
    fused_cross_entropy: bool = False,
) -> list[Op | Comm]:
    """Final norm, vocab-parallel LM head and softmax cross-entropy of the last stage."""
    s = spec.seq_len if seq_len is None else seq_len
    dt = float(dtype_bytes)
    tokens = micro_batch * s / cp
    logits = tokens * spec.vocab / tp
    # Softmax cross-entropy over the (vocab-parallel) logits streams them several times: read the 16-bit
    # logits and write fp32 (2 + 4 B), a max pass (4), exp and sum (4 + 4), normalise into the saved fp32
    # probabilities (4 + 4): 22 B per logit forward. Its backward reads the probabilities and writes the
    # 16-bit logit gradient (4 + 2): 6/22 of the forward bytes. The fused kernel moves 6 and 4 B.
    fwd_bytes, bwd_bytes = (
        (_FUSED_XENT_FWD_BYTES, _FUSED_XENT_BWD_BYTES)
        if fused_cross_entropy
        else (_XENT_FWD_BYTES, _XENT_BWD_BYTES)
    )
    loss = _FwdOp(
        Op("loss", "elementwise", logits * _SOFTMAX_XENT_FLOPS_PER_ELEMENT, logits * fwd_bytes),
        1.0,
        bwd_bytes / fwd_bytes,
    )
    items: list[_Item] = [_norm("final_norm", tokens / tp if sp else tokens, spec.hidden, dt)]
    if tp > 1:
        start, _ = _tp_points("output", tokens * spec.hidden * dt, 0.0, sp)
        # Vocab-parallel cross-entropy: all-reduces of the max logit, the target logit and the sum of exp.
        xent = tuple(
            Comm(f"loss_{x}_allreduce", "tp", "allreduce", tokens * 4.0) for x in ("max", "target", "sumexp")
        )
        items += [
            start,
            _gemm("output_proj", tokens, spec.vocab / tp, spec.hidden, dt),
            _CommPoint(fwd=xent),
            loss,
        ]
    else:
        items += [_gemm("output_proj", tokens, spec.vocab, spec.hidden, dt), loss]
    return _emit(items, phase)


def embedding_ops(spec: ModelSpec, **kwargs: Any) -> list[Op]:
    """The kernels of embedding_program (same arguments)."""
    return [item for item in embedding_program(spec, **kwargs) if isinstance(item, Op)]


def output_ops(spec: ModelSpec, **kwargs: Any) -> list[Op]:
    """The kernels of output_program (same arguments)."""
    return [item for item in output_program(spec, **kwargs) if isinstance(item, Op)]


def activation_bytes(
    spec: ModelSpec,
    *,
    micro_batch: int,
    seq_len: int | None = None,
    tp: int = 1,
    sp: bool = False,
    cp: int = 1,
    dtype_bytes: float = 2,
) -> float:
    """Bytes of the hidden state one GPU sends to the next pipeline stage per micro-batch (SP-sharded)."""
    s = spec.seq_len if seq_len is None else seq_len
    tokens = micro_batch * s / cp
    return tokens * spec.hidden * dtype_bytes / (tp if sp else 1)


def optimizer_bytes(
    num_params: float,
    *,
    param_dtype_bytes: float = 2,
    grad_dtype_bytes: float = 2,
    master_weights: bool = True,
    moment_bytes: float = 4,
) -> float:
    """HBM bytes an Adam step moves for `num_params` (the local shard).

    Reads the gradient; reads and writes m and v (fp32, or ``moment_bytes`` each); with master weights
    reads and writes the fp32 master copy and writes the low-precision model copy, otherwise reads and
    writes the weights.
    """
    per_param = grad_dtype_bytes + 2 * 2 * moment_bytes
    per_param += (2 * 4 + param_dtype_bytes) if master_weights else 2 * param_dtype_bytes
    return float(num_params) * per_param


def optimizer_flops(num_params: float) -> float:
    """FLOPs of an AdamW step (moments, bias correction, update, weight decay): ~16 per parameter."""
    return float(num_params) * _ADAM_FLOPS_PER_PARAM


# --------------------------------------------------------------------------------------------------
# Parallelism checks and pipeline layout
# --------------------------------------------------------------------------------------------------


def auto_chunk_layers(layers: int, pp: int, vp: int) -> list[int] | None:
    """Layers per model chunk (pp·vp chunks) when racksim splits them on its own, else None.

    Even split, or Llama-3 style: (layers + 2) divisible, with one fewer layer in the first and the last
    chunk to make room for the embedding and the loss (Llama 3 paper §3.3.2; Megatron's
    ``account_for_embedding/loss_in_pipeline_split``); both are the most even split. When layers + 2 equals
    the chunks, the first chunk holds only the embedding and the last only the output layer and loss.
    """
    chunks = pp * vp
    if layers % chunks == 0:
        return list(balanced_chunk_layers(layers, pp, vp) or ())
    if pp > 1 and (layers + 2) % chunks == 0:
        n = (layers + 2) // chunks
        return [n - 1] + [n] * (chunks - 2) + [n - 1]
    return None


def balanced_chunk_layers(layers: int, pp: int, vp: int = 1) -> tuple[int, ...] | None:
    """Layers per model chunk as even as possible (sizes n and n+1), the lighter chunks placed first at
    the ends (last, first, then inwards), which carry the output layer + loss and the embedding.

    The automatic splits are this split where they apply; where they do not, it is what racksim suggests
    for ``parallelism.layers_per_chunk`` (Megatron's uneven first/last stages). None when
    there are more chunks than layers.
    """
    chunks = pp * vp
    if chunks > layers:
        return None
    base, extra = divmod(layers, chunks)
    sizes = [base + 1] * chunks
    order = [i for k in range(chunks) for i in ((chunks - 1 - k, k) if k < chunks - 1 - k else (k,))]
    for i in order[: chunks - extra]:
        sizes[i] = base
    return tuple(sizes)


def pipeline_layers(
    spec: ModelSpec,
    pp: int = 1,
    vp: int = 1,
    *,
    layers_per_chunk: tuple[int, ...] | None = None,
    file: str | None = None,
    path: str = "parallelism",
) -> tuple[tuple[range, ...], ...]:
    """Layer indices per pipeline stage and virtual chunk: ``result[stage][chunk]``.

    Model chunk j (0 .. pp·vp-1) lives on stage j % pp as its chunk j // pp (Megatron's interleaving).
    ``layers_per_chunk`` (in model-chunk order) overrides the automatic split.
    """
    chunks = pp * vp
    if layers_per_chunk is not None:
        sizes = list(layers_per_chunk)
        # Megatron lets the first and last chunk hold only the embedding / the output layer and loss.
        inner = sizes[1:-1] if pp > 1 else sizes
        if len(sizes) != chunks or sum(sizes) != spec.layers or min(sizes) < 0 or min(inner, default=1) < 1:
            ends = " (0 allowed for the first and last when pp > 1)" if pp > 1 else ""
            raise ConfigError(
                f"layers_per_chunk must list pp·vp = {chunks} chunks of >= 1 layer{ends} summing to "
                f"layers = {spec.layers}",
                file=file,
                path=_join(path, "layers_per_chunk"),
                value=list(layers_per_chunk),
                expected=f"{chunks} whole numbers >= 1{ends} with sum {spec.layers}",
                hint=_layout_hint(spec.layers, pp, vp),
            )
    else:
        found = auto_chunk_layers(spec.layers, pp, vp)
        if found is None:
            good = [p for p in range(1, min(spec.layers, 256) + 1) if auto_chunk_layers(spec.layers, p, vp)]
            raise ConfigError(
                f"pp·vp = {pp}·{vp} = {chunks} does not divide layers = {spec.layers}",
                file=file,
                path=_join(path, "pp"),
                value=pp,
                expected=f"pp·vp dividing {spec.layers}, or {spec.layers}+2 (end chunks one layer short), "
                "or an explicit parallelism.layers_per_chunk",
                hint=(
                    f"pp that work with vp = {vp}: {', '.join(str(p) for p in good[:12])}; or "
                    if good
                    else ""
                )
                + _layout_hint(spec.layers, pp, vp),
            )
        sizes = found
    stages: list[list[range]] = [[] for _ in range(pp)]
    start = 0
    for j, size in enumerate(sizes):
        stages[j % pp].append(range(start, start + size))
        start += size
    return tuple(tuple(chunks) for chunks in stages)


def _layout_hint(layers: int, pp: int, vp: int) -> str:
    """What to put in ``layers_per_chunk`` for this pp·vp (or that it can go: the automatic split works)."""
    auto = auto_chunk_layers(layers, pp, vp)
    if auto is not None:
        listed = f"layers_per_chunk: [{', '.join(map(str, auto))}]"
        return f"drop layers_per_chunk (--set parallelism.layers_per_chunk=null) for the automatic split {listed}"
    balanced = balanced_chunk_layers(layers, pp, vp)
    if balanced is None and pp > 1 and pp * vp == layers + 1:  # one edge-only end chunk makes it fit
        return f"set layers_per_chunk: [0, {', '.join(['1'] * layers)}] (the first chunk the embedding alone)"
    if balanced is None:
        return f"pp·vp = {pp * vp} exceeds layers = {layers}"
    return f"set layers_per_chunk: [{', '.join(map(str, balanced))}]"


def check_parallelism(
    spec: ModelSpec,
    tp: int = 1,
    pp: int = 1,
    cp: int = 1,
    ep: int = 1,
    vp: int = 1,
    *,
    file: str | None = None,
    path: str = "parallelism",
    dp: int | None = None,
    sequence_parallel: bool | None = None,
    seq_len: int | None = None,
    layers_per_chunk: tuple[int, ...] | None = None,
) -> None:
    """Raise a ConfigError naming the field when the parallel layout cannot run this model."""

    def err(key: str, message: str, value: Any, expected: str, hint: str | None = None) -> ConfigError:
        return ConfigError(
            message, file=file, path=_join(path, key), value=value, expected=expected, hint=hint
        )

    for key, value in (("tp", tp), ("pp", pp), ("cp", cp), ("ep", ep), ("vp", vp)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise err(key, "must be a positive integer", value, "an integer >= 1")
    if spec.heads % tp:
        divisors = [d for d in range(1, spec.heads + 1) if spec.heads % d == 0 and d <= 64]
        raise err(
            "tp",
            f"tp = {tp} does not divide heads = {spec.heads}",
            tp,
            "one of " + ", ".join(map(str, divisors)),
        )
    if spec.mla is None:
        kv = spec.kv_heads
        if (tp <= kv and kv % tp) or (tp > kv and tp % kv):
            raise err(
                "tp",
                f"tp = {tp} and kv_heads = {kv}: neither divides the other",
                tp,
                f"a divisor of {kv}, or a multiple of it (KV heads are then replicated)",
            )
    if spec.mamba is not None:
        m = spec.mamba
        for what, count in (("mamba.heads", m.heads), ("mamba.groups", m.groups)):
            if count % tp:
                raise err(
                    "tp",
                    f"tp = {tp} does not divide {what} = {count} (a TP rank holds whole Mamba heads and groups)",
                    tp,
                    "one of " + ", ".join(str(d) for d in range(1, m.groups + 1) if m.groups % d == 0),
                )
        local_heads, local_groups = m.heads // tp, m.groups // tp  # tp divides both (checked above)
        if cp > 1 and (local_heads % cp or (local_groups % cp and cp % local_groups)):
            raise err(
                "cp",
                f"cp = {cp} cannot split the {local_heads} Mamba heads and {local_groups} groups of a TP rank "
                "(Megatron's context parallelism over Mamba hands each CP rank whole heads)",
                cp,
                "cp dividing mamba.heads / tp, and dividing or a multiple of mamba.groups / tp",
            )
    if vp > 1 and pp == 1:
        raise err("vp", "interleaved pipelining (vp > 1) needs pp > 1", vp, "vp = 1 when pp = 1")
    pipeline_layers(spec, pp, vp, layers_per_chunk=layers_per_chunk, file=file, path=path)
    if spec.moe is None:
        if ep > 1:
            raise err("ep", f"ep = {ep} but {spec.name} has no experts", ep, "ep = 1 for a dense model")
    else:
        if spec.moe.experts % ep:
            raise err(
                "ep",
                f"ep = {ep} does not divide experts = {spec.moe.experts}",
                ep,
                f"a divisor of {spec.moe.experts}",
            )
        if tp > 1 and sequence_parallel is False:
            raise err(
                "sequence_parallel",
                "MoE with tp > 1 needs sequence parallelism (as Megatron-LM requires)",
                sequence_parallel,
                "sequence_parallel: true",
            )
        if dp is not None and (dp * cp * tp) % ep:
            raise err(
                "ep",
                f"ep = {ep} does not divide dp·cp·tp = {dp}·{cp}·{tp} = {dp * cp * tp}",
                ep,
                "expert parallelism carved out of the data/context/tensor-parallel ranks",
            )
    s = spec.seq_len if seq_len is None else seq_len
    if cp > 1 and s % (2 * cp):
        raise err(
            "cp",
            f"seq_len = {s} does not split into 2·cp = {2 * cp} load-balanced causal chunks",
            cp,
            "cp with seq_len divisible by 2·cp",
        )
    if sequence_parallel and tp > 1 and (s // cp) % tp:
        raise err(
            "tp",
            f"sequence parallelism splits seq_len/cp = {s // cp} tokens over tp = {tp}",
            tp,
            "tp dividing seq_len/cp",
        )
