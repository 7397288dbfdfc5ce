"""Measured NCCL bus bandwidths (shared/reference/collectives.yaml) reproduced by the shipped profiles.

Each row names the profile of the measured system, the overrides that describe how the measured machine
differs from the shipped profile (e.g. 4 HDR NICs per node instead of 8), the algorithm when the source
pinned one, and the measured busbw range. Tolerance: the prediction must be within 10 % of the measured
range (the issue's accuracy bar; sources vary by NCCL version and run by 5-10 % themselves). Calibration
is one efficiency per link technology (profiles' scale_up.efficiency, scale_out.efficiency,
in_switch_efficiency), never per row.

``python tests/test_collectives_validation.py`` prints the markdown table kept in docs/validation.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from simcore.collectives import CollectiveModel, busbw_factor
from simcore.profile import load_profile

GIB = 2**30
TOLERANCE = 0.10
# NVL72 in-switch reduction efficiency fitted to the CoreWeave NVL72 curve and shipped in gb200-nvl72.yaml
# (docs/validation.md); NCCL's own nvlsEfficiency for Blackwell (0.74) overshoots it by ~25 % in this model.
NVL72_IN_SWITCH_EFFICIENCY = 0.58


@dataclass(frozen=True)
class Row:
    key: str
    system: str
    profile: str
    ranks: int
    nbytes: float
    measured_GBps: tuple[float, float]
    source: str
    algo: str = "auto"
    sets: tuple[str, ...] = ()
    members: tuple[int, ...] = ()
    per_nic: int = 0  # compare busbw / per_nic (the source quotes GB/s per NIC)
    op: str = "allreduce"
    note: str = ""
    expect_algo: str = field(default="")


_NVL = tuple(i + 72 * k for k in range(3) for i in range(4))
_NVL24 = tuple(i + 72 * k for k in range(3) for i in range(8))

ROWS = (
    Row(
        "h100-ring",
        "8x H100 SXM, NVLink4",
        "h100-dgx.yaml",
        8,
        8 * GIB,
        (370, 370),
        "NVIDIA/nccl-tests#212",
        algo="ring",
    ),
    Row(
        "h100-nvls",
        "8x H100 SXM, NVLink4 (NVLS)",
        "h100-dgx.yaml",
        8,
        8 * GIB,
        (480, 480),
        "NVIDIA/nccl-tests#212",
        expect_algo="nvls",
    ),
    Row(
        "h100-nvls-290",
        "8x H100 SXM (NVLS)",
        "h100-dgx.yaml",
        8,
        8 * GIB,
        (476, 476),
        "NVIDIA/nccl-tests#290",
        expect_algo="nvls",
    ),
    Row("h200", "8x H200 SXM, NVLink4", "h200-hgx.yaml", 8, 8 * GIB, (475, 475), "NVIDIA/nccl-tests#272"),
    Row("h800", "8x H800, NVLink 200 GB/s/dir", "h800-hgx.yaml", 8, 8 * GIB, (215, 215), "NVIDIA/nccl#1374"),
    Row(
        "ndr-2node",
        "2 nodes x 8 H100, NDR 400G (per NIC)",
        "h100-dgx.yaml",
        16,
        8 * GIB,
        (46, 48),
        "NVIDIA/nccl-tests#290",
        algo="ring",
        per_nic=8,
    ),
    Row(
        "a100-3node",
        "3 nodes x 8 A100, 4x HDR per node",
        "a100-dgx.yaml",
        24,
        8 * GIB,
        (84.8, 96),
        "NVIDIA/nccl-tests#119",
        algo="ring",
        sets=("scale_out.nics_per_gpu=0.5",),
        note="ring: what NCCL's tuner picks here (its tree model gives 0.46 vs ring 0.52 busBw)",
    ),
    *(
        Row(
            f"nvl72-{label}",
            f"GB200 NVL72, 72 GPUs, {label}",
            "gb200-nvl72.yaml",
            72,
            size * GIB,
            rng,
            "coreweave/nccl-tests PR #43",
        )
        for label, size, rng in (
            ("512MB", 0.5, (586, 586)),
            ("1GB", 1, (681, 724)),
            ("2GB", 2, (758, 774)),
            ("4GB", 4, (835, 847)),
            ("8GB", 8, (835, 847)),
        )
    ),
    Row(
        "gb200-p2p",
        "GB200 p2p (nvbandwidth)",
        "gb200-nvl72.yaml",
        2,
        8 * GIB,
        (770, 770),
        "Azure/AI-benchmarking-guide#7",
        op="sendrecv",
        note="the calibration source of NVLink5 efficiency",
    ),
    Row(
        "nvl-12-ring",
        "GB200, 3 NVL partitions x 4 GPUs, IB",
        "gb200-nvl72.yaml",
        12,
        16 * GIB,
        (196.7, 196.7),
        "NVIDIA/nccl#1801",
        algo="ring",
        members=_NVL,
    ),
    Row(
        "nvl-12-tree",
        "GB200, 3 NVL partitions x 4 GPUs, IB",
        "gb200-nvl72.yaml",
        12,
        16 * GIB,
        (234.4, 234.4),
        "NVIDIA/nccl#1801",
        algo="tree",
        members=_NVL,
    ),
    Row(
        "nvl-24-ring",
        "GB200, 3 NVL partitions x 8 GPUs, IB",
        "gb200-nvl72.yaml",
        24,
        16 * GIB,
        (393.7, 393.7),
        "NVIDIA/nccl#1801",
        algo="ring",
        members=_NVL24,
    ),
    Row(
        "nvl-24-tree",
        "GB200, 3 NVL partitions x 8 GPUs, IB",
        "gb200-nvl72.yaml",
        24,
        16 * GIB,
        (485.7, 485.7),
        "NVIDIA/nccl#1801",
        algo="tree",
        members=_NVL24,
    ),
    Row(
        "mi300x",
        "8x MI300X, xGMI full mesh",
        "mi300x.yaml",
        8,
        8 * GIB,
        (315.7, 318.0),
        "ROCm blog mi300x-rccl-xgmi (Mar 2025); Azure ND MI300X v5; AMD AAC8",
    ),
    Row(
        "mi325x",
        "8x MI325X, xGMI full mesh",
        "mi325x.yaml",
        8,
        8 * GIB,
        (318.4, 318.4),
        "AMD AAC11 (hisohara/ai-scripts)",
    ),
    Row(
        "mi355x",
        "8x MI355X, xGMI full mesh",
        "mi355x.yaml",
        8,
        8 * GIB,
        (406.8, 407.8),
        "oci-ai-incubations/oci-gpu-quickstarts (MI355X, Pollara)",
    ),
    Row(
        "mi300x-2node",
        "2 nodes x 8 MI300X, 8x RoCE per node",
        "mi300x.yaml",
        16,
        16 * GIB,
        (357.5, 357.5),
        "AMD AAC10 (hisohara/ai-scripts)",
    ),
    Row(
        "mi325x-8node",
        "8 nodes x 8 MI325X, 8x RoCE per node",
        "mi325x.yaml",
        64,
        16 * GIB,
        (350.8, 350.8),
        "AMD AAC11 (hisohara/ai-scripts)",
    ),
    Row(
        "mi355x-2node",
        "2 nodes x 8 MI355X, 8x Pollara 400G",
        "mi355x.yaml",
        16,
        8 * GIB,
        (368.8, 369.0),
        "oci-gpu-quickstarts (Pollara); AMD AAC14",
    ),
)


def predict(row: Row, extra_sets: tuple[str, ...] = ()) -> tuple[float, str, str]:
    """Predicted busbw (GB/s, per NIC when the source quotes per NIC), algorithm and protocol."""
    model = CollectiveModel(load_profile(row.profile, overrides=[*row.sets, *extra_sets]))
    layout = model.cluster.layout(np.asarray(row.members)) if row.members else model.layout_for(row.ranks)
    timing = model.time(row.op, row.nbytes, layout, algo=row.algo)
    busbw = row.nbytes / timing.time_s * busbw_factor(row.op, row.ranks) / 1e9
    return busbw / (row.per_nic or 1), timing.algorithm, timing.protocol


def error(value: float, lo: float, hi: float) -> float:
    """Relative distance to the measured range (0 inside it)."""
    if value < lo:
        return (value - lo) / lo
    if value > hi:
        return (value - hi) / hi
    return 0.0


@pytest.mark.parametrize("row", ROWS, ids=[r.key for r in ROWS])
def test_measured_busbw_within_ten_percent(row: Row) -> None:
    busbw, algo, _ = predict(row)
    lo, hi = row.measured_GBps
    assert abs(error(busbw, lo, hi)) <= TOLERANCE, (
        f"{row.key}: predicted {busbw:.1f} GB/s, measured {lo}-{hi}"
    )
    if row.expect_algo:
        assert algo == row.expect_algo


@pytest.mark.parametrize("row", [r for r in ROWS if r.key.startswith("nvl72-")], ids=lambda r: r.key)
def test_nvl72_curve_with_the_shipped_in_switch_efficiency(row: Row) -> None:
    """The NVL72 size -> busbw curve (latency + bandwidth) with the fitted NVLS efficiency the profile ships."""
    assert load_profile("gb200-nvl72.yaml").scale_up.in_switch_efficiency == NVL72_IN_SWITCH_EFFICIENCY
    busbw, algo, _ = predict(row)
    assert abs(error(busbw, *row.measured_GBps)) <= 0.05  # fits within 2 %; 5 % leaves room for NCCL noise
    assert algo == "nvls"


def test_tree_beats_ring_on_three_nvl_partitions() -> None:
    """The measured tree/ring ratio on 3 nodes (1.19 and 1.23) comes from the per-node load, not a fudge."""
    rows = {r.key: predict(r)[0] for r in ROWS if r.key.startswith("nvl-")}
    assert rows["nvl-12-tree"] / rows["nvl-12-ring"] == pytest.approx(234.4 / 196.7, rel=0.05)
    assert rows["nvl-24-tree"] / rows["nvl-24-ring"] == pytest.approx(485.7 / 393.7, rel=0.05)


def markdown_table() -> str:
    lines = [
        "| system | profile (+ overrides) | op, ranks, size | algo | measured busbw GB/s | predicted | "
        "error | source |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in ROWS:
        busbw, algo, proto = predict(row)
        lo, hi = row.measured_GBps
        measured = f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}"
        prof = row.profile + (" " + " ".join(f"`{s}`" for s in row.sets) if row.sets else "")
        size = f"{row.nbytes / GIB:g} GiB"
        unit = " per NIC" if row.per_nic else ""
        cells = [
            row.system,
            prof,
            f"{row.op}, {row.ranks}, {size}",
            f"{algo}/{proto}" + ("" if row.algo == "auto" else " (pinned)"),
            measured + unit,
            f"{busbw:.1f}",
            f"{error(busbw, lo, hi):+.1%}",
            row.source,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(markdown_table())
