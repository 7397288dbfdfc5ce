"""Tests for ``racksim collective``: the nccl-tests style table, --json, and one-line errors (exit code 2)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from simcore import collective_cli
from simcore.errors import ConfigError

H100ISH = [
    "--set",
    "scale_up.domain_size=8",
    "--set",
    "rack.gpus_per_tray=8",
    "--set",
    "rack.trays_per_rack=4",
    "--set",
    "scale_up.bandwidth=900 GB/s",
    "--set",
    "scale_up.efficiency=0.82",
]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="racksim")
    sub = parser.add_subparsers(dest="command")
    collective_cli.add_parser(sub)
    args = parser.parse_args(["collective", *argv])
    code = collective_cli.run(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_table_doubles_sizes_and_reports_busbw(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(
        ["--profile", "gen2.yaml", "--op", "allreduce", "--ranks", "16", "--sizes", "1M:8M", *H100ISH], capsys
    )
    assert code == 0 and not err
    lines = [ln for ln in out.splitlines() if not ln.startswith("#")]
    assert [int(ln.split()[0]) for ln in lines] == [2**20, 2**21, 2**22, 2**23]
    assert "2 scale-up domain(s) x 8" in out and "algbw(GB/s)" in out and "busbw(GB/s)" in out
    for ln in lines:
        size, time_us, algbw, busbw, _algo, proto = ln.split()
        assert float(algbw) == pytest.approx(int(size) / (float(time_us) * 1e-6) / 1e9, rel=1e-3)
        assert float(busbw) == pytest.approx(float(algbw) * 2 * 15 / 16, rel=1e-2)  # nccl-tests AR factor
        assert proto in ("LL", "LL128", "Simple")


def test_json_rows_are_written_atomically(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "out" / "rows.json"
    code, _, _ = _run(
        [
            "--profile",
            "gen2.yaml",
            "--op",
            "allgather",
            "--ranks",
            "8",
            "--sizes",
            "4K:16K",
            "--json",
            str(target),
            "--algo",
            "ring",
        ],
        capsys,
    )
    assert code == 0
    rows = json.loads(target.read_text())
    assert [r["nbytes"] for r in rows] == [4096, 8192, 16384]
    assert set(rows[0]) == {
        "op",
        "ranks",
        "nbytes",
        "time_s",
        "algbw_Bps",
        "busbw_Bps",
        "algorithm",
        "protocol",
    }
    assert rows[0]["op"] == "allgather" and rows[0]["algorithm"] == "ring"
    assert rows[0]["busbw_Bps"] == pytest.approx(rows[0]["algbw_Bps"] * 7 / 8)
    assert list(target.parent.iterdir()) == [target]  # no temporary file left behind


def test_racks_override_lets_a_large_group_fit(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(
        ["--profile", "gen2.yaml", "--op", "allreduce", "--ranks", "200", "--racks", "2", "--sizes", "1M"],
        capsys,
    )
    assert code == 2 and "--racks 3" in err
    code, out, _ = _run(
        ["--profile", "gen2.yaml", "--op", "allreduce", "--ranks", "200", "--racks", "3", "--sizes", "1M"],
        capsys,
    )
    assert code == 0 and "200 ranks" in out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--op", "alreduce", "--ranks", "8"], "did you mean 'allreduce'"),
        (["--op", "allreduce", "--ranks", "8", "--algo", "tre"], "did you mean 'tree'"),
        (["--op", "allreduce", "--ranks", "0"], "at least one rank"),
        (["--op", "allreduce", "--ranks", "100000"], "racks"),
        (
            [
                "--op",
                "allreduce",
                "--ranks",
                "8",
                "--algo",
                "nvls",
                "--set",
                "scale_up.in_switch_reduction=false",
            ],
            "in-switch reduction",
        ),
        (["--op", "allreduce", "--ranks", "8", "--sizes", "1Q:2M"], "malformed size"),
        (["--op", "allreduce", "--ranks", "8", "--sizes", "8M:1M"], "range"),
        (["--op", "allreduce", "--ranks", "8", "--sizes", "1:2:3"], "malformed size range"),
        (["--op", "allreduce", "--ranks", "8", "--sizes", "0"], "--sizes: a size must be at least 1 byte"),
        (["--op", "allreduce", "--ranks", "8", "--sizes", "0:1M"], "--sizes: size range must go up"),
        (["--op", "reducescatter", "--ranks", "8", "--algo", "tree"], "does not implement"),
        (["--op", "allreduce", "--ranks", "8", "--imbalance", "2"], "applies to alltoallv only"),
        (["--op", "alltoallv", "--ranks", "8", "--imbalance", "0.5"], "imbalance must be >= 1"),
        (["--op", "allreduce", "--ranks", "8", "--profile", "nosuch.yaml"], "profile not found"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if "--profile" not in argv:
        argv = ["--profile", "gen2.yaml", *argv]
    code, _out, err = _run(argv, capsys)
    assert code == 2
    assert needle in err
    assert err.count("\n") == 1 and err.startswith("racksim: error:")


def test_one_rank_prints_bandwidth_as_na(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 1-rank group takes 0 us: its bandwidth is undefined, not 0 GB/s."""
    target = tmp_path / "rows.json"
    argv = ["--profile", "gen2.yaml", "--op", "allreduce", "--ranks", "1", "--sizes", "1M:2M"]
    code, out, err = _run([*argv, "--json", str(target)], capsys)
    assert code == 0 and not err
    lines = [ln.split() for ln in out.splitlines() if not ln.startswith("#")]
    assert [ln[1:4] for ln in lines] == [["0.00", "n/a", "n/a"]] * 2
    rows = json.loads(target.read_text())
    assert all(r["algbw_Bps"] is None and r["busbw_Bps"] is None for r in rows)


