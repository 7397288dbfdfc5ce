"""Validation of serving against published inference runs: each row of an ``inference_runs.yaml``-style
table becomes a racksim serving run (``kind: inference``) whose output throughput is compared with what the
source printed. The error table, the parallel runner and the CLI are shared with training validation
(``workloads.validation``, ``racksim validate --serving``).

Runnable: TensorRT-LLM's performance overview (offline ``trtllm-bench throughput``, fixed input / output
lengths, one TP engine): the model by name (``serving_model``: the names tables print, or any name training
validation knows), the system by the first GPU name in its accelerator (``serving_system``), tp, precision
and lengths from the row.
What the rows leave open is stated once, here and in docs/inference.md, never tuned per row:

* FP8 and NVFP4 checkpoints (TensorRT-LLM's, as the overview runs them) quantize the KV cache to FP8;
* the scheduler limits are the ones ``trtllm-bench`` derives when the command gives none, as the
  overview's did (``trtllm_bench_limits``: the requests of the run's lengths that fit its KV estimate,
  capped at 4,096; tokens per iteration from those), with chunked prefill; the KV cache gets 90 % of the
  HBM left after the weights (``kv_cache.free_memory_fraction``: TensorRT-LLM's
  ``kv_cache_free_gpu_mem_fraction`` default; the overview says 0.90-0.95);
* every row is served tensor parallel, MoE rows too: the overview's MoE recipe asks for attention DP but
  prints ``enable_attention_dp`` inside ``cuda_graph_config``, a strict config that rejects it, so the rows
  do not show which ran (racksim's attention-DP model predicts them 44-107 % fast, docs/inference.md);
  its MoE command passes ``--ep``, so a multi-GPU MoE row splits its experts expert-parallel over the
  tp GPUs (whole experts on each);
* the overview's request count for each input / output length (30,000 at 128/128 ... 1,000 at
  20,000/2,000; 1,000 for lengths it does not list), all at t = 0 (offline).

MLPerf Inference v4.1 llama2-70b Offline rows (closed division, on systems racksim has a profile of) run
at the OpenOrca sample set's mean lengths with the engine each submitter's configs give (``MLPERF_ENGINES``);
the others, and every Server row, are listed with their reason.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from simcore.profile import load_profile
from workloads.model import ModelSpec, embedding_params, load_preset, output_params, total_params
from workloads.validation import (
    PCIE_CARD,
    NotRunnable,
    RowPlan,
    measured_value,
    model_base_name,
    positive_int,
    precision_of,
    row_section,
)

DEFAULT_SERVING_TABLE = "reference/inference_runs.yaml"

# The model names the tables print -> racksim presets (same architecture; Llama 3.1 / 3.3 differ from
# Llama 3 only in their RoPE scaling and context length, which do not change a fixed-length run's cost).
SERVING_MODELS = {
    "llama3.18b": "llama3-8b",
    "llama3.170b": "llama3-70b",
    "llama3.370b": "llama3-70b",
    "llama3.1405b": "llama3-405b",
    "qwen3235ba22b": "qwen3-235b-a22b",
    "qwen330ba3b": "qwen3-30b-a3b",
    "deepseekr1": "deepseek-v3",  # R1 is trained from V3 and has its architecture
    "deepseekr10528": "deepseek-v3",
}
# The GPU a row names -> the shipped profile of the system it ran in.
SERVING_SYSTEMS = {
    "a100": "a100-dgx.yaml",
    "h100": "h100-dgx.yaml",
    "h800": "h800-hgx.yaml",
    "h200": "h200-hgx.yaml",
    "b200": "b200-dgx.yaml",
    "b300": "b300-dgx.yaml",
    "gb200": "gb200-nvl72.yaml",
    "gb300": "gb300-nvl72.yaml",
    "mi300x": "mi300x.yaml",
    "mi325x": "mi325x.yaml",
    "mi355x": "mi355x.yaml",
}
REQUESTS = 1000
BENCH_KV_FRACTION = 0.95  # the overview: "in many cases ... --kv_cache_free_gpu_mem_fraction 0.95"
BENCH_BYTES = {"fp8": 1.0, "fp4": 0.5, "bf16": 2.0, "fp16": 2.0}  # trtllm-bench's BYTES_PER_ELEM
# trtllm-bench's --num-requests per (input, output) length in the overview's "Preparing a Dataset" table
OVERVIEW_REQUESTS = {
    (128, 128): 30000,
    (128, 2048): 3000,
    (128, 4096): 1500,
    (1000, 2000): 1500,
    (2048, 128): 3000,
    (2048, 2048): 1500,
    (5000, 500): 1500,
    (1000, 1000): 3000,
    (500, 2000): 3000,
    (20000, 2000): 1000,
}
# TensorRT-LLM's kv_cache_free_gpu_mem_fraction default: the KV cache's share of the memory left after the weights
KV_FREE_FRACTION = 0.9

# MLPerf Inference llama2-70b: the OpenOrca set (24,576 samples, 6,144 from each of cot / flan / niv / t0;
# prompts and reference answers under 1,024 tokens; mlcommons/inference language/llama2-70b/processorca.py)
MLPERF_LLAMA2_INPUT_TOKENS = 220  # mean prompt: 219.4 in a stratified third of the samples (by origin 119 /
#                                   184 / 272 / 307; openshift-psap/performance-dashboard's per-sample CSV)
MLPERF_LLAMA2_OUTPUT_TOKENS = 294  # mean generated by the reference model, 294.45 (the README's accuracy
#                                    target; closed submissions must stay within 90-110 %): a stack's own mean
#                                    where its accuracy log gives it (MLPerfEngine.output_tokens)
MLPERF_SEQ_SLOTS_PER_RUN = 12  # requests per run = 12 x max_num_seqs: an Offline run repeats the set ~11x,
#                                so start (filling the batch) and drain are a small share, as they are there


@dataclass(frozen=True)
class MLPerfEngine:
    """How a v4.1 llama2-70b Offline submission served the model, from NVIDIA's and AMD's configs in
    mlcommons/inference_results_v4.1 (closed/<submitter>/configs, code, systems). Partners' submissions on the
    same GPU are taken to run that vendor's engine (their own configs were not read)."""

    gpu: str  # a regular expression on the row's accelerator
    system: str  # ... and on its id (the submission's system name: the stack, the GPU count)
    tp: int
    precision: str
    max_num_seqs: int | None  # None: not printed; trtllm-bench's estimate for the lengths
    max_batch_tokens: int
    tokens_source: str  # where max_batch_tokens comes from
    output_tokens: int  # mean generated tokens per sample in the stack's v4.1 accuracy logs
    kv_source: str  # where the FP8 KV cache comes from
    chunked_prefill: bool = True
    kv_free_fraction: float = KV_FREE_FRACTION
    sets: tuple[str, ...] = ()
    note: str = ""


