"""Hardware profiles: one rack generation and the cluster built from it, as frozen dataclasses in SI units.

A profile is YAML (see ``docs/profiles.md``, generated from the field specs below). ``load_profile``
resolves the file, follows ``extends:`` chains (deep-merging mappings, replacing lists), applies
``--set path=value`` overrides, then validates every field into the dataclasses here. Errors name the
file, the field path, the value and what was expected.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import json
import math
import re
import types
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from simcore import yaml_strict
from simcore.errors import ConfigError
from simcore.schema import (
    build,
    choice,
    curve,
    flag,
    json_schema,
    markdown_table,
    number,
    quantity,
    quantity_map,
    required_only,
    section,
    section_list,
    section_map,
    text,
    text_list,
    without_required,
)

DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8", "fp6", "fp4")


def _profiles_dir() -> Path:
    """hardware_profiles/ as installed (a package, so wheels carry it), else beside the source tree."""
    beside = Path(__file__).resolve().parent.parent / "hardware_profiles"
    try:
        import hardware_profiles
    except ImportError:  # an install made before hardware_profiles became a package
        return beside
    # a user's own hardware_profiles/ folder in the working directory imports as a namespace package
    # (no __file__): it is not the shipped one
    file = getattr(hardware_profiles, "__file__", None)
    shipped = Path(file).resolve().parent if file else None
    return shipped if shipped is not None and (shipped / "gen2.yaml").is_file() else beside


PROFILES_DIR = _profiles_dir()

# 80 PLUS Titanium, 230 V internal redundant: 90 % @10 %, 94 % @20 %, 96 % @50 %, 91 % @100 % load
# (modeling-notes 2.3, from the 80 PLUS table).
TITANIUM_CURVE = [[0.1, 0.90], [0.2, 0.94], [0.5, 0.96], [1.0, 0.91]]


# --------------------------------------------------------------------------------------------- accelerator
# Network latencies are microseconds (NVLink ~1 us, a NIC-to-NIC message ~3 us, a switch tier ~1 us); a
# millisecond is already a cross-campus link, so more is a unit slip ("2 s" for "2 us"), as for
# calibration.host_kernel_time: every collective would wait seconds per step.
MAX_LATENCY_S = 1e-3
# Efficiencies divide the time of every op: 1 % is far below any measured one (0.5-0.96), and below it a
# typo (0.0085 for 0.85, 1e-12) stretches a step to years of simulated time that the power model's 50 ms
# control tick would step through forever. A GEMM's half-efficiency dimension past a million does the same.
MIN_EFFICIENCY = 0.01
MAX_HALF_DIM = 1_000_000


@dataclass(frozen=True)
class PowerWeights:
    """How much each activity contributes to dynamic GPU power: A = clamp(sum w_c * u_c, 0, 1).

    Defaults (estimates, modeling-notes 2.1): a GEMM at ~80 % of peak with ~40 % HBM traffic gives A ~ 0.94,
    the power-limited GPU of a training step; memory-bound decode (u_tensor ~0.1, u_hbm ~0.9) A ~ 0.4, the
    ~300 W of 700 W quoted for H100 inference; an NVLink collective (link busy, NCCL kernels on a few SMs
    streaming HBM) A ~ 0.4, rather than idle.
    """

    tensor: float = number("weight of tensor-core (GEMM) activity", 1.0, minimum=0, maximum=1)
    hbm: float = number("weight of HBM bandwidth utilisation", 0.35, minimum=0, maximum=1)
    scale_up: float = number("weight of scale-up link (NVLink) activity", 0.35, minimum=0, maximum=1)
    scale_out: float = number("weight of scale-out NIC activity", 0.1, minimum=0, maximum=1)


@dataclass(frozen=True)
class Accelerator:
    """One GPU/accelerator package: compute, memory, power envelope, clocks and thermal limits."""

    name: str = text("marketing name of the accelerator")
    peak_flops: Mapping[str, float] = quantity_map(
        "flops_rate", "dense (no sparsity) peak tensor throughput per dtype", DTYPES, minimum=1e12
    )
    hbm_capacity: float = quantity(
        "bytes",
        "HBM capacity usable by the tensors racksim counts (weights, gradients, optimizer states, activations, "
        "KV cache); the shipped profiles take the vendor's figure as 10^9 bytes, ~7 % below the physical bytes "
        "(an '80 GB' H100 reports 81,559 MiB = 85.5e9, a '180 GB' B200 183,359 MiB = 192.3e9): that margin "
        "stands for what racksim does not count (CUDA context, NCCL and library workspaces, allocator "
        "fragmentation)",
    )
    hbm_bandwidth: float = quantity("bandwidth", "peak HBM bandwidth", minimum=10e9, example="3.35 TB/s")
    idle_power: float = quantity(
        "power", "board power when idle (clocks up, nothing running)", example="150 W"
    )
    tdp: float = quantity("power", "thermal design power / total graphics power limit", maximum=20e3)
    power_cap: float | None = quantity(
        "power", "configured power limit (default: the TDP)", None, optional=True, maximum=20e3
    )
    power_weights: PowerWeights = section("activity weights of the dynamic power model", {})
    power_exponent: float = number(
        "kappa in P_dyn ~ f^kappa (voltage tracks frequency, so 2-3)", 2.5, minimum=1, maximum=4
    )
    max_clock: float = quantity("frequency", "maximum (boost) SM clock")
    min_clock: float = quantity(
        "frequency", "lowest clock the power/thermal governor goes to", example="0.6 GHz"
    )
    slowdown_temp: float = quantity(
        "temperature", "die temperature where hardware slowdown begins", example="87 degC"
    )
    shutdown_temp: float = quantity("temperature", "die temperature of thermal shutdown", example="92 degC")
    throttle_slope: float = number(
        "clock fraction lost per kelvin above the slowdown temperature", 0.03, minimum=0, maximum=1
    )
    kernel_overhead: float = quantity(
        "time",
        "fixed GPU cost per kernel on top of its roofline time: the gap after the kernel before it, the"
        " ramp-up of its first tiles, the drain of a partly filled last wave. A modeled op is one kernel"
        " unless the workload counts more (a grouped expert GEMM runs one GEMM per local expert, a router"
        " several small kernels), so fine-grained MoE and small models pay it, large GEMMs do not notice",
        "4 us",
        allow_zero=True,
        maximum=10e-3,
    )


# --------------------------------------------------------------------------------------------- scale-up
@dataclass(frozen=True)
class ScaleUp:
    """The scale-up domain (NVLink/NVSwitch, Infinity Fabric): GPUs that talk at memory-like bandwidth."""

    technology: str = text("e.g. NVLink4 + NVSwitch gen3", "")
    domain_size: int = number("GPUs in one scale-up domain", integer=True, minimum=1)
    bandwidth: float = quantity(
        "bandwidth", "scale-up bandwidth per GPU as the vendor quotes it", minimum=1e9
    )
    bandwidth_counts: str = choice(
        "whether `bandwidth` counts both directions (vendor style) or one",
        ("bidirectional", "per_direction"),
        "bidirectional",
    )
    topology: str = choice(
        "switched (NVSwitch) or a direct full mesh (xGMI)", ("switch", "full_mesh"), "switch"
    )
    latency: float = quantity(
        "time", "per-step latency of a transfer across the domain (alpha)", "1 us", maximum=MAX_LATENCY_S
    )
    efficiency: float = number(
        "achievable fraction of the per-direction line rate for large transfers",
        0.82,
        minimum=MIN_EFFICIENCY,
        maximum=1,
    )
    in_switch_reduction: bool = flag("switch can reduce in-network (NVLink SHARP / NVLS)", False)
    in_switch_efficiency: float = number(
        "efficiency of in-switch reduction (NCCL nvlsEfficiency)",
        0.85,
        minimum=MIN_EFFICIENCY,
        maximum=1,
    )

    @property
    def bw_per_direction_Bps(self) -> float:
        """Per-GPU, per-direction line rate in B/s."""
        return self.bandwidth / 2 if self.bandwidth_counts == "bidirectional" else self.bandwidth


# --------------------------------------------------------------------------------------------- scale-out
@dataclass(frozen=True)
class FabricTier:
    """One switching tier of the scale-out fabric (leaf, spine, core)."""

    name: str = text("tier name (leaf, spine, core)")
    span_gpus: int = number("GPUs reachable without going up to the next tier", integer=True, minimum=1)
    oversubscription: float = number(
        "downlink:uplink bandwidth ratio at this tier (1 = non-blocking)", 1.0, minimum=1, maximum=1000
    )
    latency: float = quantity(
        "time", "switch + cable latency added when traffic crosses this tier", "1 us", maximum=MAX_LATENCY_S
    )
    switch_radix: int = number(
        "ports of one switch of this tier, counted at the NIC's line rate (a 64 x 800G switch whose ports "
        "split 2 x 400G for 400G NICs has 128)",
        64,
        integer=True,
        minimum=2,
    )
    switch_power: float = quantity(
        "power",
        "power of one switch of this tier at the wall, fans included, transceivers not (0: not counted)",
        "0 W",
        allow_zero=True,
        example="750 W",
    )
    port_power: float = quantity(
        "power",
        "power of the transceiver in one switch port (0 for copper or when not counted; co-packaged "
        "optics: the optical engine's share)",
        "0 W",
        allow_zero=True,
        example="8 W",
    )


@dataclass(frozen=True)
class ScaleOut:
    """The scale-out network: NICs and a (rail-optimized) fat-tree."""

    technology: str = text("e.g. 8x ConnectX-7 NDR InfiniBand", "")
    nics_per_gpu: float = number(
        "NICs per GPU (0.5 = one NIC shared by two GPUs)", 1.0, minimum=0, exclusive_minimum=True
    )
    nic_bandwidth: float = quantity(
        "bandwidth", "line rate of one NIC, per direction", minimum=1e9 / 8, example="400 Gb/s"
    )
    efficiency: float = number(
        "achievable fraction of NIC line rate (NDR reaches ~0.92-0.96)",
        0.94,
        minimum=MIN_EFFICIENCY,
        maximum=1,
    )
    latency: float = quantity("time", "NIC-to-NIC base latency of one message", "3 us", maximum=MAX_LATENCY_S)
    topology: str = choice(
        "fabric shape, a label: both are modelled by `tiers` (each tier's span_gpus and oversubscription), "
        "with scale-out traffic rail-aligned as NCCL's PXN makes it; give the tiers your topology's spans",
        ("rail_optimized_fat_tree", "fat_tree"),
        "rail_optimized_fat_tree",
    )
    tiers: tuple[FabricTier, ...] = section_list("switch tiers from the leaf up")

    def switch_ports_per_gpu(self) -> tuple[float, ...]:
        """Switch ports each GPU's share of the fat-tree takes at every tier: a tier's downlinks are the
        NIC links (leaf) or the tier below's uplinks, and it has downlinks / oversubscription uplinks, the
        top tier none."""
        ports, down = [], self.nics_per_gpu
        for i, tier in enumerate(self.tiers):
            up = down / tier.oversubscription if i < len(self.tiers) - 1 else 0.0
            ports.append(down + up)
            down = up
        return tuple(ports)

    def fabric_power_per_gpu(self) -> float:
        """W of switches and their transceivers per GPU (the NIC's own optics are in ``rack.nic_power``)."""
        return sum(
            n * (t.switch_power / t.switch_radix + t.port_power)
            for n, t in zip(self.switch_ports_per_gpu(), self.tiers, strict=True)
        )


# --------------------------------------------------------------------------------------------- rack
@dataclass(frozen=True)
class EnergyStorage:
    """Rack energy storage (capacitors / BBU) used to smooth grid-side power."""

    capacity: float = quantity("energy", "usable energy", example="250 kJ")
    max_power: float = quantity("power", "charge/discharge power limit", example="120 kW")
    efficiency: float = number("round-trip efficiency", 0.95, minimum=0, maximum=1, exclusive_minimum=True)
    grid_ramp_limit: float = quantity("power_rate", "fastest grid-side ramp the storage enforces", "20 kW/s")


@dataclass(frozen=True)
class PowerSmoothing:
    """GPU-level power smoothing (floor + ramp limit), as on GB200/GB300."""

    floor_fraction: float = number("minimum GPU power as a fraction of TDP", 0.0, minimum=0, maximum=1)
    ramp_limit: float = quantity("power_rate", "fastest per-GPU power ramp", "5000 W/s")


@dataclass(frozen=True)
class Rack:
    """Trays, switches, host power and the power-delivery chain of one rack."""

    gpus_per_tray: int = number("GPUs per compute tray / server", integer=True, minimum=1)
    trays_per_rack: int = number("compute trays (servers) per rack", integer=True, minimum=1)
    switch_trays: int = number(
        "scale-up switch trays per rack (0 when switches sit in the server)", 0, integer=True, minimum=0
    )
    cpus_per_tray: int = number("host CPUs per tray", 2, integer=True, minimum=0)
    cpu_power: float = quantity(
        "power", "power of one host CPU under training load", "300 W", example="300 W"
    )
    nic_power: float = quantity("power", "power of one scale-out NIC", "25 W", example="30 W")
    switch_tray_power: float = quantity(
        "power",
        "power of one scale-up switch tray (or in-server NVSwitch complex when switch_trays is 0)",
        "800 W",
        example="1100 W",
        allow_zero=True,
    )
    tray_other_power: float = quantity(
        "power", "memory, storage, BMC, DPUs per tray", "300 W", example="300 W"
    )
    fan_power: float = quantity(
        "power",
        "fans per tray at full load (mostly air-cooled parts)",
        "200 W",
        allow_zero=True,
        example="200 W",
    )
    distribution: str = choice("how power reaches the trays", ("ac", "dc_48v", "dc_800v"), "ac")
    bus_voltage: float = quantity("voltage", "voltage of the rack distribution (busbar or AC)", "54 V")
    distribution_resistance: float = quantity(
        "resistance", "effective resistance of the rack distribution path (I^2 R loss)", "0.1 mohm"
    )
    psu_rated_power: float = quantity(
        "power", "installed (non-redundant) power-shelf capacity per rack", example="165 kW"
    )
    psu_efficiency: tuple = curve(
        "PSU efficiency vs load fraction (default 80 PLUS Titanium)", TITANIUM_CURVE
    )
    power_limit: float = quantity("power", "rack power limit; exceeding it caps the GPUs", example="132 kW")
    energy_storage: EnergyStorage | None = section("rack energy storage, if fitted", None, optional=True)
    power_smoothing: PowerSmoothing | None = section("GPU power smoothing, if enabled", None, optional=True)


# --------------------------------------------------------------------------------------------- cooling
@dataclass(frozen=True)
class Facility:
    """Heat rejection outside the rack: chiller, dry cooler / economizer, pumps and fans."""

    heat_rejection: str = choice(
        "chiller only, dry cooler only, or dry cooler with chiller trim",
        ("chiller", "dry_cooler", "hybrid"),
        "hybrid",
    )
    outside_temp: float = quantity(
        "temperature",
        "outdoor dry-bulb temperature (mean)",
        "20 degC",
        minimum=-90,
        maximum=60,
        example="25 degC",
    )  # bounds: Earth's records (-89 / +57 degC); a Kelvin value written as degC is caught
    outside_temp_csv: str = text(
        "optional CSV of outdoor temperature over the day (columns: hour, temp_c; relative to the profile "
        "file); replaces outside_temp and diurnal_amplitude",
        "",
    )
    diurnal_amplitude: float = quantity(
        "temperature_delta", "half peak-to-peak daily swing of outdoor temperature", "0 K", allow_zero=True
    )
    approach: float = quantity(
        "temperature_delta", "dry cooler approach: supply >= outside + approach", "8 K"
    )
    carnot_fraction: float = number(
        "chiller COP as a fraction of Carnot COP", 0.5, minimum=0, maximum=1, exclusive_minimum=True
    )
    pump_power_fraction: float = number(
        "facility + CDU pump power as a fraction of heat removed", 0.02, minimum=0, maximum=0.5
    )
    fan_power_fraction: float = number(
        "dry-cooler / tower fan power as a fraction of heat removed, at rated heat on the design day "
        "(outside = supply - approach); less on cooler days",
        0.03,
        minimum=0,
        maximum=0.5,
    )
    other_overhead_fraction: float = number(
        "UPS, lighting, distribution losses outside the rack as a fraction of IT power",
        0.04,
        minimum=0,
        maximum=0.5,
    )


@dataclass(frozen=True)
class Cooling:
    """How heat leaves the GPU and the rack."""

    type: str = choice("air or direct liquid cooling", ("air", "liquid"))
    inlet_temp: float = quantity(
        "temperature", "coolant supply (liquid) or inlet air (air) temperature", minimum=-40, maximum=100
    )  # hot-water cooling supplies up to ~65 degC; above 100 degC water boils (and a Kelvin value is caught)
    flow_per_kw: float | None = quantity(
        "flow_per_power", "coolant flow per kW of heat (liquid)", None, optional=True
    )
    liquid_fraction: float = number(
        "share of rack heat carried by liquid (rest to air)", 0.0, minimum=0, maximum=1
    )
    r_junction_plate: float = quantity("thermal_resistance", "die to cold plate / heatsink base")
    r_plate_coolant: float = quantity("thermal_resistance", "cold plate / heatsink to coolant or air")
    c_junction: float = quantity("heat_capacity", "heat capacity of die + package")
    c_plate: float = quantity("heat_capacity", "heat capacity of cold plate / heatsink")
    facility: Facility = section("facility heat rejection", {})


# --------------------------------------------------------------------------------------------- others
@dataclass(frozen=True)
class Reliability:
    """Failure and recovery parameters for multi-day jobs."""

    node_failures_per_1000_node_days: float = number(
        "job-interrupting failures per 1000 node-days, a node being rack.gpus_per_tray GPUs (Meta RSC-1: 6.5 "
        "per 8-GPU node, so 3.25 per 4-GPU tray)",
        6.5,
        minimum=0,
    )
    weibull_shape: float = number(
        "shape of time-between-failures (1 = exponential; HPC logs fit 0.5-1.5, Schroeder & Gibson DSN'06;"
        " below 0.2 nearly every draw is ~0 s and the replay cannot advance)",
        1.0,
        minimum=0.2,
    )
    detect_time: float = quantity("time", "time to detect a failure (mean)", "5 min", example="5 min")
    restart_time: float = quantity(
        "time", "reschedule + reload + warm-up after a failure (mean)", "10 min", example="10 min"
    )
    replace_time: float = quantity(
        "time",
        "wait for a replacement node when no hot spare is ready (0: the scheduler always has one, as in"
        " Llama 3's ~90 % effective training time); a used hot spare is ready again after it",
        "0 s",
        allow_zero=True,
        example="4 h",
    )
    checkpoint_bandwidth: float = quantity(
        "bandwidth", "checkpoint write bandwidth per GPU", "2 GB/s", minimum=1e6, example="2 GB/s"
    )
    hot_spares: int = number("spare nodes kept ready per job", 0, integer=True, minimum=0)


@dataclass(frozen=True)
class ClusterShape:
    """How many racks the profile's cluster has and how they group into pods."""

    racks: int = number("racks in the cluster", integer=True, minimum=1)
    racks_per_pod: int = number(
        "racks per pod (a pod is the unit behind one spine layer)", integer=True, minimum=1
    )


@dataclass(frozen=True)
class GemmCalibration:
    """Achievable GEMM efficiency: eff = max_efficiency * d / (d + half_dim), d = smallest GEMM dimension
    (serving: of the weights, its token rows padded to whole tiles of ``row_tile`` instead); a dtype
    without its own entry borrows bf16's, tile included."""

    max_efficiency: float = number(
        "asymptotic fraction of peak for large GEMMs", minimum=MIN_EFFICIENCY, maximum=1
    )
    half_dim: float = number(
        "GEMM dimension at which efficiency is half the maximum", 64, minimum=0, maximum=MAX_HALF_DIM
    )
    row_tile: int = number(
        "rows (tokens) one GEMM tile covers: a GEMM of m rows computes ceil(m / row_tile) tiles' rows, the"
        " padding costing tensor time but no bytes, which serving batches of any size pay (training's"
        " micro-batches are whole tiles); default: the smallest tile of Hopper's wgmma and of Blackwell's"
        " one-CTA UMMA for bf16 / fp8 (64 rows; the AMD profiles take it as an estimate); Blackwell's"
        " block-scaled fp4 UMMA needs 128",
        64,
        integer=True,
        minimum=1,
    )


@dataclass(frozen=True)
class Calibration:
    """Achievable efficiencies fitted to published measurements (each with its source)."""

    gemm: Mapping[str, GemmCalibration] = section_map("GEMM efficiency per dtype", DTYPES)
    attention_efficiency: float = number(
        "flash-attention efficiency relative to the GEMM efficiency",
        0.75,
        minimum=MIN_EFFICIENCY,
        maximum=1,
    )
    attention_half_head_dim: float = number(
        "head dimension at which flash attention reaches half its large-head rate: attention_efficiency "
        "holds at head dim 128 and scales by d/(d + this) / (128/(128 + this)); default: FlashAttention-3 "
        "forward on H100 runs head dims 64 / 128 / 256 at ~0.77 / 1 / 1.16 of the 128 rate",
        48.0,
        minimum=0,
        maximum=MAX_HALF_DIM,
    )
    hbm_efficiency: float = number(
        "achievable fraction of HBM bandwidth", 0.85, minimum=MIN_EFFICIENCY, maximum=1
    )
    comm_overlap_slowdown: float = number(
        "extra compute time while a communication kernel runs beside it on the same GPU (NCCL takes SMs"
        " and HBM bandwidth); default: the 18.9 % average slowdown measured on A100/H100/MI250/MI210,"
        " arXiv:2507.03114",
        0.19,
        minimum=0,
        maximum=1,
    )
    host_kernel_time: float = quantity(
        "time",
        "CPU time the training framework's one host thread per GPU spends issuing one kernel (Python, "
        "autograd, dispatcher, cudaLaunchKernel): a GPU never runs a kernel before its host has issued it, so"
        " small kernels (fine-grained experts, small micro-batches) go host-bound; 0 = no launch cost",
        "0 us",
        allow_zero=True,
        maximum=10e-3,
    )
    step_host_time: float = quantity(
        "time",
        "host time per training iteration outside the kernel stream (data-loader hand-off, the loss and "
        "gradient-norm reads, the optimizer's per-parameter bookkeeping, logging): the host has just waited "
        "for the GPUs at the step boundary, so they idle until it issues the next step's first kernel; "
        "the shipped profiles set 70 ms, fitted to the published runs (docs/validation.md); 0 = none",
        "0 s",
        allow_zero=True,
        maximum=600.0,
        example="70 ms",
    )
    serving_sequence_host_time: float = quantity(
        "time",
        "CPU time a serving engine's host thread spends per sequence in an iteration (scheduling, "
        "input preparation, sampling and output handling in Python); it prepares the next iteration while "
        "the GPU runs this one (TensorRT-LLM's overlap scheduler), so an iteration takes the longer of the "
        "two: thousands of sequences of a small model go host-bound; 0 = no host cost",
        "0 us",
        allow_zero=True,
        maximum=10e-3,
    )
    serving_kernel_host_time: float = quantity(
        "time",
        "CPU time a serving engine's host thread spends issuing one kernel it launches eagerly (Python "
        "module, dispatcher, cudaLaunchKernel): iterations that cannot replay a CUDA graph (prefill) issue "
        "every kernel of every layer; 0 = no launch cost",
        "0 us",
        allow_zero=True,
        maximum=10e-3,
    )
    fitted_to: tuple[str, ...] = text_list("reference rows / sources these values were fitted to", [])


@dataclass(frozen=True)
class Profile:
    """A rack generation and the cluster built from it."""

    name: str = text("short name of the profile")
    description: str = text("what this profile describes", "")
    accelerator: Accelerator = section("the GPU")
    scale_up: ScaleUp = section("scale-up domain")
    scale_out: ScaleOut = section("scale-out network")
    rack: Rack = section("rack, trays and power delivery")
    cooling: Cooling = section("cooling")
    reliability: Reliability = section("failures and recovery", {})
    cluster: ClusterShape = section("cluster size")
    calibration: Calibration = section("fitted efficiencies")
    source_file: str = field(default="", compare=False)
    source_text: str = field(default="", compare=False, repr=False)

    @property
    def gpus_per_rack(self) -> int:
        return self.rack.gpus_per_tray * self.rack.trays_per_rack

    @property
    def total_gpus(self) -> int:
        return self.gpus_per_rack * self.cluster.racks

    def peak_flops(self, dtype: str) -> float:
        """Dense peak FLOP/s for ``dtype``; a clear error when the accelerator lacks it."""
        try:
            return self.accelerator.peak_flops[dtype]
        except KeyError:
            have = ", ".join(self.accelerator.peak_flops)
            raise ConfigError(
                f"{self.accelerator.name} has no {dtype} tensor throughput",
                file=self.source_file,
                path="accelerator.peak_flops",
                value=dtype,
                expected=f"one of {have}",
            ) from None


# --------------------------------------------------------------------------------------------- loading


def resolve_profile_path(name: str | Path, relative_to: Path | None = None) -> Path:
    """Find a profile: as given (or relative to the extending file), in the working dir, then built-ins."""
    if not str(name).strip():
        known = sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
        raise ConfigError(
            "empty profile name", path="--profile", expected=f"a YAML file or one of: {', '.join(known)}"
        )
    candidate = Path(name)
    names = [candidate] if candidate.suffix else [candidate, candidate.with_suffix(".yaml")]
    search: list[Path] = []
    for n in names:
        if relative_to is not None and not n.is_absolute():
            search.append(relative_to / n)
        search.append(n if n.is_absolute() else Path.cwd() / n)
        if len(n.parts) == 1:  # a bare name may be a built-in; a path with directories must exist as given
            search.append(PROFILES_DIR / n)
    for path in search:
        if path.is_file():
            return path
    if candidate.is_dir():  # only once no file matched: a directory beside a built-in name does not hide it
        raise ConfigError(
            "is a directory", file=str(name), expected="a hardware profile YAML file (docs/profiles.md)"
        )
    known = sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
    close = [k for k in known if k.lower() == candidate.stem.lower()] or difflib.get_close_matches(
        candidate.stem, known, n=1
    )
    raise ConfigError(
        "profile not found",
        file=str(name),
        expected=f"a YAML file or one of: {', '.join(known)}",
        hint=f"did you mean {close[0]!r}?" if close else None,
    )


def read_yaml(path: Path, *, expected: str = "YAML content") -> Any:
    """Read YAML with errors that name the file and the line; an empty file (nothing but whitespace and
    comments) is said to be empty rather than failing later as a missing field or a ``None`` mapping.
    ``expected`` says what the file should hold."""
    if path.is_dir():
        raise ConfigError("is a directory", file=str(path), expected=f"a file with {expected}")
    try:
        text_value = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read file: {exc.strerror}", file=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"not UTF-8 text (byte {exc.start}: {exc.object[exc.start : exc.start + 1]!r})",
            file=str(path),
            expected="a YAML file",
        ) from None
    try:
        value = yaml_strict.loads(text_value)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"YAML syntax error at {where}: {problem}", file=str(path)) from exc
    if value is None and yaml.compose(text_value, Loader=yaml.SafeLoader) is None:  # not an explicit null
        what = "the file is empty" if not text_value.strip() else "the file holds only comments"
        raise ConfigError(what, file=str(path), expected=expected)
    return value


