"""Validation against published training runs: each row of a ``training_runs.yaml``-style table becomes a
racksim run, whose prediction is converted to what the source printed and compared.

A row is *runnable* when racksim can express its model (a catalog ref, a known name, or layers / hidden /
heads), its hardware (the table's ``hardware_platforms`` entry mapped to the nearest shipped profile plus
``--set`` overrides for what the entry states: NICs per node, HBM size, fabric), its parallelism and its
batch. Everything else is listed with the reason. Nothing here is tuned per row: the defaults a source
leaves open (micro-batch, recompute, software overlap flags) are stated per *source* below and in
docs/validation.md, and the hardware efficiencies are the profiles' ``calibration`` sections.

Metrics, in the order they are preferred when a row prints several:

* ``tokens/s/GPU``: compared directly (no FLOP convention involved);
* ``iteration s``: the simulated step time;
* ``TFLOP/s/GPU``: the source's own FLOP count per iteration over the simulated step time (SC21:
  ``96·B·s·l·h²(...)`` with full recompute; the 2024 Megatron-Core README: the same count without
  recompute, ``72·B·s·l·h²(...)``; others: racksim's model FLOPs, 6N + attention);
* ``minutes``: MLPerf raw wall-clock minutes = steps to the target x step time, with
  ``train_samples_to_target / (global batch · seq_len)`` steps (the logged count is in tokens: divided so it
  is a whole number of steps for every submission). Raw minutes include the evaluation passes, which are
  not simulated.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import re
import shlex
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from simcore.errors import CapacityError, ConfigError, RacksimError
from simcore.profile import read_yaml
from workloads.model import (
    ModelSpec,
    list_presets,
    load_model,
    load_preset,
    megatron_flops_per_iteration,
    model_flops_per_token,
)

DEFAULT_TABLE = "reference/training_runs.yaml"


# ------------------------------------------------------------------------------------------- hardware
@dataclass(frozen=True)
class Platform:
    """A ``hardware_platforms`` entry as racksim runs it: nearest shipped profile + overrides, and why."""

    profile: str
    sets: tuple[str, ...] = ()
    note: str = ""


# Every platform entry racksim can express (also those no shipped row uses yet). Overrides honour what the
# entry states; what it leaves unstated comes from the shipped profile of that system.
NVL72_AS_64 = ("scale_up.domain_size=64", "rack.trays_per_rack=16")
PLATFORMS: Mapping[str, Platform] = {
    "selene_a100": Platform("a100-dgx.yaml", (), "DGX A100 80GB, 8x HDR 200G per node (as shipped)"),
    "megascale_ampere": Platform(
        "a100-dgx.yaml",
        (),
        "Ampere SKU not named: A100 80GB assumed; 8x 200G per server, 3-layer 1:1 Clos (as shipped)",
    ),
    "meta_llama3_h100": Platform(
        "h100-dgx.yaml",
        (
            "scale_out.technology=RoCE 400 Gb/s per GPU, 3-layer Clos",
            "rack.trays_per_rack=2",
            "scale_out.tiers=[{name: tor, span_gpus: 16}, {name: pod, span_gpus: 3072, oversubscription: 7},"
            " {name: core, span_gpus: 24576, latency: 1.5 us}]",
        ),
        "H100 700 W, 400G RoCE per GPU; 16 GPUs per ToR, 3,072-GPU full-bisection pods, 1:7 between pods",
    ),
    "deepseek_h800": Platform(
        "h800-hgx.yaml", (), "H800, NVLink 200 GB/s/dir, IB 50 GB/s per GPU (as shipped)"
    ),
    "dgx_h100": Platform("h100-dgx.yaml", (), "DGX H100, 8x CX-7 NDR 400G per node (as shipped)"),
    "megatron_h100_readme": Platform("h100-dgx.yaml", (), "H100 cluster not described: DGX H100 assumed"),
    "mosaic_h100": Platform("h100-dgx.yaml", (), "H100 80GB, network not stated: DGX H100 assumed"),
    "dgx_b200": Platform("b200-dgx.yaml", (), "DGX B200, 8x CX-7 400G (as shipped)"),
    "dgx_b300": Platform("b300-dgx.yaml", (), "DGX B300, network not stated (shipped profile)"),
    # Power-of-two jobs on NVL72 racks: 16 of the 18 compute trays of each rack (64 GPUs per NVLink domain),
    # so that TP/EP/DP groups of 2^k GPUs never straddle two racks (Slurm --segment packing).
    "gb200_nvl72": Platform(
        "gb200-nvl72.yaml",
        NVL72_AS_64,
        "GB200 NVL72, 1x CX-7 400G per GPU; the job uses 64 GPUs (16 trays) of each 72-GPU NVLink domain",
    ),
    "gb300_nvl72": Platform(
        "gb300-nvl72.yaml",
        NVL72_AS_64,
        "GB300 NVL72, 1x CX-8 800G per GPU; the job uses 64 GPUs (16 trays) of each 72-GPU NVLink domain",
    ),
    "jeanzay_a100": Platform(
        "a100-dgx.yaml",
        (
            "scale_out.technology=4x Omni-Path 100 Gb/s per node",
            "scale_out.nics_per_gpu=0.5",
            "scale_out.nic_bandwidth=100 Gb/s",
        ),
        "A100 80GB, 4 Omni-Path 100G links per 8-GPU node",
    ),
    "meta_opt_a100": Platform("a100-dgx.yaml", (), "A100 80GB, network not stated: DGX A100 assumed"),
    "mosaic_a100_80": Platform("a100-dgx.yaml", (), "A100 80GB, 1600 Gb/s per node = 8x 200G (as shipped)"),
    "mosaic_a100_40": Platform(
        "a100-dgx.yaml",
        (
            "accelerator.name=A100 SXM4 40GB",
            "accelerator.hbm_capacity=40 GB",
            "accelerator.hbm_bandwidth=1555 GB/s",
        ),
        "A100 40GB (HBM2 1,555 GB/s per the A100 datasheet), 1600 Gb/s per node = 8x 200G",
    ),
    "amd_mi300x_8gpu": Platform(
        "mi300x.yaml", (), "8x MI300X 750 W, xGMI mesh, 1x 400G per GPU (as shipped)"
    ),
    "amd_mi325x_8gpu": Platform(
        "mi325x.yaml", (), "8x MI325X 1000 W, xGMI mesh, 1x 400G per GPU (as shipped)"
    ),
    "amd_mi355x_8gpu": Platform(
        "mi355x.yaml", (), "8x MI355X 1400 W, xGMI mesh, 1x 400G per GPU (as shipped)"
    ),
}
NOT_EXPRESSIBLE_ACCELERATORS = (("tpu", "TPU"), ("gaudi", "Intel Gaudi"), ("trainium", "AWS Trainium"))
# A platform entry racksim has no name for is read by its GPU: the shipped profile of that GPU (first match
# wins, so GB300 before B300 and GH200 before H200), with the entry's network left to the profile.
# A PCIe or NVL card ("H100-PCIe-80GB", "H100 NVL 94GB", "H200 NVL"), not an NVL72 / NVL36 rack
PCIE_CARD = r"\b(pcie|nvl)\b(?![\s-]*(36|72|144|576)\b)"
GPU_PROFILES: tuple[tuple[str, str | None, tuple[str, ...]], ...] = (
    (r"gh200|grace\s*hopper|mi300a", None, ()),
    (PCIE_CARD + r"|\bl40s?\b|\ba10g?\b|\bl4\b|rtx|v100", None, ()),
    (r"gb300", "gb300-nvl72.yaml", NVL72_AS_64),
    (r"gb200", "gb200-nvl72.yaml", NVL72_AS_64),
    (r"b300", "b300-dgx.yaml", ()),
    (r"b200", "b200-dgx.yaml", ()),
    (r"h200", "h200-hgx.yaml", ()),
    (r"h800", "h800-hgx.yaml", ()),
    (r"h100", "h100-dgx.yaml", ()),
    (r"a100.*\b40\s*gb|40\s*gb.*a100", "a100-dgx.yaml", PLATFORMS["mosaic_a100_40"].sets),
    (r"a100", "a100-dgx.yaml", ()),
    (r"mi355", "mi355x.yaml", ()),
    (r"mi325", "mi325x.yaml", ()),
    (r"mi300", "mi300x.yaml", ()),
)


def _stated_gpu_figures(gpu: str, profile: str, sets: tuple[str, ...]) -> tuple[tuple[str, ...], str]:
    """Overrides for what a platform's GPU text states and its profile differs in: HBM size and bandwidth,
    and a power limit below the TDP (a capped GPU runs slower: accelerator.power_cap)."""
    from simcore.profile import load_profile

    acc = load_profile(profile, list(sets)).accelerator
    number = r"(?<![\d,.])(\d{1,2},\d{3}|\d+(?:\.\d+)?)\s*"

    def stated(unit: str, scale: float, shipped: float) -> float | None:
        """The first figure in that unit near the profile's (a node total or an NVLink rate is not it)."""
        for m in re.finditer(number + unit, gpu, re.I):
            value = float(m[1].replace(",", "")) * scale
            if 0.45 < value / shipped < 2.2:
                return value
        return None

    out: list[str] = []
    if (hbm := stated(r"GB\b(?!\s*/\s*s)", 1e9, acc.hbm_capacity)) and abs(hbm / acc.hbm_capacity - 1) > 0.03:
        out.append(f"accelerator.hbm_capacity={hbm / 1e9:g} GB")
    if (bw := stated(r"TB/s", 1e12, acc.hbm_bandwidth)) and abs(bw / acc.hbm_bandwidth - 1) > 0.03:
        out.append(f"accelerator.hbm_bandwidth={bw / 1e12:g} TB/s")
    if (watts := stated(r"W\b", 1.0, acc.tdp)) and acc.idle_power < watts < acc.tdp * 0.97:
        out.append(f"accelerator.power_cap={watts:g} W")
    said = f" with {', '.join(o.split('.', 1)[1] for o in out)} as stated" if out else " as shipped"
    return tuple(out), said