_HOPPER_TOKENS = "not printed for v4.1 Hopper: v5.0's H200 value"
_HOPPER_KV = "FP8 KV cache: not stated for v4.1 Hopper, as v5.0's Hopper config"
MLPERF_ENGINES: tuple[MLPerfEngine, ...] = (
    MLPerfEngine(
        r"H200-SXM-141GB-CTS", r"x1_TRT", 1, "fp8", 850, 1536, _HOPPER_TOKENS, 291, _HOPPER_KV, sets=("accelerator.tdp=1000 W",),
        note="TensorRT-LLM, TP1, FP8, gpu_batch_size 850, 1000 W H200 (systems json)",
    ),
    MLPerfEngine(
        r"H200-SXM-141GB-CTS", r"x8_TRT", 1, "fp8", 784, 1536, _HOPPER_TOKENS, 291, _HOPPER_KV, sets=("accelerator.tdp=1000 W",),
        note="TensorRT-LLM, TP1 x 8 engines, FP8, gpu_batch_size 784, 1000 W H200 (systems json)",
    ),
    MLPerfEngine(
        r"H200-SXM", r"_TRT", 1, "fp8", 806, 1536, _HOPPER_TOKENS, 291, _HOPPER_KV,
        note="TensorRT-LLM, TP1 x 8 engines, FP8, gpu_batch_size 806 (configs/llama2-70b/Offline, H200_SXM_141GBx8)",
    ),
    MLPerfEngine(
        r"H100-SXM", r"_TRT", 2, "fp8", 896, 1536, _HOPPER_TOKENS, 291, _HOPPER_KV,
        note="TensorRT-LLM, TP2 x 4 engines per 8 GPUs, FP8, gpu_batch_size 896 (H100_SXM_80GB_TP2x4)",
    ),
    MLPerfEngine(
        r"B200-SXM", r"", 1, "fp4", 2048, 3584, "the v5.0 Blackwell config", 274,
        "FP8 KV cache (the v5.0 Blackwell config)", kv_free_fraction=0.95,
        note="TensorRT-LLM, TP1, FP4, gpu_batch_size 2048, KV fraction 0.95 (the v5.0 Blackwell config; the v4.1 "
        "preview's code was private)",
    ),
    MLPerfEngine(
        r"MI300X", r"", 1, "fp8", None, 4096, "vLLM 0.4.3's default: the model's 4,096-token context", 293,
        "FP8 KV cache (AMD's README)", chunked_prefill=False, kv_free_fraction=0.95,
        note="vLLM 0.4.3 (ROCm), TP1 x 8 replicas, FP8 weights and activations, prefill apart from decode "
        "(vLLM's default then); max_num_seqs not printed",
    ),
)  # fmt: skip