def _merge(base: Any, override: Any) -> Any:
    """Deep-merge mappings (override wins); lists and scalars are replaced."""
    if isinstance(base, Mapping) and isinstance(override, Mapping):
        out = dict(base)
        for key, value in override.items():
            out[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    return copy.deepcopy(override)


def _load_raw(path: Path, chain: tuple[Path, ...]) -> tuple[dict[str, Any], list[str]]:
    """The merged raw mapping of ``path`` and everything it extends, plus the texts read."""
    if path in chain:
        cycle = " -> ".join(p.name for p in (*chain, path))
        raise ConfigError(
            "extends cycle",
            file=str(chain[0]),
            path="extends",
            value=cycle,
            expected="a chain of profiles that ends",
        )
    data = read_yaml(path, expected="a hardware profile: accelerator:, scale_up:, ... or extends: NAME")
    if not isinstance(data, Mapping):
        raise ConfigError(
            "a profile must be a mapping of sections",
            file=str(path),
            value=type(data).__name__,
            expected="accelerator:, scale_up:, ... at the top level",
        )
    texts = [f"# {path.name}\n{path.read_text()}"]
    parent_name = data.get("extends")
    data = {k: v for k, v in data.items() if k != "extends"}
    if parent_name is None:
        return data, texts
    if not isinstance(parent_name, str):
        raise ConfigError(
            "must name a profile file",
            file=str(path),
            path="extends",
            value=parent_name,
            expected="a file name like gen2.yaml",
        )
    try:
        parent_path = resolve_profile_path(parent_name, relative_to=path.parent)
    except ConfigError as exc:
        raise ConfigError(
            "extends a profile that was not found",
            file=str(path),
            path="extends",
            value=parent_name,
            expected=exc.expected,
        ) from None
    if parent_path.resolve() == path.resolve():
        # a local gen2.yaml that says `extends: gen2.yaml` means the shipped one, not itself
        shipped = PROFILES_DIR / Path(parent_name).with_suffix(".yaml").name
        if shipped.is_file() and shipped.resolve() != path.resolve():
            parent_path = shipped
    parent, parent_texts = _load_raw(parent_path, (*chain, path))
    return _merge(parent, data), parent_texts + texts


def parse_set_option(option: str) -> tuple[list[str], Any]:
    """Split ``key.path=value`` (value parsed as YAML, so numbers and lists work)."""
    if "=" not in option:
        raise ConfigError(
            "--set needs key.path=value", value=option, expected='e.g. cooling.inlet_temp="45 degC"'
        )
    key, _, raw = option.partition("=")
    keys = [k.strip() for k in key.strip().split(".")]
    if not any(keys):
        raise ConfigError("--set needs a key path", value=option, expected="key.path=value")
    if not all(keys):  # "parallelism..tp" or "parallelism." is a typo, not a path
        raise ConfigError(
            "--set key path has an empty part",
            value=option,
            expected="names joined by single dots, e.g. parallelism.tp=4",
        )
    try:
        value = yaml_strict.loads(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return keys, value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``--set`` options to a raw mapping (creating intermediate mappings)."""
    data = copy.deepcopy(data)
    for option in overrides:
        keys, value = parse_set_option(option)
        indexed = next((i for i, k in enumerate(keys) if re.fullmatch(r"[^\[]+\[\d*\]", k)), None)
        if indexed is not None:  # tiers[0].latency, as an error message would write the field
            listed = ".".join([*keys[:indexed], keys[indexed].partition("[")[0]])
            raise ConfigError(
                "--set cannot index a list",
                file=_set_label(option),
                path=listed,
                expected=f"the whole list: --set '{listed}=[...]' (docs/profiles.md)",
            )
        node = data
        for i, key in enumerate(keys[:-1]):
            nxt = node.get(key)
            if nxt is None:
                nxt = node[key] = {}
            if isinstance(nxt, list):  # tiers.0.latency: a list is replaced whole, never indexed
                raise ConfigError(
                    f"--set cannot reach into a list ({len(nxt)} entries)",
                    file=_set_label(option),
                    path=".".join(keys[: i + 1]),
                    expected=f"the whole list: --set '{'.'.join(keys[: i + 1])}=[...]' (docs/profiles.md)",
                )
            if not isinstance(nxt, dict):
                raise ConfigError(
                    "--set goes through a field that is not a section",
                    file=_set_label(option),
                    path=".".join(keys[: i + 1]),
                    value=nxt,
                    expected="a mapping",
                )
            node = nxt
        node[keys[-1]] = value
    return data


def load_profile(name: str | Path, overrides: Iterable[str] = ()) -> Profile:
    """Load, merge, override and validate a hardware profile."""
    path = resolve_profile_path(name)
    raw, texts = _load_raw(path, ())
    overrides = list(overrides)
    raw = apply_overrides(raw, overrides)
    with blaming_overrides(overrides):  # cross-field rules list the fields they compare (ConfigError.reads)
        profile = build(Profile, raw, file=str(path), path="")
        _check_consistency(profile, str(path))
    source_text = "\n".join(texts)
    if overrides:
        source_text += "\n# --set\n" + "\n".join(f"# {o}" for o in overrides)
    return _with_source(profile, str(path), source_text)


@contextmanager
def blaming_overrides(
    overrides: list[str], *, cross_field: bool = False, file: str | None = None
) -> Iterator[None]:
    """Re-raise a ConfigError about a field a ``--set`` option wrote as that option's error.

    ``cross_field``: the checks inside compare fields with each other, so an error none of the options
    wrote is still said to come from the file *with* them (they may have made it inconsistent). ``file``:
    only errors about that file (the profile's, not the workload's) are blamed."""
    try:
        yield
    except ConfigError as err:
        if file is not None and err.file != file:
            raise
        raise blame_override(err, overrides, cross_field=cross_field) from None


def _set_label(option: str) -> str:
    """``--set KEY=VALUE`` as one line of an error message."""
    return "--set " + option.replace("\r", "\\r").replace("\n", "\\n")


def blame_override(err: ConfigError, overrides: list[str], *, cross_field: bool = False) -> ConfigError:
    """Name the ``--set`` option that put a rejected value there, not only the file it was set over: the
    error's field (or one a cross-field rule compared it with, ``err.reads``) is the option's key, inside it
    (``a.b.c``, a list element ``a.b[1]``) or a section the option reached into (``--set a.b.c=1`` where
    ``a.b`` is rejected). With ``cross_field`` and no such option, every option is named beside the file."""
    if not err.path or (err.file or "").startswith("--set "):
        return err

    def wrote(key: str, path: str) -> bool:
        return path == key or path.startswith((key + ".", key + "[")) or key.startswith(path + ".")

    for option in reversed(overrides):  # the last one wins, as in apply_overrides
        key = ".".join(parse_set_option(option)[0])
        if any(wrote(key, path) for path in (err.path, *err.reads)):
            over = f" (over {err.file})" if err.file else ""
            return _relabelled(err, f"{_set_label(option)}{over}")
    if cross_field and overrides:
        sets = ", ".join(_set_label(o) for o in overrides)
        return _relabelled(err, f"{err.file} with {sets}" if err.file else sets)
    return err


def _relabelled(err: ConfigError, file: str) -> ConfigError:
    return ConfigError(
        err.message,
        file=file,
        path=err.path,
        value=err.value,
        expected=err.expected,
        hint=err.hint,
        reads=err.reads,
    )


def profile_from_mapping(data: Mapping[str, Any], file: str = "<mapping>") -> Profile:
    """Validate an in-memory mapping (tests, sweeps) exactly as a file would be."""
    profile = build(Profile, dict(data), file=file, path="")
    _check_consistency(profile, file)
    return _with_source(profile, file, yaml.safe_dump(dict(data), sort_keys=False))


def _with_source(profile: Profile, file: str, source_text: str) -> Profile:
    values = {f: getattr(profile, f) for f in profile.__dataclass_fields__}
    values.update(source_file=file, source_text=source_text)
    return Profile(**values)


def _check_consistency(p: Profile, file: str) -> None:
    """Cross-field rules that a single field cannot express."""
    csv_name = p.cooling.facility.outside_temp_csv
    if csv_name:
        load_temperature_csv(resolve_beside(csv_name, file), file=file)
    acc = p.accelerator
    if acc.idle_power >= acc.tdp:
        raise ConfigError(
            "idle power must be below the TDP",
            file=file,
            path="accelerator.idle_power",
            value=f"{acc.idle_power:g} W",
            expected=f"less than tdp ({acc.tdp:g} W)",
            reads=("accelerator.tdp",),
        )
    if acc.power_cap is not None and acc.power_cap <= acc.idle_power:
        raise ConfigError(
            "power cap is at or below idle power",
            file=file,
            path="accelerator.power_cap",
            value=f"{acc.power_cap:g} W",
            expected=f"more than idle_power ({acc.idle_power:g} W)",
            reads=("accelerator.idle_power",),
        )
    # The power model (simcore.kernels.power.gpu_power) draws idle + (tdp - idle)·A·f^power_exponent and
    # holds a cap only by lowering the clock f, down to min_clock: a busy GPU (A = 1) draws this much there.
    floor_w = (
        acc.idle_power + (acc.tdp - acc.idle_power) * (acc.min_clock / acc.max_clock) ** acc.power_exponent
    )
    if (
        acc.power_cap is not None
        and acc.idle_power < acc.power_cap < floor_w
        and acc.min_clock <= acc.max_clock
    ):
        raise ConfigError(
            f"a busy GPU draws {floor_w:.4g} W at min_clock ({acc.min_clock / 1e9:g} GHz), the lowest clock "
            "the cap can set, so it would run above this cap",
            file=file,
            path="accelerator.power_cap",
            value=f"{acc.power_cap:g} W",
            expected=f"at least {math.ceil(floor_w * 10) / 10:g} W (idle_power + (tdp - idle_power) x "
            "(min_clock / max_clock)^power_exponent), or a lower accelerator.min_clock",
            reads=(
                "accelerator.idle_power",
                "accelerator.tdp",
                "accelerator.min_clock",
                "accelerator.max_clock",
                "accelerator.power_exponent",
            ),
        )
    if acc.min_clock > acc.max_clock:
        raise ConfigError(
            "min_clock above max_clock",
            file=file,
            path="accelerator.min_clock",
            value=f"{acc.min_clock / 1e9:g} GHz",
            expected=f"at most {acc.max_clock / 1e9:g} GHz",
            reads=("accelerator.max_clock",),
        )
    if acc.slowdown_temp >= acc.shutdown_temp:
        raise ConfigError(
            "slowdown temperature must be below shutdown",
            file=file,
            path="accelerator.slowdown_temp",
            value=f"{acc.slowdown_temp:g} degC",
            expected=f"below {acc.shutdown_temp:g} degC",
            reads=("accelerator.shutdown_temp",),
        )
    if p.cooling.inlet_temp >= acc.slowdown_temp:
        raise ConfigError(
            "inlet temperature is at or above the GPU slowdown temperature",
            file=file,
            path="cooling.inlet_temp",
            value=f"{p.cooling.inlet_temp:g} degC",
            expected=f"below {acc.slowdown_temp:g} degC",
            reads=("accelerator.slowdown_temp",),
        )
    if p.cooling.type == "liquid" and p.cooling.flow_per_kw is None:
        raise ConfigError(
            "liquid cooling needs a coolant flow",
            file=file,
            path="cooling.flow_per_kw",
            expected='a flow like "1.5 L/min/kW"',
            reads=("cooling.type",),
        )
    rack = p.rack
    loss_share = (
        rack.power_limit * rack.distribution_resistance / rack.bus_voltage**2
    )  # I^2 R / P at the limit
    if loss_share > 0.2:  # real racks lose well under 1 %: a unit slip in the voltage or the resistance
        raise ConfigError(
            (
                f"the distribution would burn {100 * loss_share:.3g} % of the rack's power at its limit"
                if loss_share < 1
                else "the distribution's loss would exceed the rack's power at its limit"
            )
            + f" (I^2 R with I = {rack.power_limit / rack.bus_voltage:.3g} A)",
            file=file,
            path="rack.bus_voltage",
            value=f"{rack.bus_voltage:g} V with {rack.distribution_resistance * 1e3:g} mohm at "
            f"{rack.power_limit / 1e3:g} kW",
            expected="a bus voltage and resistance that lose under 20 % (e.g. 54 V and 0.1 mohm)",
            reads=("rack.power_limit", "rack.distribution_resistance"),
        )
    if p.scale_up.domain_size % p.rack.gpus_per_tray and p.rack.gpus_per_tray % p.scale_up.domain_size:
        raise ConfigError(
            "scale-up domain and tray size do not nest",
            file=file,
            path="scale_up.domain_size",
            value=p.scale_up.domain_size,
            expected=f"a multiple or divisor of rack.gpus_per_tray ({p.rack.gpus_per_tray})",
            reads=("rack.gpus_per_tray",),
        )
    spans = [t.span_gpus for t in p.scale_out.tiers]
    if any(b <= a for a, b in itertools.pairwise(spans)):
        raise ConfigError(
            "tier spans must grow from leaf to core",
            file=file,
            path="scale_out.tiers",
            value=spans,
            expected="strictly increasing span_gpus",
        )
    for i, span in enumerate(spans):
        if span % p.scale_up.domain_size:
            raise ConfigError(
                "a fabric tier would split a scale-up domain",
                file=file,
                path=f"scale_out.tiers[{i}].span_gpus",
                value=span,
                expected=f"a multiple of scale_up.domain_size ({p.scale_up.domain_size})",
                reads=("scale_up.domain_size",),
            )
    for dtype in p.calibration.gemm:
        if dtype not in acc.peak_flops:
            raise ConfigError(
                "GEMM calibration for a dtype the accelerator has no peak for",
                file=file,
                path=f"calibration.gemm.{dtype}",
                value=dtype,
                expected=f"one of the accelerator.peak_flops keys ({', '.join(acc.peak_flops)})",
                reads=("accelerator.peak_flops",),
            )
    if p.cluster.racks_per_pod > p.cluster.racks and p.cluster.racks > 1:
        pass  # a cluster smaller than one pod is fine: it is a partial pod
    if "bf16" not in acc.peak_flops and "fp16" not in acc.peak_flops:
        raise ConfigError(
            "accelerator needs bf16 or fp16 throughput",
            file=file,
            path="accelerator.peak_flops",
            expected="a bf16 entry",
        )


def resolve_beside(name: str, profile_file: str) -> Path:
    """A data file named in a profile: relative to the profile's folder unless absolute."""
    path = Path(name)
    return path if path.is_absolute() else Path(profile_file).resolve().parent / path


def load_temperature_csv(path: Path, *, file: str | None = None) -> tuple[Any, Any]:
    """(hours, temps_c) from a CSV with header ``hour,temp_c``; hours in [0, 24), increasing."""
    import numpy as np

    where = "cooling.facility.outside_temp_csv"
    try:
        data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read temperature CSV {path}: {exc}",
            file=file,
            path=where,
            expected="a CSV file with a header line and columns hour,temp_c",
        ) from None
    if data.shape[1] != 2 or len(data) < 2:
        raise ConfigError(
            "temperature CSV needs two columns and at least two rows",
            file=file,
            path=where,
            value=str(path),
            expected="hour,temp_c rows",
        )
    hours, temps = data[:, 0], data[:, 1]
    if np.any(np.diff(hours) <= 0) or hours[0] < 0 or hours[-1] >= 24:
        raise ConfigError(
            "temperature CSV hours must increase within [0, 24)",
            file=file,
            path=where,
            value=str(path),
            expected="hour values like 0, 1, ... 23",
        )
    return hours, temps


# --------------------------------------------------------------------------------------------- schema out


def profile_json_schema() -> dict[str, Any]:
    """JSON Schema for hardware profile YAML (``racksim schema > profile.schema.json``).

    A file with ``extends:`` only overrides what it names, so required fields apply only to files without
    it: the top-level ``properties`` carry no ``required`` lists, and an ``if``/``else`` adds those lists
    (and only those: a second copy of the fields would report every mistake twice) when ``extends`` is
    absent.
    """
    strict = json_schema(Profile, title="racksim hardware profile")
    schema = without_required(strict)
    schema["properties"]["extends"] = {
        "type": "string",
        "description": "profile this one overrides (a file or a built-in name)",
    }
    schema["if"] = {"required": ["extends"]}
    schema["else"] = required_only(strict)  # the field checks are in `properties` above, once
    return schema


def profile_docs_markdown() -> str:
    """The field reference in docs/profiles.md, generated from the dataclasses."""
    header = ["| field | type [SI unit] | default | meaning |", "| --- | --- | --- | --- |"]
    return "\n".join(header + markdown_table(Profile))


def profile_summary(p: Profile) -> dict[str, Any]:
    """A small JSON-able digest of a profile for summaries and comparison tables."""
    return {
        "name": p.name,
        "accelerator": p.accelerator.name,
        "gpus_per_rack": p.gpus_per_rack,
        "gpus_per_tray": p.rack.gpus_per_tray,
        "scale_up_domain": p.scale_up.domain_size,
        "scale_up_bw_per_direction_Bps": p.scale_up.bw_per_direction_Bps,
        "nic_bw_per_gpu_Bps": p.scale_out.nic_bandwidth * p.scale_out.nics_per_gpu,
        "cooling": p.cooling.type,
        "inlet_temp_c": p.cooling.inlet_temp,
    }


def to_json(obj: Any) -> Any:
    """Dataclass/mappingproxy tree to plain JSON types (for trace metadata)."""
    if hasattr(obj, "__dataclass_fields__"):
        return {k: to_json(getattr(obj, k)) for k in obj.__dataclass_fields__ if k != "source_text"}
    if isinstance(obj, (Mapping, types.MappingProxyType)):
        return {k: to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    return obj


def dumps(p: Profile) -> str:
    return json.dumps(to_json(p), indent=1, sort_keys=True)