def platform_for(ref: str, table: Mapping[str, Any]) -> Platform:
    """The platform a row's ``hardware.ref`` names: a known entry, or the table's entry read by its GPU."""
    if ref in PLATFORMS:
        return PLATFORMS[ref]
    entries = table.get("hardware_platforms") or {}
    entry = entries.get(ref) if isinstance(entries, Mapping) else None
    if not isinstance(entry, Mapping):
        raise NotRunnable(f"hardware platform {ref!r} is neither known to racksim nor in the table")
    gpu = str(entry.get("gpu") or entry.get("accelerator") or "")
    for key, label in NOT_EXPRESSIBLE_ACCELERATORS:
        if key in gpu.lower():
            raise NotRunnable(f"{label} accelerators have no racksim profile")
    for pattern, profile, sets in GPU_PROFILES:
        if re.search(pattern, gpu, re.I):
            if profile is None:
                raise NotRunnable(f"hardware platform {ref!r}: no racksim profile for its GPU ({gpu})")
            stated, said = _stated_gpu_figures(gpu, profile, sets)
            return Platform(
                profile,
                (*sets, *stated),
                f"platform {ref!r} read by its GPU ({gpu}): {profile}{said}; network and cluster from the "
                "profile, not from the entry's text",
            )
    raise NotRunnable(
        f"hardware platform {ref!r} is not mapped to a racksim profile (GPU {gpu or 'not named'})"
    )


# ------------------------------------------------------------------------------------------- software
@dataclass(frozen=True)
class Software:
    """What a source's training stack does where its rows are silent (one entry per source, never per row)."""

    match: str | tuple[str, ...]  # prefix of the row's group (or prefixes: releases of one source)
    zero: int = 1
    fsdp: bool = False
    tp_comm_overlap: bool = False
    dp_overlap: bool = True
    recompute: str | None = None  # None: none if it fits in HBM, else selective, else full
    grad_reduce: str = "fp32"  # Megatron reduces bf16 training's gradients in fp32
    flash_attention: bool = True
    dropout: bool = False
    fused_cross_entropy: bool = False
    flops: str = "model"  # convention of a printed TFLOP/s: model | megatron_full_recompute | megatron
    vp: int | None = None  # the stack's interleaving when a row does not give vp (None: 1)
    eval_overhead: float = 0.0  # share of wall-clock minutes spent in evaluation (MLPerf), on top of training
    fp32_params: bool = False  # PyTorch FSDP mixed precision: the fp32 master is the parameter (optimizer.*)
    pure_bf16: bool = False  # a model held in bf16: no master copy, bf16 Adam moments (optimizer.*)
    note: str = ""
    named_anywhere: bool = True  # also found by name inside a group (False: a benchmark, not a stack)


SOFTWARE: tuple[Software, ...] = (
    Software(
        "Megatron-LM SC21",
        zero=0,
        dp_overlap=False,
        recompute="full",
        grad_reduce="bf16",
        flash_attention=False,
        dropout=True,
        flops="megatron_full_recompute",
        note="Megatron-LM 2021: fp16 with fp16 gradient all-reduce after the backward, no distributed "
        "optimizer, unfused attention with dropout, full recompute (the 96·B·s·l·h² FLOP count includes it)",
    ),
    Software(
        "Megatron-LM activation recomputation",
        zero=0,
        dp_overlap=False,
        grad_reduce="bf16",
        flash_attention=False,
        dropout=True,
        note="Megatron-LM 2022: fp16, unfused attention with dropout, no distributed optimizer or TP overlap",
    ),
    Software(
        "Megatron-Core MoE report",
        tp_comm_overlap=True,
        note="Megatron-Core MoE technical report (arXiv:2603.07685) Table 11: distributed optimizer, TP overlap, "
        "no dropout stated (pretraining benchmarks), dispatcher and all-to-all overlap per Appendix B.2 (RECIPES)",
    ),
    Software(
        "Megatron-Core",
        tp_comm_overlap=True,
        dropout=True,
        flops="megatron",
        note="--overlap-grad-reduce --overlap-param-gather --tp-comm-overlap, distributed optimizer, fp32 "
        "gradient reduction, TE flash attention, Megatron's default dropout 0.1; TFLOP/s counted as "
        "Megatron's 72·B·s·l·h²(...) without recompute",
    ),
    Software(
        "torchtitan",
        zero=3,
        fsdp=True,
        fp32_params=True,
        note="torchtitan: FSDP2 fully sharded with fp32 gradient reduce-scatter (its mixed_precision_reduce "
        "default) and fp32 sharded parameters cast per use, SDPA flash attention, no TP overlap",
    ),
    Software(
        ("NeMo AutoModel", "AutoModel"),
        zero=3,
        fsdp=True,
        grad_reduce="bf16",
        pure_bf16=True,
        note="NeMo AutoModel: FSDP2 fully sharded with FSDP2Manager's MixedPrecisionPolicy (bf16 parameters "
        "and bf16 reduce-scatter); its MoE models are cast to bf16 at initialisation (initialize_weights) and "
        "trained by torch.optim.Adam, whose moments take the parameters' dtype: pure bf16, no master copy",
    ),
    Software(
        "NeMo", tp_comm_overlap=True, note="NeMo performance recipes: distributed optimizer, TP overlap"
    ),
    Software(
        "Megatron-Bridge",
        tp_comm_overlap=True,
        grad_reduce="bf16",
        note="Megatron-Bridge performance recipes: distributed optimizer, TP overlap, 16-bit gradient "
        "reduction (every model's set_*_common_configs in scripts/performance/configs sets "
        "grad_reduce_in_fp32 = False)",
    ),
    Software(
        "MLPerf",
        tp_comm_overlap=True,
        vp=12,
        eval_overhead=5662 / 24576 / 3,
        named_anywhere=False,  # "AMD MLPerf Training" is AMD's code, not NVIDIA's NeMo
        note="NVIDIA's v3.1 GPT-3 implementation (conf/custom.yaml in mlcommons/training_results_v3.1): "
        "interleaving INTERLEAVED_PIPELINE default 12, sequence parallel, TP overlap, no recompute, no dropout, "
        "distributed optimizer; evaluation of 5,662 sequences every 24,576 trained (forward only, ~1/3 of a "
        "training pass per sequence) adds 7.7 % to the raw minutes",
    ),
    Software(
        "MosaicML",
        zero=3,
        fsdp=True,
        grad_reduce="bf16",
        fused_cross_entropy=True,
        fp32_params=True,
        note="llm-foundry: PyTorch FSDP FULL_SHARD with PURE bf16 mixed precision (bf16 reduce-scatter, fp32 "
        "sharded parameters cast per use), flash attention, no dropout, MPT's default loss_fn "
        "fused_crossentropy (flash-attn's kernel)",
    ),
)
DEFAULT_SOFTWARE = Software("", note="racksim defaults (ZeRO-1, overlapped gradient reduction)")


@dataclass(frozen=True)
class Recipe:
    """What a source's published performance recipe fixes for one model on one GPU family where its rows
    are silent (read from the recipe's code, never fitted to a row's measurement)."""

    match: str | tuple[str, ...]  # prefix of the row's group (or prefixes: releases of one source)
    model: str  # racksim model name (preset)
    accelerator: str  # case-insensitive part of the profile's accelerator name
    parallelism: Mapping[str, Any]
    source: str
    recompute: tuple[str, ...] | None = None  # selective recompute modules, used when they fit in HBM
    mtp_layers: int | None = None  # multi-token-prediction modules, unless the row's model name says
    moments: str | None = None  # Adam's moments' storage precision (optimizer.moments)
    precision: str | None = None  # the racksim precision of the rows it covers (None = any)
    kernels: Mapping[str, Any] = field(default_factory=dict)  # workload kernels settings
    # the row's own values that identify one config of the recipe (micro_batch, pp, vp, ep)
    mapping: Mapping[str, int] = field(default_factory=dict)
    # Megatron pipeline layouts by (pp, vp), '{m}' standing for the model's MTP depths
    layouts: Mapping[tuple[int, int], str] = field(default_factory=dict)


_MOE_REPORT = (
    "Megatron-Core MoE report (arXiv:2603.07685) Appendix B.2, Qwen3-235B: HybridEP dispatcher on GB300/GB200, "
    "DeepEP on H100; 1F1B all-to-all overlap off on GB300, on for GB200 and H100; recompute moe_act and "
    "layernorm on GB200 and H100"
)
_MOE_REPORT_DEEPSEEK = (
    "Megatron-Core MoE report (arXiv:2603.07685) Appendix B.2 and Table 17, DeepSeek-V3: HybridEP on "
    "GB300/GB200, DeepEP on H100; 1F1B all-to-all overlap on GB300 and H100, off on GB200; recompute none on "
    "GB300, mlp on GB200, mlp, mla_up_proj, moe_act and layernorm on H100; Table 18: low-precision "
    "optimizer states"
)
# Megatron-Bridge recipes/deepseek/deepseek_v3.py set_deepseek_v3_pipeline_model_parallel_layout: the
# layout every DeepSeek-V3 config gets for its (pp, vp) (last chunk: [mtp] * mtp_num_layers + [loss]);
# (2, 8) and (8, 4) from scripts/performance/configs/deepseek/deepseek_workload_base_configs.py pp_layout.
_DEEPSEEK_V3_LAYOUTS = MappingProxyType(
    {
        (4, 1): "Et*16|t*16|t*16|t*13{m}L",
        (8, 1): "Et*8|(t*8|)*6t*5{m}L",
        (4, 2): "Et*8|(t*8|)*6t*5{m}L",
        (16, 1): "Et*4|(t*4|)*14t{m}L",
        (8, 2): "Et*4|(t*4|)*14t{m}L",
        (4, 4): "Et*4|(t*4|)*14t{m}L",
        (2, 8): "Et*4|(t*4|)*14t{m}L",
        (8, 4): "Et|(tt|)*30{m}L",
    }
)
_DEEPSEEK_V3_RECIPE = (
    "recipes/deepseek/deepseek_v3.py sets mtp_num_layers = 1, bf16 Adam moments (exp_avg_dtype, "
    "exp_avg_sq_dtype) and a pipeline layout per (pp, vp)"
)
# Megatron-Bridge releases whose DeepSeek-V3 MXFP8 configs on GB300 / GB200 run HybridEP with the 1F1B
# all-to-all overlap and full-iteration CUDA graphs (the GBS 15360 config dates the file to 26.06)
_MBRIDGE_FROM_26_06 = tuple(f"Megatron-Bridge performance summary {v}" for v in ("26.06", "26.08", "26.1"))
_DEEPSEEK_V3_CONFIGS = (
    "Megatron-Bridge scripts/performance/configs/deepseek/deepseek_workload_base_configs.py (26.06: the "
    "GBS15360 config), DEEPSEEK_V3_PRETRAIN_CONFIG_"
)

