"""``racksim collective``: an nccl-tests style table of one collective's predicted time over message sizes.

    python run_sim.py collective --profile h100-dgx.yaml --op allreduce --ranks 16 --sizes 1M:8G

Ranks sit on GPUs 0..N-1 of a cluster built from the profile (16 ranks on 8-GPU servers = 2 servers).
Sizes follow nccl-tests: ``-b:-e`` doubling, K/M/G = powers of two, S as nccl-tests defines it per
operation; busbw uses the nccl-tests factor (modeling-notes §1.3).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path
from typing import Any

from simcore.atomic import write_json
from simcore.cli_args import add_set_option
from simcore.errors import ConfigError, RacksimError

SIZE_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?(?:e\d+)?)\s*([KMGT]?)(IB|B)?\s*$", re.IGNORECASE)
MAX_ROWS = 64


MAX_SIZE_BYTES = 2.0**50  # one pebibyte: far beyond any single collective


def parse_size(text: str) -> int:
    """``4M`` = ``4MB`` = ``4MiB`` -> 4194304: K/M/G/T are powers of two here, as in nccl-tests' ``-b/-e``
    (profiles read "GB" as 10^9: give a decimal size as a byte count, ``1e9``); plain counts pass through."""
    m = _SIZE.match(text)
    if not m:
        raise ConfigError(
            "malformed size",
            path="--sizes",
            value=text,
            expected="bytes like 1048576 or 1e9, or 1M, 512K, 8G (K/M/G/T: powers of two, as in nccl-tests)",
        )
    value = float(m.group(1)) * SIZE_UNITS[m.group(2).upper()]
    if not math.isfinite(value) or value > MAX_SIZE_BYTES:
        raise ConfigError("size too large", path="--sizes", value=text, expected="at most 1024T (2^50 bytes)")
    if value != int(value):
        raise ConfigError("size is not a whole number of bytes", path="--sizes", value=text)
    return int(value)


def parse_sizes(text: str) -> list[int]:
    """``LOW:HIGH`` doubling from LOW up to HIGH inclusive, or a single size."""
    parts = text.split(":")
    if len(parts) == 1:
        size = parse_size(parts[0])
        if size < 1:  # the same floor as the range form: a 0-byte collective has no bandwidth
            raise ConfigError(
                "a size must be at least 1 byte", path="--sizes", value=text, expected="1 or more, e.g. 1M"
            )
        return [size]
    if len(parts) != 2:
        raise ConfigError("malformed size range", path="--sizes", value=text, expected="LOW:HIGH, e.g. 1M:8G")
    low, high = parse_size(parts[0]), parse_size(parts[1])
    if low < 1 or high < low:
        raise ConfigError(
            "size range must go up from at least 1 byte",
            path="--sizes",
            value=text,
            expected="1 <= LOW <= HIGH, e.g. 1M:8G",
        )
    sizes = [low]
    while sizes[-1] * 2 <= high:
        sizes.append(sizes[-1] * 2)
    if len(sizes) > MAX_ROWS:
        raise ConfigError(
            "size range too wide", path="--sizes", value=text, expected=f"at most {MAX_ROWS} rows"
        )
    return sizes


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``collective`` on the main parser's subparsers."""
    p = subparsers.add_parser(
        "collective",
        help="nccl-tests style table: predicted time, algbw and busbw of one collective",
        description="Predict one collective over a range of message sizes, like nccl-tests' *_perf tools.",
    )
    p.add_argument(
        "--profile", required=True, help="hardware profile (YAML file or name in hardware_profiles/)"
    )
    p.add_argument(
        "--op",
        required=True,
        help="allreduce | reducescatter | allgather | alltoall | alltoallv | broadcast | reduce | "
        "sendrecv | barrier",
    )
    p.add_argument("--ranks", type=int, required=True, help="group size, placed on GPUs 0..N-1")
    p.add_argument(
        "--sizes",
        default="1M:8G",
        help="LOW:HIGH doubling, or one size; K/M/G/T (also KB, GiB, ...) are powers of two as in nccl-tests, "
        "a decimal size is a byte count such as 1e9 (default 1M:8G)",
    )
    p.add_argument(
        "--algo",
        default="auto",
        help="auto | ring | tree | nvls | hier | rhd | pairwise | p2p (default auto: what NCCL would pick, "
        "the fastest of all but rhd with their protocols; rhd, which NCCL lacks, is never auto-picked: "
        "pin --algo rhd as a what-if)",
    )
    p.add_argument("--proto", default="auto", help="auto | LL | LL128 | Simple (default auto)")
    p.add_argument(
        "--imbalance",
        type=float,
        default=1.0,
        help="alltoallv: bytes of the busiest rank over the mean (default 1)",
    )
    p.add_argument(
        "--concurrency",
        type=float,
        default=1.0,
        help="fraction of the GPUs under a fabric block communicating at once (default 1)",
    )
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the rows as JSON")
    p.add_argument("--racks", type=int, default=None, help="racks in the cluster (default: the profile's)")
    add_set_option(
        p,
        'override a profile field, e.g. --set scale_up.latency="2 us" (repeatable)',
    )
    return p


