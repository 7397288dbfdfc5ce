"""LLM inference serving: continuous batching of a request stream on tensor-parallel replicas.

A spec (``kind: inference``, docs/inference.md) gives the model, ``parallelism: {tp, replicas}``, the
precision of the weights, a scheduler and a request stream. Each replica is one simpy process (one rank
class standing for its ``tp`` GPUs) that runs the engine loop of vLLM / TensorRT-LLM style servers:

1. admit waiting requests (first come, first served) while the running set is below ``max_num_seqs`` and
   the KV cache can hold the request's prompt + output (reserved at admission: no preemption);
2. build an iteration of at most ``max_batch_tokens`` tokens: one decode token per running sequence, then
   prefill chunks (``chunked_prefill``) or, without chunking, whole prompts in iterations of their own;
3. run it: the host thread's work first (per sequence, and per kernel it launches: one CUDA graph for a
   decode-only iteration, every kernel otherwise), prepared while the GPU runs the iteration before; then
   every layer's GEMMs (weights read once per iteration, so small batches are HBM-bound; the routed
   experts as their own GEMM, ``routed_work``), the attention over each sequence's cached context (flash
   for prefill, a KV-cache read for decode), two TP all-reduces per layer, and the LM head for the
   sequences that emit a token;
4. a sequence emits its first token at the end of the iteration that finishes its prompt (TTFT), then one
   per iteration (TPOT); a finished sequence frees its KV cache.

Requests arrive by a Poisson process (``rate``), all at once (offline, no ``rate``) or from a CSV trace
(``arrival_s, input_tokens, output_tokens``); they go to the replica with the fewest outstanding ones.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import math
from collections import deque
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import simpy

from simcore.errors import ConfigError
from simcore.kernels.compute import KIND_ATTENTION, KIND_ELEMENTWISE, KIND_GEMM, FusedWork
from simcore.schema import build, choice, flag, number, section, text
from workloads.model import (
    FLASH_TILE,
    LayerParams,
    ModelSpec,
    embedding_params,
    kv_heads_per_rank,
    layer_params,
    mamba_state_bytes,
    output_params,
    resolve_model_section,
    ssd_scan_cost,
    total_params,
)

INFERENCE_KEYS = (
    "kind",
    "name",
    "model",
    "preset",
    "parallelism",
    "precision",
    "kv_cache",
    "scheduler",
    "requests",
)
WEIGHT_BYTES = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "fp4": 0.5625}  # fp4: 4 bits + one fp8 scale per 16
ACT_BYTES = 2.0  # activations stay 16 bit between kernels
# Input embedding, final norm and LM head: FP8 and NVFP4 checkpoints (TensorRT Model Optimizer's, vLLM's
# compressed-tensors) quantize the layers' linear weights only and keep these 16 bit (ModelOpt's
# hf_quant_config lists lm_head in exclude_modules; the embedding is a lookup).
EDGE_WEIGHT_BYTES = 2.0


@dataclass(frozen=True)
class ServingParallelism:
    tp: int = number("tensor-parallel size of one replica", 1, integer=True, minimum=1)
    pp: int = number("pipeline-parallel size (only 1 is modelled for serving)", 1, integer=True, minimum=1)
    replicas: int = number("independent model replicas (data parallel)", 1, integer=True, minimum=1)
    ep: int = number(
        "MoE models: the routed experts split expert-parallel over ep of the replica's tp GPUs (whole "
        "experts, E/ep per GPU), tensor-parallel over tp/ep (TensorRT-LLM moe_expert_parallel_size)",
        1,
        integer=True,
        minimum=1,
    )
    attention_dp: bool = flag(
        "MoE models: every layer but the routed experts data-parallel over the replica's tp GPUs (each runs "
        "its own batch and KV cache), the experts sharded over all tp (TensorRT-LLM enable_attention_dp)",
        False,
    )


@dataclass(frozen=True)
class KVCache:
    precision: str = choice("precision of the cached keys and values", ("bf16", "fp16", "fp8"), "bf16")
    memory_fraction: float = number(
        "share of HBM the server may use for weights + KV cache (vLLM gpu_memory_utilization)",
        0.9,
        minimum=0,
        maximum=1,
        exclusive_minimum=True,
    )
    free_memory_fraction: float | None = number(
        "share of the HBM left after the weights that the KV cache may use (TensorRT-LLM "
        "kv_cache_free_gpu_mem_fraction); when given it replaces memory_fraction",
        None,
        minimum=0,
        maximum=1,
        exclusive_minimum=True,
        optional=True,
    )

    def budget(self, capacity: float, weights: float) -> float:
        """KV-cache bytes per GPU next to ``weights`` on a GPU of ``capacity`` usable bytes."""
        if self.free_memory_fraction is not None:
            return self.free_memory_fraction * (capacity - weights)
        return self.memory_fraction * capacity - weights


@dataclass(frozen=True)
class Scheduler:
    max_num_seqs: int = number("sequences running at once per replica", 256, integer=True, minimum=1)
    max_batch_tokens: int = number(
        "tokens per iteration (decode tokens + prefill)", 8192, integer=True, minimum=1
    )
    chunked_prefill: bool = flag("prefill in chunks that share iterations with decodes", True)
    cuda_graphs: bool = flag(
        "decode-only iterations replay a captured CUDA graph (one launch); iterations with prefill issue "
        "every kernel from the host (TensorRT-LLM's PyTorch backend); false: every iteration eager",
        True,
    )


MAX_REQUESTS = 1_000_000  # requests in one run: a typo'd count or a huge trace is refused, not run for days


@dataclass(frozen=True)
class Requests:
    count: int = number(
        "requests to serve (at most 1,000,000 in one run)",
        1000,
        integer=True,
        minimum=1,
        maximum=MAX_REQUESTS,
    )
    rate: float | None = number(
        "mean arrival rate, requests/s (Poisson); absent = offline (all arrive at t = 0)",
        None,
        minimum=0,
        exclusive_minimum=True,
        optional=True,
    )
    input_tokens: int = number("prompt tokens per request", 1024, integer=True, minimum=1)
    output_tokens: int = number("generated tokens per request", 256, integer=True, minimum=1)
    trace: str = text("CSV of arrival_s, input_tokens, output_tokens (replaces count/rate/tokens)", "")


@dataclass(frozen=True)
class _ServingFields:
    kind: str = choice("workload kind", ("inference",), "inference")
    name: str = text("name of this workload", "")
    parallelism: ServingParallelism = section("how the model is split", {})
    precision: str = choice("precision of the weights and GEMMs", tuple(WEIGHT_BYTES), "bf16")
    kv_cache: KVCache = section("KV cache", {})
    scheduler: Scheduler = section("continuous-batching scheduler", {})
    requests: Requests = section("the request stream", {})


@dataclass(frozen=True)
class InferenceSpec:
    """A validated serving workload."""

    name: str
    model: ModelSpec
    parallelism: ServingParallelism
    precision: str
    kv_cache: KVCache
    scheduler: Scheduler
    requests: Requests
    source_file: str = ""
    source_text: str = ""

    @property
    def gpus(self) -> int:
        return self.parallelism.tp * self.parallelism.replicas


def load_inference_spec(data: Mapping[str, Any], *, file: str, source_text: str = "") -> InferenceSpec:
    """Validate a ``kind: inference`` mapping; every mistake is one line naming the field."""
    import difflib

    data = dict(data)
    for key in data:
        if key not in INFERENCE_KEYS:
            close = difflib.get_close_matches(str(key), INFERENCE_KEYS, n=1)
            raise ConfigError("unknown field", file=file, path=str(key), expected=f"one of {', '.join(INFERENCE_KEYS)}",
                              hint=f"did you mean {close[0]!r}?" if close else None)  # fmt: skip
    model = resolve_model_section(data.pop("model", None), data.pop("preset", None), file=file)
    fields = build(_ServingFields, data, file=file, path="")
    par = fields.parallelism
    if model.mtp_layers:
        raise ConfigError("serving does not run multi-token-prediction modules (speculative decoding is not "
                          "modelled)", file=file, path="model.mtp_layers", value=model.mtp_layers,
                          expected="0 for kind: inference")  # fmt: skip
    if model.moe is not None and model.moe.latent and par.attention_dp:
        raise ConfigError("attention data parallelism with LatentMoE is not modelled (the gathered tokens "
                          "would be latent-wide)", file=file, path="parallelism.attention_dp", value=True,
                          expected="false (serve it tensor-parallel)")  # fmt: skip
    if model.hybrid_pattern is not None and par.attention_dp:
        raise ConfigError("attention data parallelism of a hybrid Mamba model is not modelled", file=file,
                          path="parallelism.attention_dp", value=True,
                          expected="false (serve it tensor-parallel)")  # fmt: skip
    if model.mamba is not None and (model.mamba.heads % par.tp or model.mamba.groups % par.tp):
        raise ConfigError(f"tp = {par.tp} does not divide the Mamba heads ({model.mamba.heads}) and "
                          f"groups ({model.mamba.groups})", file=file, path="parallelism.tp", value=par.tp,
                          expected="a divisor of both")  # fmt: skip
    if par.pp != 1:
        raise ConfigError("pipeline-parallel serving is not modelled", file=file, path="parallelism.pp",
                          value=par.pp, expected="1 (split with tp and replicas)")  # fmt: skip
    if par.attention_dp and model.moe is None:
        raise ConfigError("attention data parallelism shards the routed experts: it needs an MoE model",
                          file=file, path="parallelism.attention_dp", value=True,
                          expected="false for a dense model (serve it tensor-parallel)")  # fmt: skip
    if par.ep > 1 and (model.moe is None or par.tp % par.ep or model.moe.experts % par.ep):
        expected = ("1 for a dense model" if model.moe is None else
                    f"a divisor of tp = {par.tp} that divides experts = {model.moe.experts}")  # fmt: skip
        raise ConfigError("expert parallelism splits the routed experts over the replica's GPUs", file=file,
                          path="parallelism.ep", value=par.ep, expected=expected)  # fmt: skip
    if par.ep > 1 and par.attention_dp:
        raise ConfigError("attention_dp already splits whole experts over the replica's GPUs", file=file,
                          path="parallelism.ep", value=par.ep, expected="1 with attention_dp: true")  # fmt: skip
    heads_ok = par.attention_dp or model.heads % par.tp == 0
    if not heads_ok:
        divisors = [d for d in range(1, model.heads + 1) if model.heads % d == 0]
        raise ConfigError(f"tp = {par.tp} does not divide heads = {model.heads}", file=file, path="parallelism.tp",
                          value=par.tp, expected=f"one of {', '.join(map(str, divisors))}")  # fmt: skip
    req = fields.requests
    if req.trace:  # relative to the spec file first (sweeps and Dask workers run elsewhere), then as given
        given = Path(req.trace)
        candidates = [given] if given.is_absolute() else [Path(file).parent / given, given]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise ConfigError("trace file not found", file=file, path="requests.trace", value=req.trace,
                              expected="a CSV with columns arrival_s, input_tokens, output_tokens, next to "
                              "the spec or given from the working directory")  # fmt: skip
        req = dataclasses.replace(req, trace=str(found.resolve()))
    return InferenceSpec(
        name=fields.name or f"{model.name}-serving",
        model=model,
        parallelism=par,
        precision=fields.precision,
        kv_cache=fields.kv_cache,
        scheduler=fields.scheduler,
        requests=req,
        source_file=file,
        source_text=source_text,
    )


# ------------------------------------------------------------------------------------------ requests
@dataclass(slots=True)  # the scheduler reads and bumps every running sequence's fields each iteration
class Request:
    index: int
    arrival_s: float
    input_tokens: int
    output_tokens: int
    prefilled: int = 0
    generated: int = 0
    first_token_s: float = math.nan
    done_s: float = math.nan


def make_requests(spec: InferenceSpec, seed: int) -> list[Request]:
    """The request stream: a CSV trace, Poisson arrivals at ``rate``, or all at t = 0 (offline).

    The run starts with the first request (t = 0), as a benchmark client sends its first request at once: a
    trace's times count from its earliest arrival, and a Poisson stream's gaps are the ones between its requests.
    An idle lead-in would count in the energy (and the power series) but not in the throughput, which runs
    from the first arrival: a trace starting at 600 s reported 215x the energy per token of the same
    requests starting at 0."""
    req = spec.requests
    if req.trace:
        out = _read_trace(Path(req.trace))
        first = out[0].arrival_s
        for r in out:
            r.arrival_s -= first
        return out
    if req.rate is None:
        arrivals = np.zeros(req.count)
    else:
        rng = np.random.default_rng(seed)
        arrivals = np.cumsum(rng.exponential(1.0 / req.rate, req.count))
        arrivals -= arrivals[0]
    return [Request(i, float(t), req.input_tokens, req.output_tokens) for i, t in enumerate(arrivals)]


def _read_trace(path: Path) -> list[Request]:
    out: list[Request] = []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the trace: {exc}", file=str(path), expected="a UTF-8 CSV") from None
    reader = csv.DictReader(text.splitlines())
    need = {"arrival_s", "input_tokens", "output_tokens"}
    if not reader.fieldnames or not need <= set(reader.fieldnames):
        raise ConfigError("missing columns", file=str(path), value=reader.fieldnames,
                          expected="arrival_s, input_tokens, output_tokens")  # fmt: skip
    columns = ", ".join(reader.fieldnames)
    for row in reader:
        line = reader.line_num  # the physical line (blank lines are skipped, so not a row count)
        if None in row:  # csv puts values beyond the header's columns under the key None
            values = [row[k] for k in reader.fieldnames] + list(row[None])
            raise ConfigError(f"{len(values)} values, the header has {len(reader.fieldnames)} columns",
                              file=str(path), path=f"line {line}", value=",".join(values),
                              expected=f"one value per column: {columns}")  # fmt: skip
        try:
            t, n_in, n_out = float(row["arrival_s"]), int(row["input_tokens"]), int(row["output_tokens"])
        except (TypeError, ValueError):  # a short row gives None
            raise ConfigError("not a number", file=str(path), path=f"line {line}", value=dict(row),
                              expected="arrival_s (s), input_tokens, output_tokens (whole numbers)") from None  # fmt: skip
        if not math.isfinite(t) or t < 0 or n_in < 1 or n_out < 1:
            raise ConfigError("out of range", file=str(path), path=f"line {line}", value=dict(row),
                              expected="a finite arrival_s >= 0, token counts >= 1")  # fmt: skip
        out.append(Request(len(out), t, n_in, n_out))
        if len(out) > MAX_REQUESTS:
            raise ConfigError(f"more than {MAX_REQUESTS:,} requests", file=str(path), path=f"line {line}",
                              expected=f"at most {MAX_REQUESTS:,} rows in one run (as requests.count)")  # fmt: skip
    if not out:
        raise ConfigError("no requests", file=str(path), expected="at least one row")
    out.sort(key=lambda r: (r.arrival_s, r.index))
    return out


# ------------------------------------------------------------------------------------------ costs
@dataclass(frozen=True)
class ReplicaCosts:
    """Per-GPU sizes of one replica that the iteration cost needs (after TP sharding)."""

    layers: int
    weight_bytes_dense: float  # per layer, everything but routed experts
    flops_per_token_layer: float  # 2 x active parameters of a layer but the routed experts'
    act_bytes_per_token_layer: float  # activation traffic through a layer's kernels
    heads: float  # attention heads per GPU
    head_dim: float
    attention_head_dim: float  # head dim of the prefill attention kernel (MLA prefill runs per head, 192)
    prefill_head_dims: float  # query-key + value width of a prefill head: 2·head_dim; MLA 192 + 128, not the
    # latent its absorbed decode attends in
    kv_bytes_per_token_layer: float  # cached K and V of one token in one layer, per GPU
    lm_head_flops_per_token: float
    lm_head_bytes: float
    hidden: int
    gemm_min_dim: float  # smallest weight dimension of the layer's GEMMs on one GPU
    head_min_dim: float
    weights_per_gpu: float  # all weights of the replica on one GPU
    window: int | None = None  # sliding-window layers attend to (and cache) their last `window` tokens
    windowed_layers: int = 0
    tp_allreduces: int = 0  # TP all-reduces of one iteration: two per transformer layer (attention and FFN
    # outputs), one per hybrid block (its one mixer's); none with attention_dp
    # The routed experts (routed_work), their own GEMMs: each expert's is as narrow as its FFN width. With
    # attention_dp the fields above are one DP rank's own share (its batch, its KV cache, the replicated
    # layers) and the routed experts run every rank's tokens, sharded over all tp GPUs.
    ranks: int = 1  # DP ranks per replica (tp with attention_dp, else 1)
    routed_experts: int = 0
    routed_top_k: int = 0
    routed_expert_bytes: float = 0.0  # one routed expert on one GPU, per layer (MoE share folded in)
    routed_flops_per_token_layer: float = 0.0
    routed_act_bytes_per_token_layer: float = 0.0
    routed_min_dim: float = 0.0
    moe_layers: int = 0
    kernels: int = 0  # kernels of one iteration on one GPU (serving_kernels_per_layer over the layers + the
    # iteration's own), without the second attention kernel of a mixed iteration
    # A hybrid model's blocks: only `attention_layers` attend and cache K and V (None = every layer); each
    # of its `mamba_layers` keeps a fixed recurrent state per sequence instead (SSM state in fp32 + conv
    # window), read and written by every decode step and computed by the prefill's SSD scan.
    attention_layers: int | None = None
    mamba_layers: int = 0
    mamba_state_bytes: float = 0.0  # one sequence's state in one Mamba layer, per GPU
    mamba_scan_flops_per_token: float = 0.0  # prefill SSD scan, one layer, per GPU
    mamba_scan_bytes_per_token: float = 0.0
    mamba_decode_flops_per_token: float = 0.0  # the state update and its read-out, one layer, per GPU
    mamba_head_dim: float = 0.0

    @property
    def cached_layers(self) -> int:
        """Layers that cache K and V."""
        return self.layers if self.attention_layers is None else self.attention_layers

    def kv_bytes(self, tokens: float) -> float:
        """KV cache of one sequence of ``tokens`` over all layers (windowed layers keep their window), plus a
        hybrid model's fixed Mamba state."""
        full = (self.cached_layers - self.windowed_layers) * tokens
        band = self.windowed_layers * min(tokens, self.window) if self.window is not None else 0.0
        return (full + band) * self.kv_bytes_per_token_layer + self.mamba_layers * self.mamba_state_bytes