RECIPES: tuple[Recipe, ...] = (
    *(
        Recipe(
            "Megatron-Core MoE report",
            model,
            accelerator,
            MappingProxyType({"ep_dispatch": "deepep", "ep_comm_overlap": overlap}),
            _MOE_REPORT if model.startswith("qwen3") else _MOE_REPORT_DEEPSEEK,
            recompute=recompute,
            moments=None if model.startswith("qwen3") else "bf16",
        )
        for model, accelerator, overlap, recompute in (
            ("qwen3-235b-a22b", "GB300", False, None),
            ("qwen3-235b-a22b", "GB200", True, ("layernorm", "moe_act")),
            ("qwen3-235b-a22b", "H100", True, ("layernorm", "moe_act")),
            ("deepseek-v3", "GB300", True, None),
            ("deepseek-v3", "GB200", False, ("mlp",)),
            ("deepseek-v3", "H100", True, ("mlp", "mla_up_proj", "moe_act", "layernorm")),
        )
    ),
    # Megatron-Bridge's DeepSeek-V3 MXFP8 configs that overlap the all-to-all, told apart by the row's mapping
    *(
        Recipe(
            match,
            "deepseek-v3",
            accelerator,
            MappingProxyType({"ep_dispatch": "deepep", "ep_comm_overlap": True}),
            f"{_DEEPSEEK_V3_CONFIGS}{config}; {_DEEPSEEK_V3_RECIPE}",
            recompute=recompute,
            mtp_layers=1,
            moments="bf16",
            precision="fp8",
            kernels=MappingProxyType({"cuda_graphs": True} if graphs else {}),
            mapping=MappingProxyType(dict(zip(("micro_batch", "pp", "vp", "ep"), mapping, strict=True))),
            layouts=_DEEPSEEK_V3_LAYOUTS,
        )
        for match, accelerator, mapping, recompute, graphs, config in (
            (
                _MBRIDGE_FROM_26_06,
                "GB300",
                (1, 2, 8, 32),
                None,
                True,
                "GB300_FP8_MX_V2: micro-batch 1, pp 2, vp 8, ep 32, HybridEP, moe_a2a_overlap, "
                "cuda_graph_impl full_iteration, no recompute",
            ),
            (
                _MBRIDGE_FROM_26_06,
                "GB200",
                (1, 4, 4, 64),
                ("mla_up_proj",),
                True,
                "GB200_FP8_MX_V2: micro-batch 1, pp 4, vp 4, ep 64, HybridEP, moe_a2a_overlap, "
                "cuda_graph_impl full_iteration, recompute_modules [mla_up_proj]",
            ),
            (
                "Megatron-Bridge",
                "DGX B200",
                (1, 8, 2, 32),
                ("mla_up_proj", "mlp"),
                False,
                "B200_FP8_MX_V2 (the only B200 config with this mapping): micro-batch 1, pp 8, vp 2, ep 32 "
                "(over 4 nodes), DeepEP, moe_a2a_overlap, recompute_modules [mla_up_proj, mlp]",
            ),
        )
    ),
    Recipe(
        "Megatron-Bridge",
        "deepseek-v3",
        "H100",
        MappingProxyType({"ep_dispatch": "deepep", "ep_comm_overlap": True, "dp_overlap": False}),
        "Megatron-Bridge scripts/performance/configs/deepseek/deepseek_llm_pretrain.py, "
        "deepseek_v3_h100_1024gpus_{bf16,fp8}_config: enable_deepep=True, MoE all-to-all 1F1B overlap "
        "(moe_a2a_1f1b), overlap_grad_reduce=False, recompute_modules [mla_up_proj, mlp]; its Blackwell "
        "configs keep the plain all-to-all; " + _DEEPSEEK_V3_RECIPE,
        recompute=("mla_up_proj", "mlp"),
        mtp_layers=1,
        moments="bf16",
        layouts=_DEEPSEEK_V3_LAYOUTS,
    ),
    Recipe(
        "Megatron-Bridge",
        "deepseek-v3",
        "B200",  # B200 and GB200 (GB300's configs are not in that file)
        MappingProxyType({}),
        "Megatron-Bridge scripts/performance/configs/deepseek/deepseek_llm_pretrain.py, "
        "deepseek_v3_{b200,gb200}_256gpus_{bf16,fp8}_config: recompute_granularity selective, "
        "recompute_modules [mla_up_proj]; " + _DEEPSEEK_V3_RECIPE,
        recompute=("mla_up_proj",),
        mtp_layers=1,
        moments="bf16",
        layouts=_DEEPSEEK_V3_LAYOUTS,
    ),
    Recipe(
        "Megatron-Bridge",
        "deepseek-v3",
        "",  # GB300, B300: the model recipe alone
        MappingProxyType({}),
        "Megatron-Bridge " + _DEEPSEEK_V3_RECIPE,
        mtp_layers=1,
        moments="bf16",
        layouts=_DEEPSEEK_V3_LAYOUTS,
    ),
    Recipe(
        "Megatron-Bridge",
        "nemotron-3-nano-30b-a3b",
        "H100",
        MappingProxyType({"ep_dispatch": "deepep"}),
        "Megatron-Bridge perf_recipes/nemotronh/h100/nemotronh.py, Nano FP8 (current scaling): flex "
        "dispatcher with HybridEP, selective recompute of moe, layernorm, core_attn and moe_act",
        recompute=("moe", "layernorm", "core_attn", "moe_act"),
        precision="fp8",
    ),
    Recipe(
        "Megatron-Bridge",
        "nemotron-3-super-120b-a12b",
        "DGX B300",
        MappingProxyType({"ep_dispatch": "deepep"}),
        "Megatron-Bridge perf_recipes/nemotronh/b300/nemotronh.py, Super NVFP4: HybridEP, selective recompute "
        "of moe_act and layernorm; mixed_precision.py nemotron_3_super_bf16_with_nvfp4_mixed: the first 1 and "
        "last 14 layers in bf16; recipes/nemotronh/nemotron_3_super.py: keep_mtp_spec_in_bf16",
        recompute=("moe_act", "layernorm"),
        precision="fp4",
        kernels=MappingProxyType({"bf16_first_layers": 1, "bf16_last_layers": 14, "bf16_mtp": True}),
    ),
    Recipe(
        "Megatron-Bridge",
        "nemotron-3-super-120b-a12b",
        "DGX B200",
        MappingProxyType({"ep_dispatch": "deepep"}),
        "Megatron-Bridge perf_recipes/nemotronh/b200/nemotronh.py, Super FP8-MX: HybridEP, selective "
        "recompute of moe_act and layernorm; recipes/nemotronh/nemotron_3_super.py: keep_mtp_spec_in_bf16",
        recompute=("moe_act", "layernorm"),
        precision="fp8",
        kernels=MappingProxyType({"bf16_mtp": True}),
    ),
    # Super on every other system: HybridEP and the MTP module in bf16; in NVFP4 also the bf16 end layers
    *(
        Recipe(
            "Megatron-Bridge",
            "nemotron-3-super-120b-a12b",
            "",
            MappingProxyType({"ep_dispatch": "deepep"}),
            "Megatron-Bridge perf_recipes/nemotronh (flex dispatcher, HybridEP backend); "
            "recipes/nemotronh/nemotron_3_super.py: keep_mtp_spec_in_bf16" + note,
            precision=precision,
            kernels=MappingProxyType({**bf16_layers, "bf16_mtp": True}),
        )
        for precision, bf16_layers, note in (
            ("fp8", {}, ""),
            (
                "fp4",
                {"bf16_first_layers": 1, "bf16_last_layers": 14},
                "; recipes/utils/mixed_precision.py nemotron_3_super_bf16_with_nvfp4_mixed: "
                "first_last_layers_bf16 with num_layers_at_end_in_bf16 14 (and Megatron's default 1 at the start)",
            ),
        )
    ),
    *(
        Recipe(
            "Megatron-Bridge",
            model,
            "",  # every system
            MappingProxyType({"ep_dispatch": "deepep"}),
            "Megatron-Bridge perf_recipes/nemotronh/{gb300,gb200,b300,b200,h100}/nemotronh.py: every Nemotron 3 "
            "pre-training benchmark uses the flex dispatcher with the HybridEP backend (racksim's deepep: "
            "tokens laid out per local expert, one copy per destination domain); Super and 3.5 Lightning "
            "train 2 MTP depths of one shared *E module (their presets)",
        )
        for model in (
            "nemotron-3-nano-30b-a3b",
            "nemotron-3-super-120b-a12b",
            "nemotron-3.5-lightning-30b-a3b",
        )
    ),
    Recipe(
        "NeMo",
        "nemotron-4-340b",
        "H100",
        MappingProxyType({"grad_reduce": "bf16"}),
        "NeMo-Framework-Launcher conf/training/nemotron/nemotron_340b.yaml (tp 8, pp 8, vp 12, the row's "
        "layout): optim mcore_distributed_optim with grad_sync_dtype bf16; it also sets no activation "
        "checkpointing, which racksim's memory model puts 0.6 GB over 80 GB, so recompute stays the least "
        "that fits",
    ),
)


def recipe_for(
    group: str,
    model: str,
    accelerator: str,
    precision: str | None = None,
    mapping: Mapping[str, int | None] | None = None,
) -> Recipe | None:
    """The first recipe for this source, model, GPU and precision whose identifying ``mapping`` (micro-batch,
    pp, vp, ep) the row has."""
    for recipe in RECIPES:
        if (
            group.startswith(recipe.match)
            and model == recipe.model
            and recipe.accelerator.lower() in accelerator.lower()
            and recipe.precision in (None, precision)
            and all((mapping or {}).get(k) == v for k, v in recipe.mapping.items())
        ):
            return recipe
    return None


def _stack_name(sw: Software) -> str:
    return sw.match if isinstance(sw.match, str) else sw.match[0]