def _round_up(value: float, floor: int, tiers: tuple[tuple[float, int], ...]) -> int:
    """finetune_setting's rounding: up to a multiple of the step of the first tier ``value`` is below, and
    at least ``floor``."""
    step = next(step for bound, step in tiers if value < bound)
    return max(floor, step * math.ceil(value / step))


def trtllm_bench_limits(
    model: ModelSpec, precision: str, kv_precision: str, tp: int, isl: int, osl: int, gpu_memory_bytes: float
) -> tuple[int, int]:
    """(max_batch_size, max_num_tokens) that ``trtllm-bench throughput`` derives when the command gives
    neither, as the overview's runs did (TensorRT-LLM ``tensorrt_llm/bench/build/tuning.py``,
    ``calc_engine_setting`` and ``finetune_setting`` of the v1.0 era): the requests of length isl + osl
    that fit the KV memory left after the weights over the TP group (at least one KV head per GPU), capped
    at 4,096, rounded up; tokens = that batch x (1 + isl / osl), capped at 32,768, rounded up."""
    # torch's total_memory, which trtllm-bench reads in GiB, is the marketed capacity in GiB to within 1 %
    # (H100 79.6, H200 140.4, B200 179.1 GiB): read the profile's GB as GiB
    gib = 1024.0**3
    gpu_gib = gpu_memory_bytes / 1e9
    kv_heads = max(tp, model.kv_heads)
    head_dim = model.head_dim or model.hidden // model.heads
    per_token = 2 * model.layers * kv_heads * head_dim * BENCH_BYTES[kv_precision] / gib
    params = float(total_params(model))
    if precision == "fp4":
        # trtllm-bench counts the checkpoint's stored elements: an NVFP4 checkpoint packs two quantized weights
        # per byte (its linear layers; embedding and LM head stay 16-bit), so the v1.0-era estimate took half
        # the linear weights before applying 0.5 B each (fixed later in TensorRT-LLM: "the buggy path would use
        # 230B * 0.5 = ~107 GB (2x too small)", tests of calc_engine_setting)
        unpacked = embedding_params(model) + output_params(model)
        params = (params - unpacked) / 2 + unpacked
    engine = params * BENCH_BYTES[precision] / gib
    available = gpu_gib * tp - engine
    requests = available * BENCH_KV_FRACTION / (per_token * (isl + osl))
    raw_bs = min(requests, 4096.0)
    raw_tokens = min(raw_bs * (1 + isl / osl), 32768.0)
    batch = _round_up(raw_bs, 64, ((256, 32), (1024, 128), (math.inf, 256)))
    tokens = _round_up(raw_tokens, 2048, ((4096, 256), (8192, 512), (math.inf, 1024)))
    return int(batch), int(tokens)


@functools.lru_cache(maxsize=64)
def hbm_capacity(profile: str, sets: tuple[str, ...] = ()) -> float:
    """HBM per GPU of a shipped profile (with ``sets``), read once per process: planning the 155 rows loaded
    the profile of each (YAML and units parsing, 8 s before the first row could run)."""
    return load_profile(profile, list(sets)).accelerator.hbm_capacity


