"""Subcommands that work on outputs: ``analyze``, ``plot``, ``export-perfetto`` and ``compare``.

``simcore.cli`` registers them with ``COMMANDS.update(trace_cli.add_parsers(sub))``. Heavy imports
(matplotlib, the runner) happen inside the handlers so ``racksim --help`` stays fast.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

from simcore.cli_args import add_set_option, nonnegative_seed
from simcore.errors import RacksimError, TraceError

Handler = Callable[[argparse.Namespace], int]


def trace_file(path: Path) -> Path:
    """The trace a command reads: a run's --out directory (what users have at hand) stands for its
    trace.h5; any other directory is said to be one."""
    if not path.is_dir():
        return path
    inside = path / "trace.h5"
    if inside.is_file():
        return inside
    raise TraceError(
        f"{path}: a directory with no trace.h5 (a run writes one into its --out directory unless --no-trace); "
        "expected a trace.h5 or a run directory holding one"
    )


def cmd_analyze(args: argparse.Namespace) -> int:
    from simcore.report import run_analyze

    if args.top < 0:
        raise RacksimError(f"--top: got {args.top}; expected 0 or more")
    run_analyze(trace_file(args.trace), args.json, top=args.top)
    if args.json is not None:
        print(f"\nwrote {args.json}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from simcore.plots import make_plots

    if args.steps < 1:
        raise RacksimError(f"--steps: got {args.steps}; expected at least 1")
    files = make_plots(
        trace_file(args.trace),
        args.out,
        steps=args.steps,
        note=lambda msg: print(f"racksim: {msg}", file=sys.stderr),
    )
    for f in files:
        print(f)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from simcore.export import run_export

    if args.max_events < 1:
        raise RacksimError(f"--max-events: got {args.max_events}; expected a positive number")
    run_export(
        trace_file(args.trace),
        args.output,
        steps=args.steps,
        ranks=args.ranks,
        max_events=args.max_events,
        counters=not args.no_counters,
    )
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from simcore.compare import CompareOptions, main_compare

    if args.racks is not None and args.racks < 1:
        raise RacksimError(f"--racks: got {args.racks}; expected a positive number of racks")
    if args.steps is not None and args.steps < 1:
        raise RacksimError(f"--steps: got {args.steps}; expected at least 1")
    if args.target_tokens_per_s is not None and not 0 < args.target_tokens_per_s < math.inf:
        raise RacksimError(
            f"--target-tokens-per-s: got {args.target_tokens_per_s}; expected a positive, finite rate"
        )
    main_compare(
        CompareOptions(
            profiles=list(args.profiles),
            workload=args.workload,
            out=args.out,
            racks=args.racks,
            steps=args.steps,
            seed=args.seed,
            sets=list(args.sets),
            target_tokens_per_s=args.target_tokens_per_s,
            write_trace=not args.no_trace,
            progress=lambda msg: print(f"racksim: {msg}", file=sys.stderr),
        )
    )
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> dict[str, Handler]:
    """Add the four subcommands to ``sub``; returns ``{command: handler}`` for the CLI dispatcher."""
    p = sub.add_parser(
        "analyze",
        help="per-stage compute / exposed communication / idle, slowest collectives, power and heat of a trace",
        description="Break down where time went in a trace.h5, per pipeline stage and step window.",
    )
    p.add_argument("trace", type=Path, help="a trace.h5 written by a run, or the run's --out directory")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the report as JSON")
    p.add_argument(
        "--top", type=int, default=10, help="how many of the slowest collectives to list (default 10)"
    )

    p = sub.add_parser(
        "plot",
        help="PNG figures of a trace: timeline, step breakdown, power, temperatures, energy",
        description="Write PNG plots of a trace.h5 (power and thermal plots only when the trace has those series).",
    )
    p.add_argument("trace", type=Path, help="a trace.h5 written by a run, or the run's --out directory")
    p.add_argument(
        "--out", type=Path, default=None, metavar="DIR", help="output directory (default: <trace dir>/plots)"
    )
    p.add_argument("--steps", type=int, default=2, help="steps shown in the timeline (default 2)")

    p = sub.add_parser(
        "export-perfetto",
        help="Chrome trace-event JSON of a trace for the Perfetto UI (ui.perfetto.dev)",
        description="Export a trace.h5 as Chrome trace-event JSON: one process per rank class, one thread per "
        "stream, flows for pipeline sends, counters for power and temperature.",
    )
    p.add_argument("trace", type=Path, help="a trace.h5 written by a run, or the run's --out directory")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        metavar="FILE",
        help="output .json or .json.gz (default: next to the trace)",
    )
    p.add_argument(
        "--steps", default=None, metavar="N|A-B|all", help="only the first N steps, or steps A..B (0-based)"
    )
    p.add_argument(
        "--ranks",
        default=None,
        metavar="LIST",
        help="rank classes to keep: indices, ranges or names, e.g. 0,3,5-7",
    )
    p.add_argument(
        "--max-events",
        type=int,
        default=1_000_000,
        help="without --steps, export only as many leading steps as fit this many slices (default 1000000)",
    )
    p.add_argument("--no-counters", action="store_true", help="leave out power / temperature counter tracks")

    p = sub.add_parser(
        "compare",
        help="run one workload on several hardware profiles and print the co-design table",
        description="Run the same workload on each profile and compare step time, throughput, MFU, fleet size and "
        "power for a target throughput, energy per token, rack power, PUE and power swing.",
    )
    p.add_argument(
        "--profiles",
        nargs="+",
        required=True,
        metavar="PROFILE",
        help="hardware profiles, e.g. gen1.yaml gen2.yaml",
    )
    p.add_argument("--workload", default=None, help="workload spec YAML or model preset (as for a run)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="output directory (default runs/compare-<timestamp>)",
    )
    p.add_argument("--racks", type=int, default=None, help="racks per run (default: what the job needs)")
    p.add_argument("--steps", type=int, default=None, help="training steps per run")
    p.add_argument("--seed", type=nonnegative_seed, default=0, help="random seed")
    add_set_option(
        p,
        "override applied to every run",
    )
    p.add_argument(
        "--target-tokens-per-s",
        type=float,
        default=None,
        metavar="X",
        help="throughput to size the fleet for (default: max(1e7, next power of ten above the best run))",
    )
    p.add_argument("--no-trace", action="store_true", help="skip trace.h5 for each run")
    return {"analyze": cmd_analyze, "plot": cmd_plot, "export-perfetto": cmd_export, "compare": cmd_compare}


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m simcore.trace_cli analyze ...``), same exit codes as racksim."""
    parser = argparse.ArgumentParser(prog="racksim")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    handlers = add_parsers(sub)
    args = parser.parse_args(argv)
    from simcore import interrupts

    ctrl_c = interrupts.mark()
    try:
        return handlers[args.command](args)
    except RacksimError as exc:
        print(f"racksim: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"racksim: {interrupts.reason(ctrl_c)}; no partial outputs were kept", file=sys.stderr)
        return interrupts.exit_code(ctrl_c)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