def software_for(group: str) -> Software:
    """The stack a row's group names: by prefix (the packaged tables), else by name anywhere in the group
    ("NVIDIA NeMo 25.04 performance summary"), else racksim's defaults."""
    for sw in SOFTWARE:
        if sw.match and group.startswith(sw.match):
            return sw
    found: list[tuple[int, int, Software]] = []  # the stack named first in the group wins
    for order, sw in enumerate(SOFTWARE):
        names = (sw.match,) if isinstance(sw.match, str) else sw.match
        for n in names if sw.named_anywhere else ():
            if n and (m := re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", group, re.I)):
                found.append((m.start(), order, sw))
    return min(found, key=lambda f: f[:2])[2] if found else DEFAULT_SOFTWARE


# ------------------------------------------------------------------------------------------- models
# Models the NeMo 24.07 table names that are not presets. Shapes from NeMo's model configs (recalled);
# each reproduces the row's printed model TFLOP/s / tokens/s to < 0.2 % (tests/test_validation.py).
EXTRA_MODELS: dict[str, dict[str, Any]] = {
    "gpt3-5b": dict(
        name="gpt3-5b", layers=24, hidden=4096, ffn_hidden=16384, heads=32, kv_heads=32, vocab=51200,
        seq_len=2048, ffn="gelu", bias=True, position_embedding="learned", tied_embeddings=True,
        source="NeMo megatron_gpt_config 5B: 24 layers, hidden 4096, 32 heads, 4h GELU, vocab 51,200",
    ),
    "gpt3-20b": dict(
        name="gpt3-20b", layers=44, hidden=6144, ffn_hidden=24576, heads=48, kv_heads=48, vocab=51200,
        seq_len=2048, ffn="gelu", bias=True, position_embedding="learned", tied_embeddings=True,
        source="NeMo megatron_gpt_config 20B: 44 layers, hidden 6144, 48 heads, 4h GELU, vocab 51,200",
    ),
    "nemotron-8b": dict(
        name="nemotron-8b", layers=32, hidden=4096, ffn_hidden=16384, heads=32, kv_heads=32, vocab=256000,
        seq_len=4096, ffn="squared_relu",
        source="NeMo Nemotron 8B config: 32 layers, hidden 4096, 32 heads (MHA), squared-ReLU 16384, vocab 256k",
    ),
    "nemotron-22b": dict(
        name="nemotron-22b", layers=40, hidden=6144, ffn_hidden=24576, heads=48, kv_heads=48, vocab=256000,
        seq_len=4096, ffn="squared_relu",
        source="NeMo Nemotron 22B config: 40 layers, hidden 6144, 48 heads (MHA), squared-ReLU 24576, vocab 256k",
    ),
}  # fmt: skip
# The small MPTs of the llm-foundry benchmark (scripts/train/yamls/pretrain/mpt-{125m,350m,760m}.yaml, recalled:
# d_model 768/1024/1536, 12/16/12 heads, 12/24/24 layers, expansion 4, vocab 50,368; learned positions and
# biases as the other MPT presets): they reproduce the README's num_params to the parameter.
for _name, _layers, _hidden, _heads in (("mpt-125m", 12, 768, 12), ("mpt-350m", 24, 1024, 16),
                                        ("mpt-760m", 24, 1536, 12)):  # fmt: skip
    EXTRA_MODELS[_name] = dict(
        name=_name, layers=_layers, hidden=_hidden, ffn_hidden=4 * _hidden, heads=_heads, kv_heads=_heads,
        vocab=50368, seq_len=2048, ffn="gelu", bias=True, position_embedding="learned", tied_embeddings=True,
        source=f"mosaicml/llm-foundry scripts/train/yamls/pretrain/{_name}.yaml (recalled); num_params match",
    )  # fmt: skip
# Published names -> preset, where normalising the name is not enough.
NAME_ALIASES: Mapping[str, str] = {
    "llama31405b": "llama3-405b",
    "llama3405b": "llama3-405b",
    "nemotron340b": "nemotron-4-340b",
    "nemotron4340b": "nemotron-4-340b",
    "nemotron3nano": "nemotron-3-nano-30b-a3b",
    "nemotron3super": "nemotron-3-super-120b-a12b",
    "nemotron35lightning": "nemotron-3.5-lightning-30b-a3b",
    "gpt3": "gpt3-175b",
    # version dots and parameter counts other authors write
    "llama318b": "llama3-8b",
    "llama3170b": "llama3-70b",
    "qwen3moe30b": "qwen3-30b-a3b",
    "qwen330b": "qwen3-30b-a3b",
    "qwen3moe235b": "qwen3-235b-a22b",
    "qwen3235b": "qwen3-235b-a22b",
    "deepseekv3671b": "deepseek-v3",
    "deepseekv3": "deepseek-v3",
    "gptoss120b": "gpt-oss-120b",
    "mixtral8x7bv01": "mixtral-8x7b",
    "mixtral8x22bv01": "mixtral-8x22b",
}
CATALOG_PRESETS: Mapping[str, str] = {
    "llama3_8b": "llama3-8b",
    "llama3_70b": "llama3-70b",
    "llama31_405b": "llama3-405b",
    "deepseek_v3": "deepseek-v3",
}


class NotRunnable(Exception):
    """A row racksim cannot express; the message is the reason printed in the table."""


# Megatron-Bridge's token-drop MoE recipes (moe_expert_capacity_factor 1.0, moe_pad_expert_input_to_capacity).
TOKEN_DROP_CAPACITY = 1.0


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


# What checkpoint names add to a model's name: the org ("meta-llama/"), tuning, format, release and date
# tags (a release "v0.1" goes, a generation "V3" or "V2.5" stays)
_NAME_TAG = re.compile(
    r"[-_ ](instruct|chat|hf|base|it|fp8|fp4|nvfp4|mxfp4|bf16|awq|gptq|v0\.\d+|\d{4})$", re.I
)


def model_base_name(name: str) -> str:
    """'meta-llama/Llama-3.3-70B-Instruct' -> 'Llama-3.3-70B', 'DeepSeek-R1-0528' -> 'DeepSeek-R1'."""
    name = name.strip().rsplit("/", 1)[-1]
    while (shorter := _NAME_TAG.sub("", name)) != name:
        name = shorter
    return name


def _named_models() -> dict[str, str]:
    out = {_norm(p): p for p in list_presets()}
    out.update({_norm(k): k for k in EXTRA_MODELS})
    out.update(NAME_ALIASES)
    return out


def _model_by_name(key: str) -> ModelSpec:
    if key in EXTRA_MODELS:
        return load_model(EXTRA_MODELS[key], file="workloads/validation.py", path=f"EXTRA_MODELS.{key}")
    return load_preset(key)


def _megatron_gpt(layers: int, hidden: int, heads: int, ffn: int | None, vocab: int, seq: int) -> ModelSpec:
    """A Megatron-LM GPT (its defaults: 4h GELU MLP, biases, learned absolute positions, tied embeddings)."""
    return ModelSpec(
        name=f"gpt-{layers}l-{hidden}h",
        layers=layers,
        hidden=hidden,
        ffn_hidden=ffn or 4 * hidden,
        heads=heads,
        kv_heads=heads,
        vocab=vocab,
        seq_len=seq,
        ffn="gelu",
        bias=True,
        position_embedding="learned",
        tied_embeddings=True,
        source="Megatron-LM GPT defaults with the row's layers/hidden/heads",
    )


_CATALOG_FFN = (("swiglu", "swiglu"), ("silu", "swiglu"), ("squared", "squared_relu"), ("relu2", "squared_relu"),
                ("gelu", "gelu"))  # fmt: skip


def _preset_of_shape(
    shape: tuple[int | None, ...],
    *,
    ffn: int | None = None,
    kv_heads: int | None = None,
    vocab: int | None = None,
    seq: int | None = None,
    moe: bool | None = None,
    first: tuple[str, ...] = (),
) -> str | None:
    """The first preset (``first`` tried before the rest) with these layers, hidden and heads and, where
    given, FFN width (dense models), KV heads, vocabulary, sequence length and MoE or not."""
    for preset in (*first, *list_presets()):
        p = _model_by_name(preset)
        if (
            (p.layers, p.hidden, p.heads) == shape
            and (moe is None or (p.moe is not None) == moe)
            and (not ffn or bool(moe) or p.ffn_hidden == ffn)
            and (not kv_heads or p.kv_heads == kv_heads)
            and (not vocab or p.vocab == vocab)
            and (not seq or p.seq_len == seq)
        ):
            return preset
    return None


def _is_moe_entry(c: Mapping[str, Any]) -> bool:
    """An MoE catalog entry by any spelling (moe, num_local_experts, n_routed_experts) or by its active
    parameters being fewer than its total."""
    if any("expert" in str(k).lower() or "moe" in str(k).lower() for k in c):
        return True
    total, active = c.get("params_b"), c.get("active_params_b")
    return isinstance(total, int | float) and isinstance(active, int | float) and 0 < active < total


def _catalog_model(ref: str, c: Mapping[str, Any], seq: int | None) -> tuple[ModelSpec, str]:
    """A ``model_catalog`` entry racksim has no mapping for: the preset of the same shape (or name), else a
    dense decoder built from the entry (GQA, activation) — an MoE entry without a preset is not guessed."""
    where = f"model_catalog.{ref}"
    shape = tuple(positive_int(c, k, where) for k in ("layers", "hidden", "heads"))
    if None in shape:
        raise NotRunnable(f"`{where}` does not give layers, hidden and heads")
    kv_heads = positive_int(c, "kv_heads", where)
    ffn_size = positive_int(c, "ffn", where)
    named = _named_models().get(_norm(ref))
    moe = _is_moe_entry(c)
    preset = _preset_of_shape(
        shape, ffn=ffn_size, kv_heads=kv_heads, moe=moe, first=(named,) if named else ()
    )
    if preset is not None:
        return _model_by_name(preset), f"catalog {ref} -> preset {preset} (same layers, hidden and heads)"
    if moe:
        raise NotRunnable(f"`{where}` is a mixture-of-experts model racksim has no preset of that shape for")
    activation = str(c.get("activation") or c.get("ffn_type") or "").lower()
    ffn = next((kind for key, kind in _CATALOG_FFN if key in activation), None)
    vocab = positive_int(c, "vocab", where) or 51200
    if kv_heads is None and ffn is None:
        return _megatron_gpt(*shape, ffn_size, vocab, seq or 2048), f"catalog {ref} (Megatron GPT defaults)"
    layers, hidden, heads = shape
    ffn = ffn or "swiglu"
    spec = ModelSpec(
        name=ref,
        layers=layers,
        hidden=hidden,
        ffn_hidden=ffn_size or (int(8 * hidden / 3) if ffn == "swiglu" else 4 * hidden),
        heads=heads,
        kv_heads=kv_heads or heads,
        vocab=vocab,
        seq_len=seq or positive_int(c, "seq_len", where) or 4096,
        ffn=ffn,
        bias=False,
        position_embedding="rope",
        tied_embeddings=False,
        source=f"the table's {where}: layers, hidden, heads, kv_heads, ffn, activation; RoPE, no biases",
    )
    return spec, f"catalog {ref} ({ffn}, {spec.kv_heads} KV heads, RoPE, untied embeddings)"


def resolve_model(row: Mapping[str, Any], table: Mapping[str, Any]) -> tuple[ModelSpec, str]:
    """The row's model and how it was found: catalog ref, published name, or layers/hidden/heads."""
    m = dict(row_section(row, "model"))
    catalog = table.get("model_catalog") or {}
    if not isinstance(catalog, Mapping):
        raise NotRunnable(f"the table's `model_catalog` is {type(catalog).__name__}, expected a mapping")
    seq = positive_int(m, "seq_len", "model") or positive_int(row, "model_seq_len", "row")
    name = str(m.get("name") or "")
    spec: ModelSpec | None = None
    how = ""
    ref = m.get("ref")
    if ref is not None and not isinstance(ref, str):
        raise NotRunnable(f"`model.ref` is {ref!r}, expected a catalog name")
    if ref and ref in CATALOG_PRESETS:
        spec, how = load_preset(CATALOG_PRESETS[ref]), f"catalog {ref} -> preset {CATALOG_PRESETS[ref]}"
    elif ref and ref in catalog and isinstance(catalog[ref], Mapping) and catalog[ref].get("layers"):
        spec, how = _catalog_model(ref, catalog[ref], seq)
    if spec is None and name:
        base = _norm(re.sub(r"\(.*?\)", "", name).split(",")[0])
        names = _named_models()
        key = names.get(base)
        if key is None:
            # e.g. "GPT-3 175B (MLPerf gpt3 benchmark ...)": the words before the parenthesis
            key = names.get(_norm(name.split("(")[0]))
        if key is None:  # a checkpoint's name: "meta-llama/Llama-3.1-8B-Instruct"
            key = names.get(_norm(model_base_name(name.split("(")[0])))
        if key is not None:
            spec, how = _model_by_name(key), f"name {name.split('(')[0].strip()!r} -> {key}"
    dims = {k: positive_int(m, k, "model") for k in ("layers", "hidden", "heads", "ffn", "vocab")}
    if spec is None and dims["layers"] and dims["hidden"] and dims["heads"]:
        vocab = dims["vocab"] or 51200
        shape = (dims["layers"], dims["hidden"], dims["heads"])
        preset = _preset_of_shape(shape, ffn=dims["ffn"], vocab=vocab, seq=seq)
        if preset is not None:
            spec, how = _model_by_name(preset), f"layers/hidden/heads -> preset {preset}"
        else:
            spec = _megatron_gpt(*shape, dims["ffn"], vocab, seq or 2048)
            how = "layers/hidden/heads -> Megatron GPT (4h GELU, learned positions)"
    if spec is None:
        if name:
            raise NotRunnable(f"model {name!r} is not a preset and its shape is not given")
        raise NotRunnable("model shape not given (no name, catalog ref, or layers/hidden/heads)")
    if seq and seq != spec.seq_len:
        spec = replace(spec, seq_len=int(seq))
    named = mtp_named(name)
    if named:  # DeepSeek-V3 trains one MTP module (depth 1, its report §2.2)
        spec = replace(spec, mtp_layers=named)
        how += f"; w/ MTP: mtp_layers {named} (on the last pipeline stage)"
    return spec, how


def mtp_named(name: str) -> int | None:
    """What a row's model name says of multi-token prediction: None (nothing), 0 ("w/o MTP", "without
    MTP", "no MTP") or 1 (any other mention, e.g. "w/ MTP")."""
    if not re.search(r"(?<![a-z])mtp(?![a-z])", name, re.I):
        return None
    return 0 if re.search(r"(w/o|without|no)[\s_-]*mtp", name, re.I) else 1


# ------------------------------------------------------------------------------------------- rows
@dataclass(frozen=True)
class RowPlan:
    """A runnable row: what racksim will run and how its prediction becomes the printed metric."""

    id: str
    group: str
    profile: str
    profile_sets: tuple[str, ...]
    racks: int
    spec: dict[str, Any]
    metric: str
    measured: float
    convert: str  # tokens | step | tflops | minutes | serving_tokens (a serving run's output tokens/s)
    scale: float = 1.0  # FLOP per iteration (tflops), steps to target (minutes), replicas (serving_tokens)
    assumptions: tuple[str, ...] = ()

    def inputs_digest(self) -> str:
        """A short digest of everything racksim runs and converts for this row except its name: two rows
        with the same digest get the same prediction, so their measurements' disagreement is a floor no
        model of these inputs can go below (``Report.repeats``)."""
        spec = {k: v for k, v in self.spec.items() if k != "name"}
        what = [
            self.profile,
            list(self.profile_sets),
            self.racks,
            spec,
            self.metric,
            self.convert,
            self.scale,
        ]
        return hashlib.sha1(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass
class RowResult:
    """One row of the error table."""

    id: str
    group: str
    runnable: bool
    reason: str = ""
    metric: str = ""
    measured: float | None = None
    predicted: float | None = None
    error_pct: float | None = None
    step_s: float | None = None  # racksim's training step; None for serving rows and rows that did not run
    wall_s: float = 0.0
    assumptions: tuple[str, ...] = ()
    inputs: str | None = None  # RowPlan.inputs_digest: rows with the same one run identically

    @property
    def speed_error_pct(self) -> float | None:
        """The error as a throughput error (positive = racksim predicts faster), whatever the metric: time
        metrics (iteration s, minutes) flip sign so per-group biases can be compared."""
        if self.error_pct is None or self.predicted is None or self.measured is None:
            return None
        if self.metric.startswith(("iteration", "minutes")):
            return 100.0 * (self.measured / self.predicted - 1.0)
        return self.error_pct

    @property
    def measured_step_s(self) -> float | None:
        """The step the measurement implies (racksim's step scaled by the speed error): the error in seconds
        per step, which separates a fixed per-step remainder from a rate error (docs/validation.md)."""
        speed = self.speed_error_pct
        if self.step_s is None or speed is None:
            return None
        return self.step_s * (1.0 + speed / 100.0)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "group": self.group,
            "runnable": self.runnable,
            "reason": self.reason,
            "metric": self.metric,
            "measured": self.measured,
            "predicted": self.predicted,
            "error_pct": self.error_pct,
            "step_s": self.step_s,
            "measured_step_s": self.measured_step_s,
            "inputs_digest": self.inputs,
        }


def precision_of(text: Any) -> tuple[str, str]:
    """(racksim precision, note) from a row's precision text: FP4 variants -> fp4, FP8 -> fp8, BF16 -> bf16."""
    s = str(text or "").upper()
    if re.search(r"\b(TF32|FP32|FLOAT32|INT8|INT4|W\dA\d+)\b", s):
        raise NotRunnable(f"precision {text!r}: racksim runs bf16, fp16, fp8 and fp4 GEMMs")
    if re.search(r"FP4|NVFP4|MXFP4|FLOAT4", s):
        return "fp4", ""
    if re.search(r"FP8|FLOAT8|E4M3|E5M2", s):
        return "fp8", ""
    if re.search(r"BF16|BFLOAT16", s):
        return "bf16", ""
    if re.search(r"FP16|FLOAT16|HALF", s):
        return "fp16", ""
    return "bf16", "precision not stated: bf16 assumed"


def _int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def row_section(row: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """A row's ``key`` section (empty when absent); anything but a mapping makes the row not runnable."""
    value = row.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise NotRunnable(f"`{key}` is {value!r}, expected a mapping")
    return value


NOT_GIVEN = ("", "-", "n/a", "na", "none", "null")  # how tables print an empty cell


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in NOT_GIVEN)


def positive_int(section: Mapping[str, Any], key: str, where: str) -> int | None:
    """A count the row gives (GPUs, a parallel degree, a batch or a length): None when absent, else a
    positive whole number or the row is not runnable."""
    value = section.get(key)
    if _blank(value):
        return None
    n = _int(value)
    if n is None or n < 1:
        raise NotRunnable(f"`{where}.{key}` is {value!r}, expected a positive whole number")
    return n


def positive_number(section: Mapping[str, Any], key: str, where: str) -> float | None:
    """A quantity the row gives: None when absent or not a number; a non-positive or non-finite one makes
    the row not runnable."""
    value = section.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not (math.isfinite(value) and value > 0):
        raise NotRunnable(f"`{where}.{key}` is {value!r}, expected a positive, finite number")
    return float(value)


def measured_value(section: Mapping[str, Any], key: str) -> float | None:
    """A printed measurement from ``results`` (an error relative to zero or infinity means nothing); a
    number kept as printed text ("1,002") is read as the number."""
    value = section.get(key)
    if isinstance(value, str) and re.fullmatch(r"\s*(\d{1,3}(,\d{3})+|\d+)(\.\d+)?\s*", value):
        section = {key: float(value.replace(",", ""))}
    return positive_number(section, key, "results")


def _recompute_of(value: Any) -> str | None:
    if value is None:
        return None
    if value is True:
        return "full"
    if value is False:
        return "none"
    s = str(value).lower()
    for mode in ("selective", "full", "none"):
        if s.startswith(mode):
            return mode
    return None


def _metric(row: Mapping[str, Any], sw: Software) -> tuple[str, float, str]:
    res = row_section(row, "results")
    if (v := measured_value(res, "tokens_per_s_per_gpu") or measured_value(res, "wps_per_gpu")) is not None:
        return "tokens/s/GPU", v, "tokens"  # torchtitan logs tokens ("words") per second per GPU as wps
    if (v := measured_value(res, "iteration_time_s")) is not None:
        return "iteration s", v, "step"
    if (
        v := measured_value(res, "tflops_per_gpu") or measured_value(res, "model_tflops_per_gpu")
    ) is not None:
        label = {"megatron_full_recompute": "SC21 96BSlh2", "megatron": "Megatron 72BSlh2"}.get(
            sw.flops, "6N+attn"
        )
        return f"TFLOP/s/GPU ({label})", v, "tflops"
    for key in ("median_raw_minutes", "mean_raw_minutes"):
        if (v := measured_value(res, key)) is not None:
            return "minutes (raw)", v, "minutes"
    raise NotRunnable("no printed metric racksim can predict (tokens/s, iteration time, TFLOP/s, minutes)")


def map_row(row: Mapping[str, Any], table: Mapping[str, Any]) -> RowPlan:
    """Turn one table row into a racksim run, or raise NotRunnable with the reason."""
    from simcore.profile import load_profile

    rid = str(row.get("id", "?"))
    group = str(row.get("group", ""))
    sw = software_for(group)
    hw = row_section(row, "hardware")
    ref = hw.get("ref")
    if ref is not None and not isinstance(ref, str):
        raise NotRunnable(f"`hardware.ref` is {ref!r}, expected a platform name")
    if not ref:
        acc = str(hw.get("accelerator") or "")
        for key, label in NOT_EXPRESSIBLE_ACCELERATORS:
            if key in acc.lower():
                raise NotRunnable(f"{label} accelerators have no racksim profile")
        raise NotRunnable(f"no hardware platform given ({acc or 'accelerator not named'})")
    if str(ref).startswith("tpu"):
        raise NotRunnable("TPU pods have no racksim profile")
    platform = platform_for(ref, table)
    gpus = positive_int(hw, "gpus", "hardware")
    if not gpus:
        raise NotRunnable("number of GPUs not given")
    metric, measured, convert = _metric(row, sw)

    par_in = row_section(row, "parallelism")
    tp = positive_int(par_in, "tp", "parallelism") or 1
    pp = positive_int(par_in, "pp", "parallelism") or 1
    cp = positive_int(par_in, "cp", "parallelism") or 1
    vp = positive_int(par_in, "vp", "parallelism")
    ep = positive_int(par_in, "ep", "parallelism") or 1
    fsdp_size = 0 if par_in.get("fsdp") in (None, 0) else positive_int(par_in, "fsdp", "parallelism") or 0
    fsdp = sw.fsdp or fsdp_size > 0 or "fsdp" in str(par_in.get("dp_type", "")).lower()
    given = {k for k in ("tp", "pp", "dp", "dp_type", "fsdp") if not _blank(par_in.get(k))}
    if not given or ("tp" not in given and "dp" not in given and not fsdp):
        raise NotRunnable("parallelism not given")
    if gpus % (tp * pp * cp):
        raise NotRunnable(f"tp·pp·cp = {tp}·{pp}·{cp} does not divide {gpus} GPUs")
    dp = gpus // (tp * pp * cp)
    if vp is None:
        vp = sw.vp if sw.vp and pp > 1 else 1
    given_dp = positive_int(par_in, "dp", "parallelism")
    if given_dp is not None and given_dp != dp:
        raise NotRunnable(f"dp = {given_dp} but GPUs / (tp·pp·cp) = {dp}")
    assumptions: list[str] = []
    if sw is DEFAULT_SOFTWARE:
        assumptions.append(f"software: the group names no stack racksim knows: {sw.note}")
    elif not group.startswith(sw.match):
        assumptions.append(f"software: {_stack_name(sw)}, named in the group ({sw.note})")
    if _int(par_in.get("vp")) is None and vp > 1:
        assumptions.append(f"vp not given: {vp} ({_stack_name(sw)} stack default)")
    if platform.note:
        assumptions.append(platform.note)

    batch = row_section(row, "batch")
    gbs = positive_int(batch, "global_batch_seqs", "batch")
    if not gbs:
        raise NotRunnable("global batch not given")
    if gbs % dp:
        raise NotRunnable(f"global batch {gbs} does not divide over dp = {dp} replicas")
    micro = positive_int(batch, "micro_batch", "batch")

    model, how = resolve_model(row, table)
    assumptions.append(f"model: {how}")
    if model.moe is not None and _int(par_in.get("ep")) is None:
        assumptions.append(
            f"ep not given ({par_in.get('ep')!r}): 1, every GPU holds all {model.moe.experts} experts"
        )
    if model.moe is not None and re.search(
        r"token\s*-?drop", f"{rid} {row_section(row, 'model').get('name', '')}", re.I
    ):
        # Megatron-Bridge's token-drop recipes: capacity factor 1 with expert inputs padded to capacity
        model = replace(model, moe=replace(model.moe, capacity_factor=TOKEN_DROP_CAPACITY))
        assumptions.append(f"token-drop: moe.capacity_factor {TOKEN_DROP_CAPACITY:g} (padded to capacity)")
    precision, note = precision_of(row.get("precision"))
    if note:
        assumptions.append(note)
    profile = load_profile(platform.profile, list(platform.sets))
    if precision not in profile.accelerator.peak_flops:
        raise NotRunnable(f"{profile.accelerator.name} has no {precision} tensor cores")

    sp = par_in.get("sequence_parallel")
    parallelism: dict[str, Any] = {
        "tp": tp,
        "pp": pp,
        "dp": dp,
        "cp": cp,
        "ep": ep,
        "vp": vp,
        "sequence_parallel": bool(sp) if sp is not None else tp > 1,
        "zero": 3 if fsdp else sw.zero,
        "fsdp": fsdp,
        "tp_comm_overlap": sw.tp_comm_overlap or "tp-comm-overlap" in str(par_in.get("overlap", "")),
        "dp_overlap": sw.dp_overlap,
        "grad_reduce": sw.grad_reduce,
    }
    identity = {"micro_batch": micro, "pp": pp, "vp": vp, "ep": ep}
    recipe = recipe_for(group, model.name, profile.accelerator.name, precision, identity)
    if recipe is not None:
        silent = {k: v for k, v in recipe.parallelism.items() if k not in par_in}  # the row's word wins
        parallelism.update(silent)
        if silent:
            settings = ", ".join(f"{k}: {v}" for k, v in silent.items())
            assumptions.append(f"recipe ({recipe.source}) -> {settings}")
        model_name = str(row_section(row, "model").get("name") or "")
        if recipe.mtp_layers is not None and mtp_named(model_name) is None:
            model = replace(model, mtp_layers=recipe.mtp_layers)
            assumptions.append(
                f"MTP not named: the recipe's mtp_layers {recipe.mtp_layers} ({recipe.source})"
            )
    recipe_layout = recipe.layouts.get((pp, vp)) if recipe is not None else None
    if recipe_layout is not None:
        parallelism["pipeline_layout"] = recipe_layout.format(m="m" * model.mtp_layers)
        assumptions.append(f"pipeline layout not printed: the recipe's {parallelism['pipeline_layout']!r}")
    else:
        layout = _pipeline_layout(model, pp, vp)
        if layout is not None:
            parallelism["layers_per_chunk"] = list(layout)
            assumptions.append(
                f"pipeline layout not printed and {pp}·{vp} chunks do not split {model.layers} layers evenly: "
                f"layers_per_chunk {list(layout)} (most even, lighter chunks at the ends)"
            )
    dispatch_text = row.get("kernels")  # e.g. NeMo AutoModel's "TE + DeepEP"
    if (
        model.moe is not None
        and ep > 1
        and "ep_dispatch" not in parallelism
        and isinstance(dispatch_text, str)
        and re.search(r"deep\s*-?ep|hybrid\s*-?ep", dispatch_text, re.IGNORECASE)
    ):
        parallelism["ep_dispatch"] = "deepep"
        assumptions.append(f"kernels {dispatch_text!r}: ep_dispatch deepep")
    spec: dict[str, Any] = {
        "kind": "training",
        "name": rid,
        "model": _model_mapping(model),
        "parallelism": parallelism,
        "batch": {"global_seqs": gbs, "micro": micro or 1},
        "precision": precision,
        "steps": 1,
        "kernels": {
            "flash_attention": sw.flash_attention,
            "dropout": sw.dropout,
            "fused_cross_entropy": sw.fused_cross_entropy,
        },
    }
    if recipe is not None and recipe.kernels:
        spec["kernels"].update(recipe.kernels)
        settings = ", ".join(f"{k}: {v}" for k, v in recipe.kernels.items())
        assumptions.append(f"kernels not given: the recipe's {settings}")
    if recipe is not None and recipe.moments is not None:
        spec["optimizer"] = {"moments": recipe.moments}
        assumptions.append(f"optimizer not given: the recipe's {recipe.moments} Adam moments")
    if sw.fp32_params:
        spec.setdefault("optimizer", {})["fp32_params"] = True
    if sw.pure_bf16:
        spec.setdefault("optimizer", {}).update(master_weights=False, moments="bf16")
    training = row_section(row, "training")  # torchtitan-style tables: training.activation_checkpointing
    checkpointing = next(
        (
            v
            for v in (training.get("activation_checkpointing"), training.get("activation_recompute"))
            if v is not None
        ),
        None,
    )
    given_mode = (
        _recompute_of(par_in.get("activation_recompute")) or _recompute_of(checkpointing) or sw.recompute
    )
    if _recompute_of(checkpointing) == "selective" and "op" in str(checkpointing).lower():
        assumptions.append(
            f"recompute {checkpointing!r} (torchtitan's per-op policy) runs as racksim's selective recompute"
        )
    given = Recompute(given_mode) if given_mode else None
    preferred = None
    if recipe is not None and recipe.recompute is not None:
        preferred = Recompute("selective", 0, recipe.recompute)
    way, micro_used = _fitting_layout(spec, profile.accelerator.hbm_capacity, given, micro, preferred)
    if given is None:
        if recipe is not None and way == preferred:
            assumptions.append(
                f"recompute not given: {way.label}, the recipe's ({recipe.source}; it fits in HBM)"
            )
        else:
            assumptions.append(f"recompute not given: {way.label} (the least that fits in HBM)")
    if micro is None:
        why = "pp > 1: 1" if pp > 1 else "pp = 1: the largest that fits (no accumulation unless needed)"
        assumptions.append(f"micro-batch not given ({why}) -> {micro_used}")
    parallelism.update(way.settings())
    spec["batch"]["micro"] = micro_used
    _check_spec(spec)

    scale = 1.0
    if convert == "tflops":
        full = sw.flops == "megatron_full_recompute"
        if sw.flops in ("megatron", "megatron_full_recompute"):
            scale = megatron_flops_per_iteration(model, gbs, model.seq_len, full_recompute=full)
        else:
            scale = gbs * model.seq_len * model_flops_per_token(model, model.seq_len)
    elif convert == "minutes":
        samples = positive_number(batch, "train_samples_to_target", "batch")
        if samples is None:
            raise NotRunnable("MLPerf minutes without train_samples_to_target")
        steps = samples / (gbs * model.seq_len)
        scale = steps * (1.0 + sw.eval_overhead)
        assumptions.append(f"{steps:g} steps to target (train_samples_to_target counts tokens)")
        if sw.eval_overhead:
            assumptions.append(f"evaluation adds {100 * sw.eval_overhead:.1f} % to the minutes")
    racks = max(1, math.ceil(gpus / profile.gpus_per_rack))
    return RowPlan(
        id=rid,
        group=group,
        profile=platform.profile,
        profile_sets=platform.sets,
        racks=racks,
        spec=spec,
        metric=metric,
        measured=measured,
        convert=convert,
        scale=scale,
        assumptions=tuple(assumptions),
    )


def _model_mapping(model: ModelSpec) -> dict[str, Any]:
    from workloads.spec import model_to_mapping

    return model_to_mapping(model)


def _check_spec(spec: Mapping[str, Any]) -> None:
    """Validate the mapped spec the way a run would; a parallelism racksim cannot run is NotRunnable."""
    from workloads.spec import load_training_spec

    try:
        load_training_spec(spec, file="row")
    except ConfigError as exc:
        raise NotRunnable(_clean(str(exc))) from None


def _clean(message: str) -> str:
    return message.removeprefix("row: ").strip()


def _pipeline_layout(model: ModelSpec, pp: int, vp: int) -> tuple[int, ...] | None:
    """None when racksim's automatic split applies; otherwise the most even ``layers_per_chunk``.

    Sources that split layers unevenly (DeepSeek-V3's 61 layers on 8, 16 or 32 chunks) used an explicit
    Megatron pipeline layout they do not print; a recipe's layout (``Recipe.layouts``) is used where one is
    known, otherwise the most even one is the assumption.
    """
    from workloads.model import balanced_chunk_layers, pipeline_layers

    try:
        pipeline_layers(model, pp, vp)
        return None
    except ConfigError:
        layout = balanced_chunk_layers(model.layers, pp, vp)
        if layout is None:
            raise NotRunnable(f"pp·vp = {pp}·{vp} chunks exceed {model.layers} layers") from None
        return layout


# What Megatron-Bridge's MoE performance recipes recompute when they must (GPT-OSS, Qwen3 and DeepSeek-V3
# configs: recompute_modules with moe_act and layernorm; the Megatron-Core MoE report, Appendix B.2).
MOE_RECOMPUTE_MODULES = ("layernorm", "moe_act")


@dataclass(frozen=True)
class Recompute:
    """One way to recompute: the mode, full recompute's layers per chunk, selective recompute's modules."""

    mode: str
    layers: int = 0
    modules: tuple[str, ...] = ("core_attn",)

    @property
    def label(self) -> str:
        if self.mode == "selective" and self.modules != ("core_attn",):
            return "selective, " + " and ".join(self.modules)
        return f"full, first {self.layers} layer(s) of each chunk" if self.layers else self.mode

    def settings(self) -> dict[str, Any]:
        return {
            "recompute": self.mode,
            "recompute_layers": self.layers,
            "recompute_modules": list(self.modules),
        }


def _fitting_layout(
    spec: dict[str, Any],
    capacity: float,
    recompute: Recompute | None,
    micro: int | None,
    preferred: Recompute | None = None,
) -> tuple[Recompute, int]:
    """(recompute, micro-batch) for what the source left open.

    Recompute: the source's own (``recompute``) as given; otherwise the recipe's (``preferred``) if it fits,
    else the least that fits every pipeline stage in HBM: none, then (MoE models) selective recompute of
    the norms and expert activations, then full recompute of the first 1, 2, ... layers of each chunk
    (Megatron's block method, as NVIDIA's recipes tune it), then all layers.
    Micro-batch: 1 with pipelining (the bubble wants many micro-batches); without it, the largest divisor of
    the per-replica batch that fits (no gradient accumulation unless memory forces it). Falls back to full
    recompute and micro-batch 1.
    """
    from workloads.memory import training_memory
    from workloads.model import pipeline_layers
    from workloads.spec import _memory_kwargs, load_training_spec

    par = spec["parallelism"]
    per_replica = spec["batch"]["global_seqs"] // par["dp"]
    if micro is not None:
        micros = [micro]
    elif par["pp"] > 1:
        micros = [1]
    else:
        micros = [d for d in range(per_replica, 0, -1) if per_replica % d == 0]
    if recompute is not None:
        ways = [recompute]
    else:
        try:
            ts = load_training_spec(spec, file="row")
        except ConfigError as exc:
            raise NotRunnable(_clean(str(exc))) from None
        chunks = pipeline_layers(
            ts.model, par["pp"], par["vp"], layers_per_chunk=ts.parallelism.layers_per_chunk
        )
        longest = max(len(c) for stage in chunks for c in stage)
        ways = [Recompute("none")] + [Recompute("full", n) for n in range(1, longest)] + [Recompute("full")]
        if ts.model.moe is not None:  # Megatron's MoE recipes rebuild the norms and expert activations first
            ways.insert(1, Recompute("selective", 0, MOE_RECOMPUTE_MODULES))
        if preferred is not None:
            ways.insert(0, preferred)
    for way in ways:
        for mb in micros:
            trial = {
                **spec,
                "parallelism": {**par, **way.settings()},
                "batch": {**spec["batch"], "micro": mb},
            }
            try:
                ts = load_training_spec(trial, file="row")
            except ConfigError as exc:
                raise NotRunnable(_clean(str(exc))) from None
            stages = range(ts.parallelism.pp)
            if max(training_memory(ts.model, **_memory_kwargs(ts, s)).total for s in stages) <= capacity:
                return way, mb
    return ways[-1], micros[-1]


def predicted_metric(plan: RowPlan, summary: Mapping[str, Any]) -> float:
    """The simulated run expressed in the row's printed metric."""
    step = float(summary["step_time_s"])
    if plan.convert == "tokens":
        return float(summary["tokens_per_s_per_gpu"])
    if plan.convert == "step":
        return step
    if plan.convert == "tflops":
        return plan.scale / step / float(summary["gpus"]) / 1e12
    if plan.convert == "minutes":
        return plan.scale * step / 60.0
    if plan.convert == "serving_tokens":
        return float(summary["tokens_per_s"]) * plan.scale  # scale: identical replicas not simulated
    raise ValueError(plan.convert)


def plan_row(row: Mapping[str, Any], table: Mapping[str, Any]) -> RowPlan:
    """A training row (``map_row``) or an inference row (``workloads.serving_validation``)."""
    from workloads.serving_validation import is_serving_row, map_serving_row

    if not isinstance(row, Mapping):
        raise NotRunnable(f"row is {row!r}, expected a mapping")
    if not is_serving_row(row) and "hardware" not in row and "parallelism" not in row:
        raise NotRunnable("no hardware, parallelism or scenario: a reference note, not a measured run")
    return map_serving_row(row, table) if is_serving_row(row) else map_row(row, table)


ROW_WORKLOAD = "the row's workload"  # how a per-row error names the temporary spec file the row ran from


def run_plan(plan: RowPlan, extra_sets: Iterable[str] = ()) -> RowResult:
    """Simulate one mapped row (one training step, or a serving run's whole request stream; no trace) and
    compare; ``extra_sets`` are profile or workload overrides applied to every row (what-if studies, split
    as ``run`` splits them). Errors name the row's workload, not the temporary file it ran from."""
    from simcore.runner import RunOptions, run

    t0 = time.perf_counter()
    base = RowResult(plan.id, plan.group, True, metric=plan.metric, measured=plan.measured)
    base.assumptions = plan.assumptions
    base.inputs = plan.inputs_digest()
    with tempfile.TemporaryDirectory(prefix="racksim-validate-") as tmp:
        path = Path(tmp) / "workload.yaml"
        path.write_text(yaml.safe_dump(plan.spec, sort_keys=False))
        try:
            result = run(
                RunOptions(
                    profile=plan.profile,
                    workload=str(path),
                    racks=plan.racks,
                    steps=None if plan.convert == "serving_tokens" else 1,
                    sets=[*plan.profile_sets, *extra_sets],
                    write_trace=False,
                )
            )
        except RacksimError as exc:  # CapacityError included: the row's layout does not fit
            reason = _clean(str(exc).replace(str(path), ROW_WORKLOAD))
            if isinstance(exc, CapacityError) and reason.startswith("the job needs"):
                reason = f"does not fit the row's racks: {reason}"  # a --set that changed the GPU count
            elif isinstance(exc, CapacityError):
                reason = f"does not fit in racksim's memory model: {reason}"
            base.runnable = False
            base.reason = reason
            base.wall_s = time.perf_counter() - t0
            return base
    base.predicted = predicted_metric(plan, result.summary)
    base.error_pct = 100.0 * (base.predicted - plan.measured) / plan.measured
    if plan.convert != "serving_tokens":
        base.step_s = result.summary["step_time_s"]
    base.wall_s = time.perf_counter() - t0
    return base


# ------------------------------------------------------------------------------------------- tables
def load_table(path: str | Path | None = None, *, serving: bool = False) -> tuple[dict[str, Any], str]:
    """The reference table and its name (default: the packaged copy of shared/reference/training_runs.yaml,
    or with ``serving`` of inference_runs.yaml)."""
    if path is None:
        from workloads.serving_validation import DEFAULT_SERVING_TABLE

        default = DEFAULT_SERVING_TABLE if serving else DEFAULT_TABLE
        data = yaml.safe_load((resources.files("workloads") / default).read_text(encoding="utf-8"))
        label = f"workloads/{default}"
    else:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(
                "is a directory" if p.is_dir() else "table not found",
                file=str(path),
                expected="a training_runs.yaml- or inference_runs.yaml-style file",
            )
        data, label = read_yaml(p, expected="a table: a mapping with a `runs:` list"), str(path)
    if not isinstance(data, Mapping) or not isinstance(data.get("runs"), list):
        raise ConfigError("not a training-runs table", file=label, expected="a mapping with a `runs:` list")
    return dict(data), label


@dataclass
class Report:
    """The error table of one validation run."""

    table: str
    rows: list[RowResult] = field(default_factory=list)

    @property
    def runnable(self) -> list[RowResult]:
        return [r for r in self.rows if r.runnable and r.error_pct is not None]

    @property
    def mape(self) -> float | None:
        errs = [abs(r.error_pct) for r in self.runnable if r.error_pct is not None]
        return sum(errs) / len(errs) if errs else None

    @property
    def worst(self) -> RowResult | None:
        rows = self.runnable
        return max(rows, key=lambda r: abs(r.error_pct or 0.0)) if rows else None

    def repeats(self) -> list[list[RowResult]]:
        """Sets of two or more runnable rows racksim runs with the same inputs (the same workload, profile,
        overrides and metric conversion), in table order: the same configuration measured more than once,
        e.g. by successive software releases."""
        sets: dict[str, list[RowResult]] = {}
        for r in self.runnable:
            if r.inputs is not None:
                sets.setdefault(r.inputs, []).append(r)
        return [rows for rows in sets.values() if len(rows) > 1]

    @property
    def floor_mape(self) -> float | None:
        """The lowest MAPE any prediction made from the rows' inputs alone can reach: rows with the same
        inputs get one prediction, and the best one for a set minimises the sum of |p/m - 1| (a weighted
        median of the measurements, found among them since the sum is convex and piecewise linear in p)."""
        n = len(self.runnable)
        if not n:
            return None
        total = 0.0
        for rows in self.repeats():
            measured = [float(r.measured) for r in rows if r.measured]
            total += min(sum(abs(p / m - 1.0) for m in measured) for p in measured)
        return 100.0 * total / n

    def by_group(self) -> dict[str, tuple[int, float, float, int]]:
        """group -> (runnable rows, MAPE %, mean speed error % (positive = predicted faster), not runnable)."""
        out: dict[str, tuple[int, float, float, int]] = {}
        groups = list(dict.fromkeys(r.group for r in self.rows))
        for g in groups:
            mine = [r for r in self.runnable if r.group == g]
            errs = [abs(r.error_pct) for r in mine if r.error_pct is not None]
            speed = [r.speed_error_pct for r in mine if r.speed_error_pct is not None]
            skipped = sum(1 for r in self.rows if r.group == g and not r.runnable)
            mape = sum(errs) / len(errs) if errs else float("nan")
            bias = sum(speed) / len(speed) if speed else float("nan")
            out[g] = (len(errs), mape, bias, skipped)
        return out


def select_rows(table: Mapping[str, Any], patterns: Iterable[str] = ()) -> list[Mapping[str, Any]]:
    """Rows whose id or group matches any glob (or substring) pattern; all rows without patterns."""
    patterns = list(patterns)
    if patterns and not any(p.strip() for p in patterns):  # `--rows ""`: a slip, not "every row"
        raise ConfigError(
            "empty row pattern", path="--rows", value="", expected="a glob or text of row ids or groups"
        )
    pats = [p for p in patterns if p.strip()]
    rows = list(table.get("runs") or [])
    if not pats:
        return rows

    def hit(row: Mapping[str, Any]) -> bool:
        if not isinstance(row, Mapping):
            return False
        for p in pats:
            for text in (str(row.get("id", "")), str(row.get("group", ""))):
                if fnmatch.fnmatchcase(text, p) or p in text:
                    return True
        return False

    return [r for r in rows if hit(r)]


def validate(
    table: Mapping[str, Any],
    *,
    label: str = "",
    patterns: Iterable[str] = (),
    progress: Callable[[RowResult], None] | None = None,
    extra_sets: Iterable[str] = (),
    jobs: int = 1,
) -> Report:
    """Map and run every selected row; rows that cannot be expressed are kept with their reason.

    ``jobs > 1`` runs rows in that many worker processes (results keep the table's order).
    """
    report = Report(label)
    extra = tuple(extra_sets)
    slots: list[RowResult | RowPlan] = []
    for row in select_rows(table, patterns):
        rid, group = (
            (str(row.get("id", "?")), str(row.get("group", ""))) if isinstance(row, Mapping) else ("?", "")
        )
        try:
            slots.append(plan_row(row, table))
        except NotRunnable as exc:
            slots.append(RowResult(rid, group, False, reason=str(exc)))
        except RacksimError as exc:
            slots.append(RowResult(rid, group, False, reason=_clean(str(exc))))
    if jobs > 1:
        from concurrent.futures import ProcessPoolExecutor

        from simcore import interrupts

        # workers leave Ctrl-C to this process and die on SIGTERM; an interrupt ends them at once (waiting
        # for the pool would run every queued row first)
        pool = ProcessPoolExecutor(max_workers=jobs, initializer=interrupts.worker_signals)
        try:
            futures = [pool.submit(run_plan, s, extra) if isinstance(s, RowPlan) else s for s in slots]
            for item in futures:
                res = item if isinstance(item, RowResult) else item.result()
                report.rows.append(res)
                if progress is not None:
                    progress(res)
        except BaseException:
            interrupts.stop_workers(pool)
            raise
        pool.shutdown()
        return report
    for item in slots:
        res = run_plan(item, extra) if isinstance(item, RowPlan) else item
        report.rows.append(res)
        if progress is not None:
            progress(res)
    return report


def row_spec_text(plan: RowPlan, workload_path: str, extra_sets: Iterable[str] = ()) -> str:
    """A row's workload as racksim runs it, headed by where it comes from, every assumption made for it and
    the command that reruns it (``validate --specs``; ``extra_sets`` are validate's own ``--set``s)."""
    # e.g. "hbm_capacity=40 GB", then the what-if overrides the row was validated with
    sets = "".join(f" --set {shlex.quote(s)}" for s in (*plan.profile_sets, *extra_sets))
    header = [
        f"# {plan.id} ({plan.group})",
        f"# measured: {plan.measured:g} {plan.metric}",
        *(f"# assumption: {a}" for a in plan.assumptions),
        f"# rerun: python run_sim.py --profile {shlex.quote(plan.profile)} --workload {shlex.quote(workload_path)}"
        f" --racks {plan.racks}{'' if plan.convert == 'serving_tokens' else ' --steps 1'}{sets}",
    ]
    return "\n".join(header) + "\n" + yaml.safe_dump(plan.spec, sort_keys=False)


def write_row_specs(
    table: Mapping[str, Any], patterns: Iterable[str], directory: str | Path, extra_sets: Iterable[str] = ()
) -> list[Path]:
    """Write each selected runnable row's workload YAML to ``directory`` (atomically, one file per row);
    ``extra_sets`` are the profile or workload overrides every row was run with, repeated in each rerun
    line."""
    extra = tuple(extra_sets)
    from simcore.atomic import atomic_path

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for row in select_rows(table, patterns):
        try:
            plan = plan_row(row, table)
        except (NotRunnable, RacksimError):
            continue
        path = out / (re.sub(r"[^A-Za-z0-9._-]+", "_", plan.id) + ".yaml")
        with atomic_path(path) as tmp:
            tmp.write_text(row_spec_text(plan, str(path), extra))
        written.append(path)
    return written


def _fmt(v: float | None, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}g}"