# Kernels of the serving engine outside the layers: embedding lookup, final norm, LM head, and the sampler
# (logits gather, softmax / top-k, token write-back).
ITERATION_KERNELS = 6


def serving_kernels_per_layer(m: ModelSpec, layer_index: int, tp: int, precision: str) -> int:
    """Kernels one GPU runs for one layer of a serving iteration (TensorRT-LLM's PyTorch backend): the
    GEMMs, each FP8 / FP4 GEMM's activation quantisation, the two fused residual + RMSNorm kernels, RoPE
    with the KV-cache write, one attention kernel (a second one when prefill and decode share the
    iteration: ``+1``, added by the caller), QK-norm, MLA's latent norms, the TP all-reduces, and the MoE
    block (router GEMM, top-k, permutation, two grouped GEMMs, activation, finalisation). A hybrid model's
    blocks run their one mixer: a Mamba-2 block its norm, in_proj, conv, scan (or decode's state update),
    gated norm and out_proj."""
    quantized = precision in ("fp8", "fp4")
    gemm = 2 if quantized else 1
    kind = m.layer_kind(layer_index)
    if kind == "mamba":  # norm, in_proj, conv, scan (or the state update), gated norm, out_proj, all-reduce
        return 1 + 2 * gemm + 3 + (1 if tp > 1 else 0)
    blocks = 2 if kind == "transformer" else 1  # a hybrid block has one norm and one TP all-reduce
    kernels = blocks + (blocks if tp > 1 else 0)
    if m.has_attention(layer_index):
        attention_gemms = 2 if m.mla is None else 5  # qkv + out; MLA: q (down, up), kv (down, up), out
        kernels += 1 + 1 + attention_gemms * gemm  # rope + cache write, attention
        kernels += 2 if m.qk_norm else 0
        kernels += 2 if m.mla is not None else 0  # RMSNorms of the q and kv latents (DeepSeek-V2/V3)
    if not m.has_ffn(layer_index):
        return kernels
    if m.is_moe_layer(layer_index):
        moe = m.moe
        assert moe is not None
        kernels += 7 + (2 if quantized else 0)
        if moe.shared_experts:
            kernels += 3 + (2 if quantized else 0)
    else:
        kernels += 3 + (2 if quantized else 0)  # up (gate + up), activation, down
    return kernels