def serving_model(name: str) -> str | None:
    """The racksim preset a table's model name stands for: the serving names above, else the names
    training validation knows (presets and their published spellings: 'Mixtral 8x7B', 'GPT-OSS 120B')."""
    from workloads.validation import _named_models, _norm

    for candidate in (name, model_base_name(name)):
        if found := SERVING_MODELS.get(_key(candidate)) or _named_models().get(_norm(candidate)):
            return found
    return None


def serving_system(accelerator: str) -> str | None:
    """The shipped profile of the first GPU name in a row's accelerator ('NVIDIA H100 SXM5 80GB' -> h100)."""
    for word in re.findall(r"[a-z0-9]+", accelerator.lower()):
        word = re.sub(r"^\d+x", "", word)  # "8xMI300X"
        if word in SERVING_SYSTEMS:
            return SERVING_SYSTEMS[word]
    return None


_PRECISION_FAMILIES = (
    ("fp4", r"fp4|float4"),
    ("fp8", r"fp8|float8|e4m3"),
    ("16", r"bf16|bfloat16|fp16|float16"),
)


def serving_precision(text: Any) -> str | None:
    """The racksim precision of a row's precision text ('FP8 (e4m3)', 'bfloat16', 'NVFP4'), None if unstated."""
    families = {f for f, pat in _PRECISION_FAMILIES if re.search(pat, str(text or ""), re.I)}
    if len(families) > 1:  # "FP8 KV cache, BF16 weights": which is the GEMMs' is not said
        return None
    try:
        precision, unstated = precision_of(text)
    except NotRunnable:  # INT8, W4A16, TF32
        return None
    return None if unstated else precision


def _refuse_cards(accel: str) -> None:
    """PCIe / NVL cards and 40 GB A100s have no shipped profile; the SXM modules' would overstate them."""
    if re.search(PCIE_CARD, accel, re.I):
        raise NotRunnable(f"{accel}: a PCIe card, no shipped profile (the profiles are SXM modules)")
    if re.search(r"a100", accel, re.I) and re.search(r"\b40\s*gb", accel, re.I):
        raise NotRunnable(f"{accel}: the A100 40GB has no serving profile (a100-dgx is the 80 GB module)")


def _engine_note(row: Mapping[str, Any]) -> tuple[str, ...]:
    """Rows from another engine than TensorRT-LLM run with trtllm-bench's limits: say so."""
    engine = str(row.get("engine") or row.get("software") or "")
    if engine and not re.search(r"tensorrt|trt", engine, re.I):
        return (
            f"the row's engine {engine!r} runs with trtllm-bench's batch limits (its own are not modelled)",
        )
    return ()


def is_serving_row(row: Mapping[str, Any]) -> bool:
    """Inference tables' rows carry a ``scenario`` (Offline, Server, offline max-throughput ...)."""
    return "scenario" in row


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9.]", "", name.lower())