def _pct(v: float | None, *, signed: bool = False) -> str:
    """A percentage as the rows print theirs: one decimal, with its sign when it is a bias (MAPE has none)."""
    if v is None or math.isnan(v):
        return "-"
    return f"{v:+.1f}%" if signed else f"{v:.1f}%"


def format_report(report: Report, *, width: int = 72) -> str:
    """Plain-text error table: runnable rows, summary (MAPE, worst row, per group), then the skipped rows."""
    lines = [f"validation against {report.table}", ""]
    head = f"{'row':<{width}} {'metric':<26} {'measured':>10} {'predicted':>10} {'error':>8}"
    lines += [head, "-" * len(head)]
    for r in report.runnable:
        rid = r.id if len(r.id) <= width else r.id[: width - 1] + "~"
        lines.append(
            f"{rid:<{width}} {r.metric:<26} {_fmt(r.measured):>10} {_fmt(r.predicted):>10} "
            f"{r.error_pct:>+7.1f}%"
        )
    lines.append("")
    mape, worst = report.mape, report.worst
    n = len(report.runnable)
    if mape is not None and worst is not None:
        lines.append(
            f"MAPE over {n} runnable rows: {mape:.1f} %   worst: {worst.id} ({worst.error_pct:+.1f} %)"
        )
    else:
        lines.append("no runnable rows")
    lines += _repeat_lines(report)
    lines += [
        "",
        "per group (bias: mean speed error, + = racksim predicts faster than measured; time metrics flipped)",
        f"{'group':<50} {'rows':>5} {'MAPE':>7} {'bias':>7} {'skipped':>8}",
    ]
    for g, (k, gm, bias, skipped) in report.by_group().items():
        lines.append(f"{g[:50]:<50} {k:>5} {_pct(gm):>7} {_pct(bias, signed=True):>7} {skipped:>8}")
    skipped_rows = [r for r in report.rows if not r.runnable]
    if skipped_rows:
        lines += ["", f"not runnable ({len(skipped_rows)}):"]
        for r in skipped_rows:
            lines.append(f"  {r.id}: {r.reason}")
    return "\n".join(lines)