def collective_rows(args: argparse.Namespace) -> tuple[list[dict[str, Any]], str]:
    """The table rows (JSON-ready) and a one-line description of the group."""
    from simcore.cluster import TIER_SCALE_UP, Cluster
    from simcore.collectives import OPS, CollectiveModel, busbw_factor, parse_algo, parse_op, parse_proto
    from simcore.profile import load_profile

    op_name = OPS[parse_op(args.op)]
    parse_algo(args.algo)
    parse_proto(args.proto)
    sizes = [0] if op_name == "barrier" else parse_sizes(args.sizes)
    if args.imbalance != 1.0 and op_name != "alltoallv":
        raise ConfigError(
            f"applies to alltoallv only ({op_name} moves equal bytes on every rank)",
            path="--imbalance",
            value=args.imbalance,
            expected="--op alltoallv, or no --imbalance",
        )
    if args.ranks < 1:
        raise ConfigError(
            "a collective needs at least one rank", path="--ranks", value=args.ranks, expected="ranks >= 1"
        )
    profile = load_profile(args.profile, overrides=list(args.sets))
    cluster = Cluster(profile, racks=args.racks)
    model = CollectiveModel(profile, cluster)
    layout = model.layout_for(args.ranks)
    cluster.require(args.ranks)  # a group larger than the top fabric tier has blocks nothing links
    res = model.times(
        op_name,
        [float(s) for s in sizes],
        layout,
        algo=args.algo,
        proto=args.proto,
        concurrency=args.concurrency,
        imbalance=args.imbalance,
    )
    factor = busbw_factor(op_name, args.ranks)
    rows = []
    for i, n in enumerate(sizes):
        t = float(res.time_s[i])
        # one rank moves nothing in no time: its bandwidth is undefined (n/a, JSON null), not 0
        algbw = n / t if t > 0 else None
        rows.append(
            {
                "op": op_name,
                "ranks": args.ranks,
                "nbytes": n,
                "time_s": t,
                "algbw_Bps": algbw,
                "busbw_Bps": None if algbw is None else algbw * factor,
                "algorithm": str(res.algorithm[i]),
                "protocol": str(res.protocol[i]),
            }
        )
    if layout.top_tier == TIER_SCALE_UP:
        where = "inside one scale-up domain"
    else:
        tier = profile.scale_out.tiers[layout.top_tier].name if profile.scale_out.tiers else "fabric"
        where = f"crosses fabric tier {layout.top_tier} ({tier})"
    desc = (
        f"{op_name} on {args.ranks} ranks of {profile.name}: {layout.domains} scale-up domain(s) x "
        f"{layout.ranks_per_domain}, {where}; algo {args.algo}, proto {args.proto}"
    )
    return rows, desc


def _gbps(bps: float | None) -> str:
    """GB/s with two decimals, or n/a for an undefined bandwidth (a 1-rank group)."""
    return "n/a" if bps is None else f"{bps / 1e9:.2f}"


def format_table(rows: list[dict[str, Any]], desc: str) -> str:
    lines = [
        f"# racksim collective: {desc}",
        "#",
        f"# {'size(B)':>13} {'time(us)':>12} {'algbw(GB/s)':>12} {'busbw(GB/s)':>12}  algorithm  protocol",
    ]
    for r in rows:
        lines.append(
            f"  {r['nbytes']:>13d} {r['time_s'] * 1e6:>12.2f} {_gbps(r['algbw_Bps']):>12} "
            f"{_gbps(r['busbw_Bps']):>12}  {r['algorithm']:<9}  {r['protocol']}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the table (and write ``--json``); user errors print one line and return 2."""
    try:
        rows, desc = collective_rows(args)
        print(format_table(rows, desc))
        if args.json is not None:
            write_json(args.json, rows)
    except RacksimError as exc:
        print(f"racksim: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0