def test_auto_is_what_nccl_picks_and_rhd_a_what_if(capsys: pytest.CaptureFixture[str]) -> None:
    """auto leaves rhd out even where it is faster; --help must say so rather than promise the fastest."""
    argv = ["--profile", "gen2.yaml", "--op", "allreduce", "--ranks", "64", "--sizes", "64K"]
    _, auto, _ = _run(argv, capsys)
    _, rhd, _ = _run([*argv, "--algo", "rhd"], capsys)
    auto_row, rhd_row = (
        next(ln.split() for ln in o.splitlines() if not ln.startswith("#")) for o in (auto, rhd)
    )
    assert rhd_row[4] == "rhd" and float(rhd_row[1]) < float(auto_row[1])
    assert auto_row[4] != "rhd"
    parser = argparse.ArgumentParser(prog="racksim")
    sub = parser.add_subparsers(dest="command")
    p = collective_cli.add_parser(sub)
    algo_help = next(a.help for a in p._actions if "--algo" in a.option_strings)
    assert "what NCCL would pick" in algo_help and "rhd" in algo_help and "never auto-picked" in algo_help
    assert "auto: fastest)" not in algo_help


def test_size_parsing() -> None:
    assert collective_cli.parse_size("1K") == 1024
    assert collective_cli.parse_size("8g") == 8 * 2**30
    assert collective_cli.parse_size("1536") == 1536
    assert collective_cli.parse_size("4MB") == collective_cli.parse_size("4MiB") == 4 * 2**20  # nccl-tests
    assert collective_cli.parse_size("1e9") == 10**9  # a decimal size: a byte count
    assert collective_cli.parse_sizes("1M:8M") == [2**20, 2**21, 2**22, 2**23]
    assert collective_cli.parse_sizes("3:20") == [3, 6, 12]
    with pytest.raises(ConfigError):
        collective_cli.parse_size("0.5")


def test_wired_into_the_main_cli(capsys: pytest.CaptureFixture[str]) -> None:
    from simcore import cli

    code = cli.main(
        ["collective", "--profile", "gen2.yaml", "--op", "sendrecv", "--ranks", "2", "--sizes", "1G"]
    )
    out, _ = capsys.readouterr()
    assert code == 0 and "p2p" in out