def _repeat_lines(report: Report, *, shown_above: float = 10.0) -> list[str]:
    """The same configuration measured more than once: how far its measurements disagree, and the MAPE
    floor that disagreement sets (every set whose measurements differ by more than ``shown_above`` %)."""
    sets = report.repeats()
    floor = report.floor_mape
    if not sets or floor is None:
        return []
    spread = [
        (max(r.measured or 0.0 for r in rows) / min(r.measured or 1.0 for r in rows) - 1.0, rows)
        for rows in sets
    ]
    plural = "s" if len(sets) > 1 else ""
    rows_in_sets = sum(len(rows) for rows in sets)
    widest = 100.0 * max(d for d, _ in spread)
    lines = [
        f"same inputs measured more than once: {len(sets)} set{plural} of rows ({rows_in_sets} rows) that racksim "
        f"runs identically, their measurements up to {widest:.0f} % apart",
        f"  MAPE floor {floor:.1f} %: no prediction from the inputs racksim reads can do better on these rows",
    ]
    wide = [(d, rows) for d, rows in spread if 100.0 * d > shown_above]
    if wide:
        lines.append(f"  sets whose measurements differ by more than {shown_above:.0f} %:")
        for d, rows in sorted(wide, key=lambda x: -x[0]):
            low = min(rows, key=lambda r: r.measured or 0.0)
            high = max(rows, key=lambda r: r.measured or 0.0)
            lines.append(
                f"    {100.0 * d:+.0f} % over {len(rows)} rows: {_fmt(low.measured)} {low.metric} ({low.id}) .. "
                f"{_fmt(high.measured)} ({high.id})"
            )
    return lines


def write_report_json(report: Report, path: str | Path) -> None:
    """One object per row (id, runnable, reason, metric, measured, predicted, error_pct, inputs_digest, and
    for training rows step_s / measured_step_s), atomically."""
    from simcore.atomic import write_json

    write_json(path, [r.as_json() for r in report.rows])
