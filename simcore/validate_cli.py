"""``racksim validate``: run the published runs racksim can express and print the error table.

    python run_sim.py validate [--serving] [--table PATH] [--rows PATTERN] [--json PATH] [--jobs N] [--set KEY=VALUE]

Each row of the table (``training_runs.yaml`` format; default: the packaged copy of
``shared/reference/training_runs.yaml``; with ``--serving`` the ``inference_runs.yaml`` copy) is mapped to a
profile and a workload spec by ``workloads.validation`` (``workloads.serving_validation`` for inference
rows), simulated (one training step, or a serving run's request stream), and its prediction converted to the
metric the source printed. Rows it cannot express are listed with the reason. The logic lives in
``workloads``; this module is only the command line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``validate`` on the CLI's subparsers."""
    p = subparsers.add_parser(
        "validate",
        help="simulate the published training (or, --serving, inference) runs and print predicted vs measured",
        description="Run every row of a training-runs table that racksim can express (model, hardware, "
        "parallelism, batch, precision) and print predicted vs measured, the error per row, the mean "
        "absolute percentage error and the worst row. Rows that cannot be expressed are listed with the reason.",
    )
    p.add_argument(
        "--table",
        type=Path,
        default=None,
        help="a table in the training_runs.yaml or inference_runs.yaml format (default: the packaged "
        "shared/reference copy of training_runs.yaml, or with --serving of inference_runs.yaml)",
    )
    p.add_argument(
        "--serving",
        action="store_true",
        help="validate serving: the packaged inference_runs.yaml (TensorRT-LLM offline throughput rows); "
        "with --table, only that table's inference rows",
    )
    p.add_argument(
        "--rows",
        action="append",
        default=[],
        metavar="PATTERN",
        help="only rows whose id or group matches a glob or contains the text (repeatable, or comma-separated)",
    )
    p.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="PATH",
        help="also write one JSON object per row (id, runnable, reason, metric, measured, predicted, error_pct; "
        "training rows also step_s and measured_step_s: racksim's step and the one the measurement implies; "
        "inputs_digest: rows with the same one run identically)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="rows simulated in parallel worker processes (default 1)",
    )
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="profile or workload override applied to every row, for what-if studies (e.g. "
        "calibration.gemm.bf16.max_efficiency=0.7 or kernels.cuda_graphs=true); repeatable",
    )
    p.add_argument(
        "--specs",
        metavar="DIR",
        help="also write each runnable row's workload YAML to DIR, headed by its assumptions and the command "
        "that reruns it (to see how racksim read a row, or to change one thing and run it again)",
    )
    p.add_argument("--quiet", action="store_true", help="no per-row progress lines on stderr")
    return p


def run(args: argparse.Namespace) -> int:
    """Run the validation; 0 when it ran (the errors are results, not failures), 2 on bad input."""
    from simcore.errors import RacksimError
    from workloads.validation import (
        RowResult,
        format_report,
        load_table,
        validate,
        write_report_json,
        write_row_specs,
    )

    if args.jobs < 1:
        raise RacksimError(f"--jobs: got {args.jobs}; expected at least 1")
    patterns = [p.strip() for arg in args.rows for p in arg.split(",") if p.strip()]
    if args.rows and not patterns:  # `--rows ""` is a slip, not "every row"
        raise RacksimError("--rows: empty pattern; expected a glob or text of row ids or groups")
    _check_set_keys(args.sets or [])
    _check_set_values(args.sets or [])
    table, label = load_table(args.table, serving=args.serving)
    if args.serving and args.table is not None:
        from workloads.serving_validation import is_serving_row

        table["runs"] = [r for r in table["runs"] if isinstance(r, dict) and is_serving_row(r)]
        if not table["runs"]:
            raise RacksimError(f"--serving: {label} has no inference rows (rows with a `scenario`)")
        label += " (inference rows)"

    def progress(res: RowResult) -> None:
        if args.quiet:
            return
        if res.runnable and res.error_pct is not None:
            line = f"{res.id}: {res.metric} measured {res.measured:.4g}, predicted {res.predicted:.4g} ({res.error_pct:+.1f} %)"
        else:
            line = f"{res.id}: not runnable ({res.reason})"
        print(f"racksim: {line}", file=sys.stderr, flush=True)

    report = validate(
        table, label=label, patterns=patterns, progress=progress, extra_sets=args.sets, jobs=args.jobs
    )
    if not report.rows:
        raise RacksimError(f"--rows: no row of {label} matches {', '.join(patterns) or 'anything'}")
    print(format_report(report))
    if args.json is not None:
        write_report_json(report, args.json)
    if args.specs is not None:
        written = write_row_specs(table, patterns, args.specs, args.sets)
        print(f"racksim: {len(written)} row workloads written to {args.specs}", file=sys.stderr)
    return 0


def _check_set_keys(sets: list[str]) -> None:
    """A --set whose first key is neither a profile section nor a workload field would make every row "not
    runnable": say so once, before any row runs."""
    import dataclasses
    import difflib

    from simcore.errors import ConfigError
    from simcore.profile import Profile, parse_set_option
    from simcore.runner import WORKLOAD_SET_KEYS

    known = sorted({f.name for f in dataclasses.fields(Profile) if not f.name.startswith("source_")}
                   | set(WORKLOAD_SET_KEYS))  # fmt: skip
    for option in sets:
        keys, _ = parse_set_option(option)
        if keys[0] not in known:
            close = difflib.get_close_matches(keys[0], known, n=1)
            raise ConfigError("unknown field", path=f"--set {option}", value=keys[0],
                              expected="a profile section or workload field: " + ", ".join(known),
                              hint=f"did you mean {close[0]!r}?" if close else None)  # fmt: skip


def _check_set_values(sets: list[str]) -> None:
    """A profile --set that no shipped profile accepts (calibration.hbm_efficiency=2, rack.bogus=1) would
    make every row "not runnable" and the command succeed: stop on it once, before any row runs. A value
    only some profiles refuse is left to the rows it concerns."""
    from simcore.errors import ConfigError
    from simcore.profile import PROFILES_DIR, load_profile
    from simcore.runner import split_sets

    profile_sets, _ = split_sets(sets)
    shipped = sorted(PROFILES_DIR.glob("*.yaml"))
    for option in profile_sets:
        errors = []
        for path in shipped:
            try:
                load_profile(path, [option])
            except ConfigError as exc:
                errors.append(exc)
        if errors and len(errors) == len(shipped):
            raise errors[0]
