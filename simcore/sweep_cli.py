"""``racksim sweep``: the command line of ``simcore.sweep`` (the logic lives there)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``sweep`` on the CLI's subparsers."""
    p = subparsers.add_parser(
        "sweep",
        help="run every combination of profiles, workloads and overrides of a sweep file in parallel",
        description="Design-space sweep: every combination of the sweep file's profiles, workloads and grid "
        "of overrides, one run each, on a local process pool (default) or a Dask cluster (--scheduler). "
        "Writes sweep.json and sweep.csv; points that cannot run are listed with the reason. See docs/sweep.md.",
    )
    p.add_argument("sweep_file", type=Path, metavar="SWEEP.yaml", help="the sweep file")
    p.add_argument("--out", type=Path, default=None, help="output directory (default runs/sweep-<timestamp>)")
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        metavar="N",
        help="local worker processes (default: one per CPU core; 1 runs the points in this process)",
    )
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="run the points on a Dask distributed cluster, e.g. tcp://host:8786 (needs the dask extra; "
        "workers need racksim installed)",
    )
    p.add_argument("--json", action="store_true", help="print sweep.json to stdout instead of the table")
    p.add_argument("--quiet", action="store_true", help="no per-point progress lines on stderr")
    return p


def run(args: argparse.Namespace) -> int:
    """0 when every point ran or could not run for a stated reason; 1 when a point crashed (a bug)."""
    from simcore import interrupts
    from simcore.atomic import output_dir
    from simcore.sweep import format_table, load_sweep, run_sweep

    ctrl_c = interrupts.mark()
    spec = load_sweep(args.sweep_file)
    quiet = args.quiet or args.json
    with output_dir(args.out, "sweep-") as out:  # a sweep that cannot start leaves no empty folder
        earlier = _stamp(out / "sweep.json")
        try:
            result = run_sweep(
                spec,
                out=out,
                jobs=args.jobs,
                scheduler=args.scheduler,
                progress=None if quiet else (lambda msg: print(f"racksim: {msg}", file=sys.stderr)),
                note=lambda msg: print(f"racksim: {msg}", file=sys.stderr),
            )
        except KeyboardInterrupt:
            how = interrupts.reason(ctrl_c)
            if _stamp(out / "sweep.json") == earlier:  # this sweep wrote nothing: any sweep.json is older
                print(f"racksim: sweep {how} before its first point; {out} is as it was", file=sys.stderr)
            else:
                print(f"racksim: {_interrupted(out, how)}", file=sys.stderr)
            return interrupts.exit_code(ctrl_c)
    if args.json:
        print(json.dumps(result.as_json(), indent=2, sort_keys=True))
    else:
        print(format_table(result))
    crashed = [p for p in result.points if p["status"] == "crashed"]
    for p in crashed:
        print(f"racksim: {p['label']} crashed (a racksim bug):\n{p['traceback']}", file=sys.stderr)
    return 1 if crashed else 0


def _stamp(path: Path) -> tuple[int, int] | None:
    """Which file ``path`` is (sweep.json is replaced whole, never edited): None when there is none."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def _interrupted(out: Path, how: str = "interrupted") -> str:
    """What Ctrl-C (or SIGTERM: ``how``) left: the finished points, listed in sweep.json and sweep.csv, and their outputs only."""
    try:
        saved = json.loads((out / "sweep.json").read_text())
        done, total = len(saved["points"]), saved["points_total"]
    except (OSError, ValueError, KeyError):
        return f"sweep {how}; {out} holds no results"
    if not done:
        return (
            f"sweep {how} before any of its {total} point(s) finished; {out}/sweep.json and sweep.csv "
            "list none, and the points left no outputs"
        )
    return (
        f"sweep {how}; {done} of {total} point(s) finished: {out}/sweep.json and sweep.csv list them, "
        "and points/ holds their outputs only (the unfinished points left none)"
    )