def map_serving_row(row: Mapping[str, Any], table: Mapping[str, Any] | None = None) -> RowPlan:
    """The serving run for one row, or ``NotRunnable`` with the reason."""
    rid, group = str(row.get("id", "?")), str(row.get("group", ""))
    scenario = str(row.get("scenario", ""))
    if "offline" not in scenario.lower():
        raise NotRunnable(f"scenario {scenario!r}: only offline throughput rows are compared")
    hw = row_section(row, "hardware")
    workload = row_section(row, "workload")
    isl = positive_int(workload, "input_len", "workload")
    osl = positive_int(workload, "output_len", "workload")
    if isl is None or osl is None:
        model_key = _key(model_base_name(str(row.get("model", ""))))
        if re.search(r"mlperf\s*inference", group, re.I) and model_key.startswith("llama270b"):
            return map_mlperf_row(row)
        raise NotRunnable(
            "request lengths not given (the row names no data set racksim knows the lengths of)"
        )
    model = serving_model(str(row.get("model", "")))
    if model is None:
        raise NotRunnable(f"model {row.get('model')!r} matches no racksim preset")
    accel = str(hw.get("accelerator", ""))
    _refuse_cards(accel)
    profile = serving_system(accel)
    if profile is None:
        raise NotRunnable(f"accelerator {accel!r} matches no shipped profile ({', '.join(SERVING_SYSTEMS)})")
    precision = serving_precision(row.get("precision"))
    if precision is None:
        raise NotRunnable(f"precision {row.get('precision')!r} is not one racksim serves")
    tp = positive_int(hw, "tp", "hardware") or positive_int(hw, "total_accelerators", "hardware") or 1
    attention_dp = hw.get("attention_dp") is True
    if attention_dp:  # "DEP8" may print tp 1 and ep 8: the replica spans them all
        tp = max(
            tp,
            positive_int(hw, "ep", "hardware") or 1,
            positive_int(hw, "total_accelerators", "hardware") or 1,
        )
    if (positive_int(hw, "pp", "hardware") or 1) > 1:
        raise NotRunnable("pp > 1: racksim serves tensor-parallel replicas, without pipeline stages")
    if (positive_int(hw, "ep", "hardware") or 1) > 1 and not attention_dp:
        raise NotRunnable(
            "ep > 1: the row does not say how attention is split (TP, or data parallel as in 'DEP'); "
            "write the run as a workload with parallelism.ep and attention_dp (docs/inference.md)"
        )
    measured = measured_value(row_section(row, "results"), "total_output_tokens_per_s")
    if measured is None:
        raise NotRunnable("no total output tokens/s in the row")
    kv = "fp8" if precision in ("fp8", "fp4") else precision
    # The overview's GPT-OSS options: "kv_cache dtype: fp8  # Hopper: use auto" (the model's 16 bits)
    hopper_auto_kv = model == "gpt-oss-120b" and profile in (
        "h100-dgx.yaml",
        "h200-hgx.yaml",
        "h800-hgx.yaml",
    )
    if hopper_auto_kv:
        kv = "bf16"
    preset = load_preset(model)
    requests = OVERVIEW_REQUESTS.get((isl, osl), REQUESTS)
    device = hbm_capacity(profile)
    max_seqs, max_tokens = trtllm_bench_limits(preset, precision, kv, tp, isl, osl, device)
    scheduler = {"max_num_seqs": max_seqs, "max_batch_tokens": max_tokens, "chunked_prefill": True}
    parallelism: dict[str, Any] = {"tp": tp, "replicas": 1}
    if attention_dp:  # "DEP": attention data parallel over the GPUs, the experts sharded over them all
        if preset.moe is None:
            raise NotRunnable("attention_dp on a dense model: TensorRT-LLM's attention DP is for MoE models")
        parallelism["attention_dp"] = True
    elif preset.moe is not None and tp > 1:  # the overview's MoE command passes --ep: whole experts per GPU
        parallelism["ep"] = math.gcd(tp, preset.moe.experts)
    spec = {
        "kind": "inference",
        "name": rid,
        "model": model,
        "parallelism": parallelism,
        "precision": precision,
        "kv_cache": {"precision": kv, "free_memory_fraction": KV_FREE_FRACTION},
        "scheduler": scheduler,
        "requests": {"count": requests, "input_tokens": isl, "output_tokens": osl},
    }
    assumptions = (
        f"model {row.get('model')!r} -> {model}",
        f"{accel} -> {profile}",
        f"KV cache {kv} (GPT-OSS on Hopper: the overview's 'Hopper: use auto')"
        if hopper_auto_kv
        else f"KV cache {kv} (the {row.get('precision')} checkpoint's)",
        f"{requests} requests at t = 0, max_num_seqs {max_seqs}, max_batch_tokens {max_tokens} "
        "(trtllm-bench's defaults for the lengths)",
        *([f"experts expert-parallel over {parallelism['ep']} GPUs (the MoE command's --ep)"]
          if "ep" in parallelism else []),
        *([f"attention data parallel over {tp} GPUs (the row's attention_dp; racksim's attention-DP path is not "
           "calibrated, docs/inference.md)"] if attention_dp else []),
        *_engine_note(row),
    )  # fmt: skip
    return RowPlan(
        id=rid,
        group=group,
        profile=profile,
        profile_sets=(),
        racks=1,
        spec=spec,
        metric="output tokens/s (engine)",
        measured=float(measured),
        convert="serving_tokens",
        assumptions=assumptions,
    )