def _iteration_kernels(spec: InferenceSpec) -> int:
    """Kernels of one iteration on one GPU: every layer's (attention DP: no all-reduce, but the experts'
    all-gather and reduce-scatter in each MoE layer) and the iteration's own."""
    m, tp, adp = spec.model, spec.parallelism.tp, spec.parallelism.attention_dp
    layers = sum(serving_kernels_per_layer(m, i, 1 if adp else tp, spec.precision) for i in range(m.layers))
    if adp and tp > 1:
        layers += 2 * sum(1 for i in range(m.layers) if m.is_moe_layer(i))
    return layers + ITERATION_KERNELS


def _cache_per_token(m: ModelSpec, kv_heads: float, kvb: float) -> tuple[float, float]:
    """(KV bytes one token caches in one layer on one GPU holding ``kv_heads``, the decode attention's
    query-key width). MLA caches its latent and rope key once per token, whole on every rank, and its
    absorbed attention runs in the latent space."""
    if m.mla is not None:
        latent = m.mla.kv_lora_rank + m.mla.qk_rope_head_dim
        return latent * kvb, float(latent)
    d = float(m.head_dim or m.hidden // m.heads)
    return 2.0 * kv_heads * d * kvb, d


def replica_costs(spec: InferenceSpec) -> ReplicaCosts:
    if spec.parallelism.attention_dp:
        return _attention_dp_costs(spec)
    m, tp = spec.model, spec.parallelism.tp
    wb = WEIGHT_BYTES[spec.precision]
    kvb = WEIGHT_BYTES[spec.kv_cache.precision]
    lp = [layer_params(m, i) for i in range(m.layers)]
    dense = sum(p.total - p.routed_experts for p in lp) / m.layers
    active = sum(p.active for p in lp) / m.layers
    active_routed = sum(p.active_routed for p in lp) / m.layers
    d = float(m.head_dim or m.hidden // m.heads)
    kv_token, qk_dim = _cache_per_token(m, kv_heads_per_rank(m, tp), kvb)
    up = 2 if m.ffn == "swiglu" else 1
    dense_ffn = sum((up + 1) * m.dense_ffn_hidden for p in lp if p.dense_ffn) / m.layers
    # the narrowest weight dimension of the attention projections and dense FFN layers (the shared experts'
    # few GEMMs ride along at that efficiency)
    dense_widths = [m.dense_ffn_hidden / tp] if dense_ffn else []
    attending = sum(1 for i in range(m.layers) if m.has_attention(i)) / m.layers  # < 1 in a hybrid model
    act = ACT_BYTES * (6 * m.hidden + attending * (m.heads + 2 * m.kv_heads) * d / tp + dense_ffn / tp)
    head = m.vocab * m.hidden
    eb, edge = EDGE_WEIGHT_BYTES, embedding_params(m) + output_params(m)
    return ReplicaCosts(
        layers=m.layers,
        weight_bytes_dense=dense * wb / tp,
        flops_per_token_layer=2.0 * (active - active_routed) / tp,
        act_bytes_per_token_layer=act,
        heads=m.heads / tp,
        head_dim=qk_dim,
        attention_head_dim=float(m.qk_head_dim),
        prefill_head_dims=float(m.qk_head_dim + m.v_head_dim),
        kv_bytes_per_token_layer=kv_token,
        lm_head_flops_per_token=2.0 * head / tp,
        lm_head_bytes=head * eb / tp,
        hidden=m.hidden,
        gemm_min_dim=float(min(m.hidden, (m.heads + 2 * m.kv_heads) * d / tp, *dense_widths)),
        head_min_dim=float(min(m.hidden, m.vocab / tp)),
        weights_per_gpu=((total_params(m) - edge) * wb + edge * eb) / tp,
        window=m.sliding_window,
        windowed_layers=sum(
            1 for i in range(m.layers) if m.has_attention(i) and m.attention_window(i) is not None
        ),
        tp_allreduces=sum(2 if m.layer_kind(i) == "transformer" else 1 for i in range(m.layers)),
        kernels=_iteration_kernels(spec),
        **_routed_fields(spec, lp, spec.parallelism.ep),
        **_mamba_fields(spec),
    )


def _mamba_fields(spec: InferenceSpec) -> dict[str, Any]:
    """The ReplicaCosts fields of a hybrid model's blocks on one of the replica's tp GPUs (none for a
    transformer): which layers attend, and the Mamba-2 layers' per-sequence state and scan costs."""
    m, tp = spec.model, spec.parallelism.tp
    if m.hybrid_pattern is None:
        return {}
    out: dict[str, Any] = {"attention_layers": sum(1 for i in range(m.layers) if m.has_attention(i))}
    if m.mamba is not None:
        mb = m.mamba
        flops, nbytes = ssd_scan_cost(spec.model, tp=tp, seq_len=mb.chunk, dtype_bytes=ACT_BYTES)
        out.update(
            mamba_layers=sum(1 for i in range(m.layers) if m.is_mamba_layer(i)),
            mamba_state_bytes=mamba_state_bytes(m, tp=tp, dtype_bytes=ACT_BYTES),
            mamba_scan_flops_per_token=flops,
            mamba_scan_bytes_per_token=nbytes,
            # h = exp(dt·A)·h + B·x, then y = C·h: ~4 FLOPs per state element of the local heads
            mamba_decode_flops_per_token=4.0 * mb.heads / tp * mb.head_dim * mb.state,
            mamba_head_dim=float(mb.head_dim),
        )
    return out


def _routed_fields(spec: InferenceSpec, lp: list[LayerParams], ep: int) -> dict[str, Any]:
    """The ReplicaCosts fields of the routed experts on one of the replica's tp GPUs (none for a dense
    model): a 1/tp share of the bytes and FLOPs of every expert (balanced routing), each expert's GEMM
    ``expert_ffn · ep / tp`` wide (whole experts over ep GPUs, tensor parallel over tp / ep)."""
    m, tp, moe = spec.model, spec.parallelism.tp, spec.model.moe
    routed = [p for p in lp if p.routed_experts]
    if moe is None or not routed:
        return {}
    wb = WEIGHT_BYTES[spec.precision]
    up = 2 if m.ffn == "swiglu" else 1
    moe_share = len(routed) / m.layers
    return {
        "routed_experts": moe.experts,
        "routed_top_k": moe.top_k,
        "routed_expert_bytes": routed[-1].routed_experts / moe.experts * wb / tp * moe_share,
        "routed_flops_per_token_layer": 2.0 * sum(p.active_routed for p in lp) / m.layers / tp,
        "routed_act_bytes_per_token_layer": ACT_BYTES
        * (up + 1)
        * moe.top_k
        * moe.expert_ffn_hidden
        / tp
        * moe_share,
        "routed_min_dim": float(min(moe.latent or m.hidden, moe.expert_ffn_hidden * ep / tp)),
        "moe_layers": len(routed),
    }


def _attention_dp_costs(spec: InferenceSpec) -> ReplicaCosts:
    """One DP rank of an attention-data-parallel replica: attention, norms, dense layers, embedding and LM
    head whole on every GPU for its own batch and KV cache (all KV heads); the routed experts of every
    rank's tokens sharded over the replica's tp GPUs (expert or tensor parallel: the same bytes and FLOPs
    per GPU when the routing is balanced)."""
    m, tp = spec.model, spec.parallelism.tp
    moe = m.moe
    assert moe is not None  # load_inference_spec rejects attention_dp for dense models
    wb = WEIGHT_BYTES[spec.precision]
    kvb = WEIGHT_BYTES[spec.kv_cache.precision]
    lp = [layer_params(m, i) for i in range(m.layers)]
    replicated = sum(p.total - p.routed_experts for p in lp) / m.layers
    active_routed = sum(p.active_routed for p in lp) / m.layers
    d = float(m.head_dim or m.hidden // m.heads)
    kv_token, qk_dim = _cache_per_token(m, m.kv_heads, kvb)
    up = 2 if m.ffn == "swiglu" else 1
    dense_ffn = sum((up + 1) * m.dense_ffn_hidden for p in lp if not p.routed_experts)
    qkv = (m.heads + 2 * m.kv_heads) * d
    head = m.vocab * m.hidden
    eb, edge = EDGE_WEIGHT_BYTES, embedding_params(m) + output_params(m)
    routed_total = sum(p.routed_experts for p in lp)
    return ReplicaCosts(
        layers=m.layers,
        weight_bytes_dense=replicated * wb,
        flops_per_token_layer=2.0 * (sum(p.active for p in lp) / m.layers - active_routed),
        act_bytes_per_token_layer=ACT_BYTES * (6 * m.hidden + qkv + dense_ffn / m.layers),
        heads=float(m.heads),
        head_dim=qk_dim,
        attention_head_dim=float(m.qk_head_dim),
        prefill_head_dims=float(m.qk_head_dim + m.v_head_dim),
        kv_bytes_per_token_layer=kv_token,
        lm_head_flops_per_token=2.0 * head,
        lm_head_bytes=head * eb,
        hidden=m.hidden,
        gemm_min_dim=float(min(m.hidden, qkv)),
        head_min_dim=float(m.hidden),
        weights_per_gpu=(total_params(m) - routed_total - edge) * wb + edge * eb + routed_total * wb / tp,
        window=m.sliding_window,
        windowed_layers=sum(1 for i in range(m.layers) if m.attention_window(i) is not None),
        ranks=tp,
        kernels=_iteration_kernels(spec),
        **_routed_fields(spec, lp, tp),  # expert parallel over the replica: whole experts
    )


def _keys_attended(cached: int, new: int, window: int | None) -> float:
    """Keys the ``new`` tokens after ``cached`` attend to in all (causal, within the window), in the
    continuous convention of the flash kernel's executed share: the integral of min(x, window) over
    [cached, cached + new], which is new·(cached + new/2) without a window (the causal triangle)."""
    lo, hi = float(cached), float(cached + new)
    if window is None or hi <= window:
        return new * (cached + new / 2.0)
    if lo >= window:
        return new * float(window)
    return (window * window - lo * lo) / 2.0 + (hi - window) * window


def _flash_keys(cached: int, new: int, window: int | None) -> float:
    """Keys a flash kernel computes for the chunk: the band, plus the tile each query's window edge cuts
    (model.flash_keys_per_query), never more than without the window."""
    full = _keys_attended(cached, new, None)
    if window is None:
        return full
    return min(_keys_attended(cached, new, window) + new * FLASH_TILE, full)


def tile_rows(rows: float, row_tile: int) -> float:
    """Rows a GEMM of ``rows`` token rows computes: whole tiles of ``row_tile`` rows (none for none)."""
    return math.ceil(rows / row_tile - 1e-9) * row_tile if rows > 0 else 0.0


@functools.lru_cache(maxsize=4096)
def expert_tile_rows(tokens: int, top_k: int, experts: int, row_tile: int) -> float:
    """Rows the routed experts' GEMMs compute in all when ``tokens`` each pick ``top_k`` of ``experts``
    (balanced routing: an expert's count is Binomial(tokens, k/E)), each count rounded up to whole tiles:
    ``E · E[ceil(X / tile) · tile]``; ``tokens · k`` with one-row tiles."""
    if tokens <= 0:
        return 0.0
    if row_tile == 1:
        return float(tokens * top_k)
    p = top_k / experts
    if p >= 1.0:  # every expert sees every token
        return experts * tile_rows(tokens, row_tile)
    x = np.arange(tokens + 1, dtype=np.float64)
    steps = np.log(tokens - x[:-1]) - np.log(x[:-1] + 1.0) + math.log(p / (1.0 - p))
    log_pmf = tokens * math.log1p(-p) + np.concatenate(([0.0], np.cumsum(steps)))
    padded = np.ceil(x / row_tile) * row_tile
    return float(experts * np.dot(np.exp(log_pmf), padded))


def iteration_work(
    c: ReplicaCosts, decode_ctx: list[int], prefill: list[tuple[int, int]], logits: int, *, row_tile: int
) -> tuple[tuple[tuple[float, float, float, int], ...], float]:
    """Kernels of one iteration on one GPU but the routed experts' (``routed_work``), as the engine's fused
    work, and the bytes of one TP all-reduce.

    ``decode_ctx``: cached context of each decoding sequence; ``prefill``: (tokens already cached, chunk)
    per prefilling sequence; ``logits``: sequences that emit a token (LM head rows); ``row_tile``: rows
    of one GEMM tile (the profile's ``calibration.gemm.<dtype>.row_tile``).
    """
    tokens = len(decode_ctx) + sum(n for _, n in prefill)
    gemm_bytes = c.weight_bytes_dense + tokens * c.act_bytes_per_token_layer
    # The efficiency curve's small-dimension penalty applies to the weight dimensions: a few-token decode
    # GEMM is bound by reading the weights (its HBM term). Its token rows fill whole tiles: 158 decodes
    # compute 192 rows at a 64-row tile, which is what a compute-bound mid-size batch pays.
    gemm = (tile_rows(tokens, row_tile) * c.flops_per_token_layer, gemm_bytes, c.gemm_min_dim, KIND_GEMM)

    def layer(window: int | None) -> tuple[tuple[float, float, float, int], ...]:
        items = [gemm]
        if prefill:  # flash attention over the cached context (its window) + the causal chunk
            keys = sum(_flash_keys(p, n, window) for p, n in prefill)
            read = sum((p if window is None else min(p, window)) + n for p, n in prefill)
            flops = 2.0 * keys * c.heads * c.prefill_head_dims  # QK^T and PV (MLA: per head, not absorbed)
            items.append((flops, read * c.kv_bytes_per_token_layer, c.attention_head_dim, KIND_ATTENTION))
        if decode_ctx:  # one query per sequence against its cache (its window): HBM-bound for GQA (~16
            # FLOPs per cached byte); MLA's absorbed attention with many heads per GPU (attention DP: 128)
            # does ~512 and is bound by its tensor cores (FlashMLA), so its FLOPs count
            ctx = float(sum(decode_ctx) if window is None else sum(min(n, window) for n in decode_ctx))
            items.append(
                (
                    4.0 * ctx * c.heads * c.head_dim,
                    ctx * c.kv_bytes_per_token_layer,
                    c.head_dim,
                    KIND_ATTENTION,
                )
            )
        return tuple(items)

    # (ops, layers that run them): the work is hundreds of ops, a few of them repeated layer after layer
    parts = [(layer(None), c.cached_layers - c.windowed_layers)]
    windowed = [(layer(c.window), c.windowed_layers)] if c.windowed_layers else []
    if c.cached_layers < c.layers:  # a hybrid model's other blocks: their GEMMs, and the Mamba layers' states
        mamba: list[tuple[float, float, float, int]] = [gemm]
        if prefill:
            # the SSD scan over the chunk; a sequence's state read (after its first chunk) and written
            chunk = sum(n for _, n in prefill)
            states = sum((2 if p else 1) for p, _ in prefill) * c.mamba_state_bytes
            mamba.append(
                (
                    chunk * c.mamba_scan_flops_per_token,
                    chunk * c.mamba_scan_bytes_per_token + states,
                    c.mamba_head_dim,
                    KIND_ATTENTION,
                )
            )
        if decode_ctx:  # one state update per sequence: its state read and written, whatever its context
            n = len(decode_ctx)
            mamba.append(
                (n * c.mamba_decode_flops_per_token, 2.0 * n * c.mamba_state_bytes, 0.0, KIND_ELEMENTWISE)
            )
        others = c.layers - c.cached_layers - c.mamba_layers
        parts += [(tuple(mamba), c.mamba_layers), ((gemm,), others)]
    head_bytes = c.lm_head_bytes + logits * c.hidden * ACT_BYTES
    head = (tile_rows(logits, row_tile) * c.lm_head_flops_per_token, head_bytes, c.head_min_dim, KIND_GEMM)
    parts += windowed + ([((head,), 1)] if logits else [])
    return FusedWork.repeated(parts), tokens * c.hidden * ACT_BYTES


def routed_work(
    c: ReplicaCosts, tokens: int, *, row_tile: int
) -> tuple[tuple[float, float, float, int], ...]:
    """The routed experts of an iteration on one GPU (every DP rank's ``tokens`` with attention DP): the
    experts they touch (``E·(1 − (1 − k/E)^tokens)``) read once, a 1/tp share of their FLOPs, at the
    efficiency of a GEMM as narrow as one expert's FFN on one GPU; each expert's rows fill whole tiles of
    ``row_tile`` (``expert_tile_rows``)."""
    touched = c.routed_experts * -math.expm1(tokens * math.log1p(-c.routed_top_k / c.routed_experts))
    rows = expert_tile_rows(tokens, c.routed_top_k, c.routed_experts, row_tile)
    item = (
        rows * c.routed_flops_per_token_layer / c.routed_top_k,
        touched * c.routed_expert_bytes + tokens * c.routed_act_bytes_per_token_layer,
        c.routed_min_dim,
        KIND_GEMM,
    )
    return FusedWork.repeated([((item,), c.layers)])


def attention_dtype(precision: str) -> str:
    """Precision the attention kernels (prefill flash attention, a Mamba block's SSD scan) run at beside
    GEMMs of ``precision``: FP8 under FP4 weights, as there is no FP4 flash-attention or scan kernel
    (TensorRT-LLM's FMHA goes down to FP8); the weights' own precision otherwise."""
    return "fp8" if precision == "fp4" else precision


def split_attention(
    work: tuple[tuple[float, float, float, int], ...],
) -> tuple[tuple[tuple[float, float, float, int], ...], tuple[tuple[float, float, float, int], ...]]:
    """(the ops but the attention kernels, the attention kernels) of an iteration's work."""
    fused = work if isinstance(work, FusedWork) else FusedWork(work)
    return fused.where(lambda op: op[3] != KIND_ATTENTION), fused.where(lambda op: op[3] == KIND_ATTENTION)


def slowest_rank(
    model: Any, works: list[tuple[tuple[float, float, float, int], ...]], dtype: str, clock: float
) -> int:
    """Index of the DP rank whose own work takes longest on ``model`` (a ComputeModel): the other ranks wait
    for it at the experts' all-gather. One roofline call for all ranks (two when the attention kernels run
    at another precision), not memoised (fresh every iteration)."""
    if len(works) == 1:
        return 0
    rows = [(d, *op) for d, w in enumerate(works) for op in w]
    arr = np.array(rows, dtype=np.float64)
    kinds = arr[:, 4].astype(np.int64)
    t, _, _ = model.times(arr[:, 1], arr[:, 2], arr[:, 3], kinds, dtype, clock)
    if attention_dtype(dtype) != dtype:
        ta, _, _ = model.times(arr[:, 1], arr[:, 2], arr[:, 3], kinds, attention_dtype(dtype), clock)
        t = np.where(kinds == KIND_ATTENTION, ta, t)
    return int(np.argmax(np.bincount(arr[:, 0].astype(np.int64), weights=t, minlength=len(works))))


# ------------------------------------------------------------------------------------------ serving
@dataclass
class ServingStats:
    """What the replicas measured."""

    requests: list[Request]
    iterations: int = 0
    iteration_time_s: float = 0.0
    tokens_processed: int = 0
    peak_kv_bytes: float = 0.0
    kv_capacity_bytes: float = 0.0
    ends: list[float] = field(default_factory=list)


class ServingJob:
    """The replicas as simpy processes on a Machine (one rank class per replica)."""

    def __init__(self, spec: InferenceSpec, machine: Any, seed: int = 0) -> None:
        self.spec, self.machine = spec, machine
        machine.profile.peak_flops(spec.precision)  # fp4 on an H100 is an input error: say so first
        self.costs = replica_costs(spec)
        self.row_tile = machine.compute_model.row_tile(spec.precision)
        tp = spec.parallelism.tp
        capacity = machine.profile.accelerator.hbm_capacity
        kv_capacity = spec.kv_cache.budget(capacity, self.costs.weights_per_gpu)
        free = spec.kv_cache.free_memory_fraction
        hbm = capacity if free is not None else capacity * spec.kv_cache.memory_fraction  # usable
        requests = make_requests(spec, seed)
        longest = max((r.input_tokens + r.output_tokens for r in requests), default=0)
        if kv_capacity < self.costs.kv_bytes(longest):
            from simcore.errors import CapacityError

            need = self.costs.kv_bytes(longest)
            where = spec.source_file or spec.name
            if kv_capacity > 0 and need > 0.5 * hbm:  # the request, not the weights, is what does not fit
                raise CapacityError(
                    f"{where}: one request of {longest:,} tokens needs {need / 1e9:.1f} GB of KV cache per "
                    f"GPU; {kv_capacity / 1e9:.1f} GB of the {hbm / 1e9:.1f} GB usable are left after the "
                    f"weights; try shorter requests (requests.input_tokens / output_tokens) or "
                    f"{self._capacity_remedies(longest)}"
                )
            raise CapacityError(
                f"{where}: the weights need {self.costs.weights_per_gpu / 1e9:.1f} GB of the "
                f"{hbm / 1e9:.1f} GB usable per GPU, leaving no room for one request's KV cache "
                f"({need / 1e9:.2f} GB); try {self._capacity_remedies(longest)}"
            )
        self.stats = ServingStats(requests, kv_capacity_bytes=kv_capacity)
        self.queues: list[deque[Request]] = []
        self.wakeups: list[simpy.Event] = []
        self.outstanding: list[int] = []
        self.class_stage: list[int] = []
        self.groups: list[Any] = []
        for r in range(spec.parallelism.replicas):
            gpus = np.arange(r * tp, (r + 1) * tp)
            cls = machine.add_class(f"replica{r}", gpus)
            self.class_stage.append(0)
            layout = machine.cluster.layout(gpus)
            # attention DP: the group carries the experts' all-gather / reduce-scatter
            kind = "ep" if spec.parallelism.attention_dp else "tp"
            self.groups.append(machine.group(kind, layout, (cls,)) if tp > 1 else None)
            self.queues.append(deque())
            self.wakeups.append(machine.env.event())
            self.outstanding.append(0)
            machine.alloc(cls, self.costs.weights_per_gpu)

    def _capacity_remedies(self, tokens: int) -> str:
        """Single changes after which one request of ``tokens`` fits beside the weights: more GPUs per
        replica, narrower weights the accelerator runs, a narrower KV cache; when none fits alone, the
        smallest tp that fits with the narrowest weights (the suggestion is checked, not a direction)."""
        spec, acc = self.spec, self.machine.profile.accelerator
        tp = spec.parallelism.tp

        def fits(**changes: Any) -> bool:
            width = changes.pop("tp", tp)
            if not spec.parallelism.attention_dp and spec.model.heads % width:
                return False  # tensor parallelism splits the heads
            par = dataclasses.replace(spec.parallelism, tp=width)
            try:
                costs = replica_costs(dataclasses.replace(spec, parallelism=par, **changes))
            except Exception:  # a layout this model cannot take (heads not divisible, ...)
                return False
            cache = changes.get("kv_cache", spec.kv_cache)
            return cache.budget(acc.hbm_capacity, costs.weights_per_gpu) >= costs.kv_bytes(tokens)

        widths = [tp * 2**k for k in range(1, 8)]
        narrower = [p for p in ("fp8", "fp4") if WEIGHT_BYTES[p] < WEIGHT_BYTES[spec.precision]]
        runnable = [p for p in narrower if p in acc.peak_flops]
        wider = next((t for t in widths if fits(tp=t)), None)  # the smallest tp that fits
        out = [f"tp: {wider}"] if wider else []
        out += [f"precision: {p}" for p in runnable if fits(precision=p)][:1]
        if WEIGHT_BYTES[spec.kv_cache.precision] > WEIGHT_BYTES["fp8"]:
            cache = dataclasses.replace(spec.kv_cache, precision="fp8")
            if fits(kv_cache=cache):
                out.append("kv_cache.precision: fp8")
        if not out and runnable:
            both = next((t for t in widths if fits(tp=t, precision=runnable[-1])), None)
            out += [f"tp: {both} with precision: {runnable[-1]}"] if both else []
        if not out:
            return f"more GPUs per replica than tp: {widths[-1]}, or a larger accelerator (none of tp, precision fits)"
        return " or ".join(out)

    @property
    def step_times(self) -> Any:
        """The whole run as one 'step' (the trace and the breakdown use step boundaries)."""
        return _Ends([max(self.stats.ends, default=0.0)])

    def start(self) -> list[simpy.Process]:
        env = self.machine.env
        procs = [env.process(self._arrivals())]
        procs += [env.process(self._replica(r)) for r in range(len(self.queues))]
        return procs

    def _arrivals(self) -> Generator[simpy.Event, Any, None]:
        env = self.machine.env
        for req in self.stats.requests:
            if req.arrival_s > env.now:
                yield env.timeout(req.arrival_s - env.now)
            r = min(range(len(self.queues)), key=lambda i: (self.outstanding[i], i))
            self.queues[r].append(req)
            self.outstanding[r] += 1
            if not self.wakeups[r].triggered:
                self.wakeups[r].succeed()
        for r in range(len(self.queues)):  # no more arrivals: idle replicas may stop
            self.queues[r].append(None)  # type: ignore[arg-type]
            if not self.wakeups[r].triggered:
                self.wakeups[r].succeed()

    def _admit(
        self, queue: deque[Request], running: list[list[Request]], kv_used: list[float], cutoff: float | None
    ) -> None:
        """Admit waiting requests first come, first served, each to the DP rank with the fewest running
        sequences that has a sequence slot and KV room for the whole request (reserved now: no preemption).
        ``cutoff``: requests that arrived after it wait for the next iteration (its host work began then)."""
        sch, capacity = self.spec.scheduler, self.stats.kv_capacity_bytes
        while queue and queue[0] is not None:
            if cutoff is not None and queue[0].arrival_s > cutoff:
                return
            need = self.costs.kv_bytes(queue[0].input_tokens + queue[0].output_tokens)
            ranks = sorted(
                (d for d in range(len(running)) if len(running[d]) < sch.max_num_seqs),
                key=lambda d: (len(running[d]), d),
            )
            fits = next((d for d in ranks if kv_used[d] + need <= capacity), None)
            if fits is None:
                return
            running[fits].append(queue.popleft())
            kv_used[fits] += need

    def _batch(
        self, running: list[Request], decoding: int
    ) -> tuple[list[Request], list[tuple[Request, int]]]:
        """One rank's iteration: a decode token per running sequence, then prefill chunks within the token
        budget (whole prompts in prefill-only iterations without chunked prefill).

        ``decoding``: how many sequences lead ``running`` with their prompt prefilled. Prompts are prefilled
        in admission order (a chunk goes to a later prompt only once the earlier ones are done) and only
        decoding sequences finish, so ``running`` is always its decoding sequences, then its prefilling
        ones: the split needs no pass over every running sequence each iteration."""
        sch = self.spec.scheduler
        budget = sch.max_batch_tokens
        decode = running[: min(decoding, budget)]
        chunks: list[tuple[Request, int]] = []
        if decoding < len(running):
            room = budget - len(decode) if sch.chunked_prefill else budget
            if not sch.chunked_prefill:
                decode = []  # prefill-first iterations (vLLM without chunked prefill)
            for i in range(decoding, len(running)):
                q = running[i]
                left = q.input_tokens - q.prefilled
                if room <= 0 or (not sch.chunked_prefill and chunks and left > room):
                    break
                # whole prompts without chunking (one longer than the budget runs alone)
                n = min(left, room) if sch.chunked_prefill else left
                chunks.append((q, n))
                room -= n
        return decode, chunks

    def _host_time(self, batches: list[tuple[list[Request], list[tuple[Request, int]]]]) -> float:
        """Host work of one iteration on the busiest DP rank's host thread: its sequences, and the kernel
        launches (one graph replay for a decode-only iteration, every kernel otherwise)."""
        cal = self.machine.profile.calibration
        eager = not self.spec.scheduler.cuda_graphs or any(chunks for _, chunks in batches)

        def rank(decode: list[Request], chunks: list[tuple[Request, int]]) -> float:
            if eager:  # every rank runs eager when one prefills (the ranks meet at the experts)
                mixed = bool(decode and chunks)  # context and generation attention kernels
                launches = self.costs.kernels + (self.costs.layers if mixed else 0)
            else:
                launches = 1
            sequences = len(decode) + len(chunks)
            return cal.serving_sequence_host_time * sequences + cal.serving_kernel_host_time * launches

        return max(rank(decode, chunks) for decode, chunks in batches)

    def _replica(self, r: int) -> Generator[simpy.Event, Any, None]:
        m, env = self.machine, self.machine.env
        c, group, queue = self.costs, self.groups[r], self.queues[r]
        running: list[list[Request]] = [[] for _ in range(c.ranks)]
        decoding = [0] * c.ranks  # per rank: the first running sequences, whose prompt is prefilled
        kv_used = [0.0] * c.ranks
        closed = False
        previous_start: float | None = None
        cal = m.profile.calibration
        host_overlap = bool(cal.serving_sequence_host_time or cal.serving_kernel_host_time)
        while True:
            # 1. admit (FIFO) while there is room; the whole request's KV is reserved. With host work overlapped
            # (prepared while the GPU ran the previous iteration), a request that arrived after that
            # preparation began joins the next iteration instead of holding this one back for every sequence.
            overlapped = previous_start is not None and any(running) and host_overlap
            self._admit(queue, running, kv_used, previous_start if overlapped else None)
            if queue and queue[0] is None:
                closed = True
                queue.popleft()
            self.stats.peak_kv_bytes = max(self.stats.peak_kv_bytes, *kv_used)
            busy = any(running)
            if not busy and queue and queue[0] is not None:  # every request fits an empty cache (checked)
                raise RuntimeError(f"replica {r}: nothing runs yet request {queue[0].index} is not admitted")
            if not busy:
                if closed and not queue:
                    self.stats.ends.append(env.now)
                    return
                self.wakeups[r] = env.event()
                yield self.wakeups[r]
                continue
            # 2. each rank's iteration: decodes first, then prefill chunks within the token budget
            batches = [self._batch(run, n) for run, n in zip(running, decoding, strict=True)]
            finishing = [[q for q, n in chunks if q.prefilled + n == q.input_tokens] for _, chunks in batches]
            works, ar_bytes = [], 0.0
            for (decode, chunks), done in zip(batches, finishing, strict=True):
                if not decode and not chunks:
                    works.append(())
                    continue
                work, ar_bytes = iteration_work(
                    c,
                    [q.input_tokens + q.generated for q in decode],
                    [(q.prefilled, n) for q, n in chunks],
                    len(decode) + len(done),
                    row_tile=self.row_tile,
                )
                works.append(work)
            tokens = sum(len(decode) + sum(n for _, n in chunks) for decode, chunks in batches)
            work = works[slowest_rank(m.compute_model, works, self.spec.precision, m.clock[r])]
            if c.routed_experts:  # every rank's tokens (attention DP) through the experts
                work = FusedWork.join(work, routed_work(c, tokens, row_tile=self.row_tile))
            t0 = env.now
            host = self._host_time(batches)
            if host:  # prepared while the GPU ran the previous iteration (overlap scheduler), not before
                # its requests arrived
                since = previous_start
                if since is not None:
                    since = max([since, *(q.arrival_s for _, chunks in batches for q, _ in chunks)])
                yield m.host_work(r, host, since=since)
            previous_start = env.now
            core = attention_dtype(self.spec.precision)
            if core == self.spec.precision:
                yield m.compute_fused(r, work, dtype=self.spec.precision, name="iteration")
            else:  # the attention kernels at their own precision, after the rest of the iteration
                rest, attention = split_attention(work)
                yield m.compute_fused(r, rest, dtype=self.spec.precision, name="iteration")
                if attention:
                    yield m.compute_fused(r, attention, dtype=core, name="iteration_attention")
            if (
                group is not None and self.spec.parallelism.attention_dp
            ):  # tokens to the experts and back (TensorRT-LLM's ADP MoE)
                gathered = tokens * c.hidden * ACT_BYTES
                yield m.collective(r, group, "allgather", gathered, name="ep_allgather", repeat=c.moe_layers)
                yield m.collective(r, group, "reducescatter", gathered, name="ep_reducescatter",
                                   repeat=c.moe_layers)  # fmt: skip
            elif group is not None:
                yield m.collective(
                    r, group, "allreduce", ar_bytes, name="tp_allreduce", repeat=c.tp_allreduces
                )
            self.stats.iterations += 1
            self.stats.iteration_time_s += env.now - t0
            self.stats.tokens_processed += tokens
            # 3. tokens out
            now = env.now
            for d, ((decode, chunks), done) in enumerate(zip(batches, finishing, strict=True)):
                for q, n in chunks:
                    q.prefilled += n
                for q in done:
                    q.first_token_s = now
                    q.generated = 1
                # Finished: a sequence that emitted a token and has all its tokens, in running order (decodes
                # lead it, then the prompts just prefilled); the others did not change since they were checked.
                finished = []
                for q in decode:
                    generated = q.generated + 1
                    q.generated = generated
                    if generated >= q.output_tokens:
                        finished.append(q)
                finished += [q for q in done if q.generated >= q.output_tokens]
                decoding[d] += len(done)
                if not finished:
                    continue
                for q in finished:
                    q.done_s = now
                    kv_used[d] -= self.costs.kv_bytes(q.input_tokens + q.output_tokens)
                    self.outstanding[r] -= 1
                decoding[d] -= len(finished)
                run = running[d]
                if all(q is run[i] for i, q in enumerate(finished)):  # the oldest ones (equal lengths)
                    del run[: len(finished)]
                else:
                    gone = {id(q) for q in finished}
                    run[:] = [q for q in run if id(q) not in gone]


@dataclass
class _Ends:
    ends: list[float]


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def serving_summary(job: ServingJob) -> dict[str, Any]:
    """The DESIGN.md inference keys and the throughput / utilisation keys shared with training."""
    spec, st, m = job.spec, job.stats, job.machine
    done = [q for q in st.requests if not math.isnan(q.done_s)]
    ttft = [q.first_token_s - q.arrival_s for q in done]
    tpot = [(q.done_s - q.first_token_s) / (q.output_tokens - 1) for q in done if q.output_tokens > 1]
    e2e = [q.done_s - q.arrival_s for q in done]
    start = min((q.arrival_s for q in st.requests), default=0.0)
    end = max((q.done_s for q in done), default=start)
    span = max(end - start, 1e-12)
    out_tokens = sum(q.output_tokens for q in done)
    in_tokens = sum(q.input_tokens for q in done)
    flops = 2.0 * _active_params(spec.model) * (in_tokens + out_tokens)
    gpus = spec.gpus
    model_tflops = flops / span / gpus
    peak = m.profile.peak_flops(spec.precision)
    return {
        "ttft_s_p50": _percentile(ttft, 50),
        "ttft_s_p99": _percentile(ttft, 99),
        "tpot_s_p50": _percentile(tpot, 50),
        "tpot_s_p99": _percentile(tpot, 99),
        "e2e_s_p50": _percentile(e2e, 50),
        "e2e_s_p99": _percentile(e2e, 99),
        "requests_per_s": len(done) / span,
        "requests_completed": len(done),
        "step_time_s": st.iteration_time_s / st.iterations if st.iterations else 0.0,
        "iterations": st.iterations,
        "tokens_per_s": out_tokens / span,
        "tokens_per_s_per_gpu": out_tokens / span / gpus,
        "input_tokens_per_s": in_tokens / span,
        "model_tflops_per_gpu": model_tflops / 1e12,
        "mfu": model_tflops / peak,
        "flops_convention": "model FLOPs = 2N per prompt and generated token (attention not counted)",
        "gpus": gpus,
        "kv_cache_peak_bytes": st.peak_kv_bytes,
        "kv_cache_capacity_bytes": st.kv_capacity_bytes,
        "peak_hbm_bytes": job.costs.weights_per_gpu + st.peak_kv_bytes,
        "makespan_s": end - start,
    }


def _active_params(model: ModelSpec) -> float:
    from workloads.model import active_params

    return float(active_params(model))


def tokens_of(job: ServingJob) -> int:
    """Output tokens served (the energy-per-token denominator)."""
    return sum(q.output_tokens for q in job.stats.requests if not math.isnan(q.done_s))
