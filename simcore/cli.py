"""Command line: ``python run_sim.py --profile gen2.yaml`` and the subcommands in DESIGN.md.

User mistakes (RacksimError) print one line and exit with code 2; anything else is a racksim bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from simcore import interrupts
from simcore.cli_args import OneLineErrorParser, add_set_option, nonnegative_seed
from simcore.errors import RacksimError

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def _output_dir(text: str) -> Path:
    """--out: a directory; an empty value (an unset shell variable) is a mistake, not the current one."""
    if not text.strip():
        from simcore.errors import ConfigError

        raise ConfigError("empty output directory", path="--out", value=text,
                          expected="a directory, or no --out for runs/<timestamp>")  # fmt: skip
    return Path(text)


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--profile",
        default="gen2.yaml",
        help="hardware profile: a YAML file, or a name in hardware_profiles/ (default gen2.yaml)",
    )
    p.add_argument(
        "--workload",
        default=None,
        help="workload spec YAML, or a model preset (racksim then chooses the parallelism); "
        "default: llama3-70b on one rack",
    )
    p.add_argument(
        "--out", type=_output_dir, default=None, help="output directory (default runs/<timestamp>)"
    )
    p.add_argument(
        "--racks", type=int, default=None, help="racks in the cluster (default: what the job needs)"
    )
    p.add_argument("--steps", type=int, default=None, help="training steps to simulate")
    p.add_argument("--seed", type=nonnegative_seed, default=0, help="random seed (same seed, same results)")
    add_set_option(
        p,
        'override a profile or workload field, e.g. --set cooling.inlet_temp="45 degC" '
        "or --set parallelism.tp=4 (repeatable)",
    )
    p.add_argument(
        "--fidelity",
        choices=("representative", "full"),
        default="representative",
        help="simulate one rank per distinct position (default) or every rank",
    )
    p.add_argument(
        "--contention",
        choices=("analytic", "flow"),
        default="analytic",
        help="share fabric bandwidth analytically (symmetric jobs, default) or as max-min fair flows "
        "re-solved at every transfer start/end",
    )
    p.add_argument(
        "--no-trace", action="store_true", help="skip writing trace.h5 (summary.json is still written)"
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")


def cmd_run(args: argparse.Namespace) -> int:
    from simcore.runner import RunOptions, earlier_outputs, print_table, run

    if args.racks is not None and args.racks < 1:
        raise RacksimError(f"--racks: got {args.racks}; expected a positive number of racks")
    if args.steps is not None and args.steps < 1:
        raise RacksimError(f"--steps: got {args.steps}; expected at least 1")
    opts = RunOptions(
        profile=args.profile,
        workload=args.workload,
        out=args.out,
        racks=args.racks,
        steps=args.steps,
        seed=args.seed,
        sets=list(args.sets),
        fidelity=args.fidelity,
        contention=args.contention,
        write_trace=not args.no_trace,
        write_summary=True,
        progress=None if args.json else (lambda msg: print(f"racksim: {msg}", file=sys.stderr)),
    )
    stale = earlier_outputs(Path(args.out)) if args.out is not None else ""
    result = run(opts)
    if stale:  # after the run: a failed run writes nothing and says only its error
        print(
            f"racksim: note: {args.out} holds {stale} from an earlier run; they are not from this run",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(result.summary, indent=2, sort_keys=True))
    else:
        print_table(result.summary, result.out_dir, wall_s=result.wall_s)
    return 0


SCHEMA_KINDS = ("profile", "workload", "sweep")


def cmd_schema(args: argparse.Namespace) -> int:
    from simcore.profile import profile_docs_markdown, profile_json_schema

    if args.markdown:
        if args.kind != "profile":
            raise RacksimError(
                f"--markdown: the field reference table is the profile's (docs/profiles.md); got --kind "
                f"{args.kind}; expected --kind profile, or no --markdown for the {args.kind} JSON Schema"
            )
        print(profile_docs_markdown())
        return 0
    if args.kind == "workload":
        from workloads.spec_schema import workload_json_schema

        schema = workload_json_schema()
    elif args.kind == "sweep":
        from simcore.sweep_schema import sweep_json_schema

        schema = sweep_json_schema()
    else:
        schema = profile_json_schema()
    print(json.dumps(schema, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="racksim",
        description="Discrete-event simulator of AI cluster workloads on rack-scale hardware.",
        epilog="Run `racksim COMMAND --help` for a subcommand. Without a command, `racksim --profile P` runs a "
        "simulation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p_run = sub.add_parser("run", help="simulate a workload on a hardware profile (the default command)")
    _add_run_arguments(p_run)
    COMMANDS["run"] = cmd_run
    p_schema = sub.add_parser(
        "schema",
        help="print the JSON Schema of hardware profiles, workload specs or sweep files (for editors)",
    )
    p_schema.add_argument(
        "--kind",
        choices=SCHEMA_KINDS,
        default="profile",
        help="which files: hardware profiles (default), workload specs (training and serving) or sweep files",
    )
    p_schema.add_argument(
        "--markdown", action="store_true", help="print the profile field reference table instead"
    )
    COMMANDS["schema"] = cmd_schema
    _add_optional_commands(sub)
    return parser


def _add_optional_commands(sub: argparse._SubParsersAction) -> None:
    """Subcommands that live in their own modules (each registers parser + handler)."""
    try:
        from simcore import collective_cli
    except ImportError:  # pragma: no cover - module not present in a partial checkout
        return
    collective_cli.add_parser(sub)
    COMMANDS["collective"] = collective_cli.run
    from simcore import trace_cli

    COMMANDS.update(trace_cli.add_parsers(sub))
    from simcore import bench, validate_cli

    validate_cli.add_parser(sub)
    COMMANDS["validate"] = validate_cli.run
    bench.add_parser(sub)
    COMMANDS["bench"] = bench.run
    from simcore import sweep_cli

    sweep_cli.add_parser(sub)
    COMMANDS["sweep"] = sweep_cli.run


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    known = {"run", "schema", "collective", "-h", "--help"} | set(COMMANDS)
    if not argv or argv[0] not in known:
        argv = ["run", *argv]
    try:
        args = parser.parse_args(argv)
    except RacksimError as exc:  # an argument's own check (e.g. an empty --out)
        print(f"racksim: error: {exc}", file=sys.stderr)
        return exc.exit_code
    handler = COMMANDS.get(args.command or "run")
    previous_sigint = interrupts.install()
    ctrl_c = interrupts.mark()
    try:
        return handler(args) if handler else 2
    except RacksimError as exc:
        print(f"racksim: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # e.g. `racksim schema | head`
        sys.stderr.close()
        return 0
    except (
        OSError
    ) as exc:  # a path racksim cannot read or write (a directory, a file, missing, no permission)
        if exc.filename is None:
            raise
        print(f"racksim: error: {exc.filename}: {exc.strerror or exc} (check the paths given to --out, -o, --json, "
              "--specs and the input files)", file=sys.stderr)  # fmt: skip
        return 2
    except KeyboardInterrupt:
        return _interrupted(ctrl_c)
    except Exception:
        # A Ctrl-C delivered inside a callback from compiled code surfaces wrapped (numba: SystemError); the
        # run has already discarded its outputs on the way out, so it is the interrupt, not a crash.
        if interrupts.requested_since(ctrl_c):
            return _interrupted(ctrl_c)
        raise
    finally:
        interrupts.restore(previous_sigint)


def _interrupted(since: int) -> int:
    """Ctrl-C or SIGTERM: one line, exit code 128 + the signal's number (130, 143)."""
    print(f"racksim: {interrupts.reason(since)}; no partial outputs were kept", file=sys.stderr)
    return interrupts.exit_code(since)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