def map_mlperf_row(row: Mapping[str, Any]) -> RowPlan:
    """An MLPerf Inference llama2-70b Offline row: every request at the OpenOrca set's mean lengths, served by
    the submission's engine (``MLPERF_ENGINES``) on one replica; the system's tokens/s is that replica's
    times the replicas the GPUs hold (Offline replicas share nothing)."""
    rid = str(row.get("id", "?"))
    if str(row.get("division", "")).lower() == "open":
        raise NotRunnable("open division: the model is modified (pruned, sparse or requantized)")
    if "maxq" in rid.lower():
        raise NotRunnable("MaxQ: a power-limited run whose per-GPU limit the row does not give")
    hw = row_section(row, "hardware")
    accel = str(hw.get("accelerator", ""))
    _refuse_cards(accel)
    profile = serving_system(accel)
    if profile is None:
        raise NotRunnable(f"accelerator {accel!r} matches no shipped profile ({', '.join(SERVING_SYSTEMS)})")
    names = " ".join(
        str(v) for v in (rid, hw.get("system", ""), row.get("submitter", ""), row.get("system", ""))
    )
    engine = next((e for e in MLPERF_ENGINES if re.search(e.gpu, accel) and re.search(e.system, names)), None)
    if engine is None:
        raise NotRunnable("no engine configuration known for this submission's system")
    gpus = positive_int(hw, "total_accelerators", "hardware") or 1
    if gpus % engine.tp:
        raise NotRunnable(f"{gpus} GPUs do not hold whole TP{engine.tp} engines")
    measured = measured_value(row_section(row, "results"), "tokens_per_s_system")
    if measured is None:
        raise NotRunnable("no system tokens/s in the row")
    isl, osl = MLPERF_LLAMA2_INPUT_TOKENS, engine.output_tokens
    precision, kv, model = engine.precision, "fp8", "llama2-70b"
    max_seqs = engine.max_num_seqs
    if max_seqs is None:
        hbm = hbm_capacity(profile, engine.sets)
        max_seqs = trtllm_bench_limits(load_preset(model), precision, kv, engine.tp, isl, osl, hbm)[0]
    replicas = gpus // engine.tp
    requests = MLPERF_SEQ_SLOTS_PER_RUN * max_seqs
    scheduler = {
        "max_num_seqs": max_seqs,
        "max_batch_tokens": engine.max_batch_tokens,
        "chunked_prefill": engine.chunked_prefill,
    }
    spec = {
        "kind": "inference",
        "name": rid,
        "model": model,
        "parallelism": {"tp": engine.tp, "replicas": 1},
        "precision": precision,
        "kv_cache": {"precision": kv, "free_memory_fraction": engine.kv_free_fraction},
        "scheduler": scheduler,
        "requests": {"count": requests, "input_tokens": isl, "output_tokens": osl},
    }
    assumptions = (
        f"{accel} -> {profile}" + "".join(f", {s}" for s in engine.sets),
        engine.note,
        engine.kv_source,
        f"requests of {isl} prompt tokens (the OpenOrca set's mean) and {osl} generated (the stack's mean in "
        f"its accuracy log), {requests} at t = 0",
        f"max_num_seqs {max_seqs}"
        + ("" if engine.max_num_seqs else " (not printed: trtllm-bench's estimate for the lengths; the KV cache "
           "may admit fewer)")
        + f", max_batch_tokens {engine.max_batch_tokens} ({engine.tokens_source})",
        f"one engine simulated: the rerun prints its tokens/s, the prediction is that x {replicas} replicas",
    )  # fmt: skip
    version = re.search(r"\bv(\d+(?:\.\d+)?)\b", str(row.get("group", "")))
    if version is None or version.group(1) != "4.1":
        found = f"v{version.group(1)}" if version else "a round the group does not name"
        assumptions += (
            f"the v4.1 engine for this GPU (the row is from {found}; its own config was not read)",
        )
    return RowPlan(
        id=rid,
        group=str(row.get("group", "")),
        profile=profile,
        profile_sets=engine.sets,
        racks=1,
        spec=spec,
        metric="output tokens/s (system)",
        measured=float(measured),
        convert="serving_tokens",
        scale=float(replicas),
        assumptions=assumptions,
    )
