"""Validation of serving against published inference runs: each row of an ``inference_runs.yaml``-style
table becomes a racksim serving run (``kind: inference``) whose output throughput is compared with what the
source printed. The error table, the parallel runner and the CLI are shared with training validation
(``workloads.validation``, ``racksim validate --serving``).

Runnable: TensorRT-LLM's performance overview (offline ``trtllm-bench throughput``, fixed input / output
lengths, one TP engine): the model by name, the system by its GPU, tp, precision and lengths from the row.
What the rows leave open is stated once, here and in docs/inference.md, never tuned per row:

* FP8 and NVFP4 checkpoints (TensorRT-LLM's, as the overview runs them) quantize the KV cache to FP8;
* the scheduler runs up to 512 sequences and 8,192 tokens per iteration with chunked prefill;
  weights and KV cache together get 90 % of HBM (racksim's ``kv_cache.memory_fraction`` is vLLM's
  ``gpu_memory_utilization``; the overview's "KV cache fraction 0.90-0.95" is TensorRT-LLM's share of the
  memory left after the weights, slightly more cache than racksim gives it);
* 1,000 requests, all at t = 0 (offline), enough that the ramp-up and the last wave are a small share.

MLPerf Inference rows are listed with their reason: their request lengths follow the OpenOrca sample set,
which the table does not give.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from workloads.validation import NotRunnable, RowPlan, measured_value, positive_int, row_section

DEFAULT_SERVING_TABLE = "reference/inference_runs.yaml"

# The model names the tables print -> racksim presets (same architecture; Llama 3.1 / 3.3 differ from
# Llama 3 only in their RoPE scaling and context length, which do not change a fixed-length run's cost).
SERVING_MODELS = {
    "llama3.18b": "llama3-8b",
    "llama3.370b": "llama3-70b",
    "llama3.1405b": "llama3-405b",
    "qwen3235ba22b": "qwen3-235b-a22b",
}
# The GPU a row names -> the shipped profile of the system it ran in.
SERVING_SYSTEMS = {
    "h100": "h100-dgx.yaml",
    "h200": "h200-hgx.yaml",
    "b200": "b200-dgx.yaml",
    "gb200": "gb200-nvl72.yaml",
}
SERVING_PRECISIONS = {"fp8": "fp8", "fp4": "fp4", "nvfp4": "fp4", "bf16": "bf16", "fp16": "fp16"}
REQUESTS = 1000
SCHEDULER = {"max_num_seqs": 512, "max_batch_tokens": 8192, "chunked_prefill": True}
KV_MEMORY_FRACTION = 0.9


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
        raise NotRunnable("request lengths not given (MLPerf's OpenOrca sample set is not in the table)")
    model = SERVING_MODELS.get(_key(str(row.get("model", ""))))
    if model is None:
        raise NotRunnable(f"model {row.get('model')!r} has no racksim preset")
    accel = str(hw.get("accelerator", ""))
    profile = SERVING_SYSTEMS.get(_key(accel).split(".")[0])
    if profile is None:
        raise NotRunnable(f"accelerator {accel!r} has no racksim profile")
    precision = SERVING_PRECISIONS.get(_key(str(row.get("precision", ""))))
    if precision is None:
        raise NotRunnable(f"precision {row.get('precision')!r} is not one racksim serves")
    tp = positive_int(hw, "tp", "hardware") or positive_int(hw, "total_accelerators", "hardware") or 1
    unmodelled = [k for k in ("pp", "ep") if (positive_int(hw, k, "hardware") or 1) > 1]
    if unmodelled:
        raise NotRunnable(f"{'/'.join(unmodelled)} > 1: racksim serves TP replicas only")
    measured = measured_value(row_section(row, "results"), "total_output_tokens_per_s")
    if measured is None:
        raise NotRunnable("no total output tokens/s in the row")
    kv = "fp8" if precision in ("fp8", "fp4") else precision
    spec = {
        "kind": "inference",
        "name": rid,
        "model": model,
        "parallelism": {"tp": tp, "replicas": 1},
        "precision": precision,
        "kv_cache": {"precision": kv, "memory_fraction": KV_MEMORY_FRACTION},
        "scheduler": dict(SCHEDULER),
        "requests": {"count": REQUESTS, "input_tokens": isl, "output_tokens": osl},
    }
    assumptions = (
        f"model {row.get('model')!r} -> {model}",
        f"{accel} -> {profile}",
        f"KV cache {kv} (the {row.get('precision')} checkpoint's)",
        f"{REQUESTS} requests at t = 0, max_num_seqs {SCHEDULER['max_num_seqs']}, "
        f"max_batch_tokens {SCHEDULER['max_batch_tokens']}",
    )
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
