"""Bad input found by fuzzing the CLI (December 2026): each is one line on stderr, exit code 2, naming the
argument or field, the value and what was expected. Before, these were tracebacks (a negative seed, an
infinite size or target), silently accepted (an empty part of a --set path ran another field; bf16 end
layers beyond the model; an infinite MoE imbalance; a 1e30 W TDP) or near-endless runs (a peak of
1 GFLOP/s)."""

from __future__ import annotations

from pathlib import Path

import pytest

from simcore.cli import main

SPEC = """\
kind: training
model: llama3-8b
parallelism: {tp: 8, dp: 1}
batch: {global_seqs: 8, micro: 1}
steps: 1
"""
MOE_SPEC = """\
kind: training
model: qwen3-30b-a3b
parallelism: {tp: 1, dp: 8, ep: 8}
batch: {global_seqs: 8, micro: 1}
steps: 1
"""


@pytest.fixture
def specs(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "dense.yaml").write_text(SPEC)
    (tmp_path / "moe.yaml").write_text(MOE_SPEC)
    return {
        "dense": str(tmp_path / "dense.yaml"),
        "moe": str(tmp_path / "moe.yaml"),
        "out": str(tmp_path / "o"),
    }


CASES = [
    (["--seed", "-1"], "argument --seed: got -1; expected a whole number >= 0"),
    (["--seed", "abc"], "argument --seed: got 'abc'"),
    (["--steps", "1.5"], "argument --steps"),
    (
        ["--steps", "100000000"],
        "--steps: too many steps to simulate one by one; got 100000000; expected at most 100,000",
    ),
    (["--workload", "{dense}", "--set", "steps=100001"], "job: {steps: 100001}"),
    (["--workload", "llama3-8b", "--steps", "200000"], "--steps: too many steps to simulate one by one"),
    (
        ["--workload", "{dense}", "--set", "parallelism.pipeline_layout=Et*4|t*4L"],
        "parallelism.pipeline_layout: the layout has 2 chunks",
    ),
    (["--fidelity", "bogus"], "invalid choice: 'bogus'"),
    (
        ["collective", "--profile", "a100-dgx", "--op", "allreduce", "--ranks", "8192", "--racks", "256"],
        "scale_out.tiers[2].span_gpus: the job's 8192 GPUs are more than the top fabric tier connects",
    ),
    (
        ["collective", "--profile", "h100-dgx", "--op", "allreduce", "--ranks", "16", "--sizes", "1e400"],
        "--sizes: size too large; got '1e400'",
    ),
    (
        ["compare", "--profiles", "h100-dgx", "--workload", "{dense}", "--target-tokens-per-s", "inf"],
        "expected a positive, finite rate",
    ),
    (["--workload", "{dense}", "--set", "parallelism..tp=4"], "--set key path has an empty part"),
    (["--workload", "{dense}", "--set", "parallelism.=4"], "--set key path has an empty part"),
    (
        ["--workload", "{moe}", "--set", "model.moe.imbalance=.inf"],
        "model.moe.imbalance: must be a finite number",
    ),
    (
        ["--workload", "{dense}", "--set", "kernels.bf16_first_layers=100"],
        "more bf16 end layers than the model has",
    ),
    (
        ["--workload", "{dense}", "--set", "accelerator.peak_flops.bf16=1e-3 TFLOP/s"],
        "accelerator.peak_flops.bf16: implausibly small",
    ),
    (["--workload", "{dense}", "--set", "accelerator.tdp=1e30 W"], "accelerator.tdp: implausibly large"),
    (
        ["--workload", "llama3-8b", "--set", "kind=inference"],
        "a model preset named on its own is laid out as a",
    ),
]


@pytest.mark.parametrize("argv, says", CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_bad_cli_input_is_one_line_with_exit_code_2(argv, says, specs, capsys):
    argv = [a.format(**specs) for a in argv]
    if argv[0] not in ("collective", "compare"):
        argv = ["--profile", "h100-dgx", *argv, "--no-trace", "--out", specs["out"]]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors leave through sys.exit(2)
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and says in err, err
    assert "Traceback" not in err


def test_an_output_path_that_is_a_directory_names_that_path_not_a_temporary_file(tmp_path, capsys):
    target = tmp_path / "summary.json"
    target.mkdir()
    code = main(["validate", "--rows", "nemo2407-h100-LLAMA2-7B-8gpu", "--json", str(target), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and f"{target}: Is a directory" in err and ".tmp" not in err


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--profile", "{dir}"], "{dir}: is a directory; expected a hardware profile YAML file"),
        (["--profile", "{empty}"], "{empty}: the file is empty; expected a hardware profile"),
        (
            ["--profile", "{comments}"],
            "{comments}: the file holds only comments; expected a hardware profile",
        ),
        (
            ["--profile", "h100-dgx", "--workload", "{empty}"],
            "{empty}: the file is empty; expected a workload spec",
        ),
        (["validate", "--table", "{dir}"], "{dir}: is a directory; expected a training_runs.yaml"),
        (["validate", "--table", "{empty}"], "{empty}: the file is empty; expected a table"),
        (["sweep", "{empty}"], "{empty}: the file is empty"),
    ],
)
def test_directories_and_empty_files_are_called_so(argv, says, tmp_path, capsys):
    """Not "not found" for a directory, nor "name: missing required field" or "got 'NoneType'" for an
    empty file: the file is named and said to be what it is."""
    names = {"dir": tmp_path / "somedir", "empty": tmp_path / "empty.yaml", "comments": tmp_path / "c.yaml"}
    names["dir"].mkdir()
    names["empty"].write_text("")
    names["comments"].write_text("# nothing here yet\n\n")
    argv = [a.format(**names) for a in argv]
    code = main([*argv, "--no-trace", "--out", str(tmp_path / "o")] if argv[0] == "--profile" else argv)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert says.format(**names) in err, err
