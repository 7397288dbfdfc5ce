"""Validation of serving against published inference runs (``validate --serving``): row mapping, the rows
it cannot express, known answers within a stated tolerance, the CLI and a mixed table."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

import pytest

from simcore import validate_cli
from workloads.serving_validation import REQUESTS, map_serving_row
from workloads.validation import NotRunnable, load_table, run_plan, select_rows, validate

TABLE, LABEL = load_table(serving=True)
SHARED = Path(__file__).resolve().parents[2] / "shared" / "reference" / "inference_runs.yaml"


def _row(pattern: str) -> dict:
    rows = select_rows(TABLE, [pattern])
    assert len(rows) == 1, [r["id"] for r in rows]
    return rows[0]


def test_packaged_table_is_the_shared_reference():
    assert LABEL.endswith("reference/inference_runs.yaml") and len(TABLE["runs"]) == 210
    if SHARED.is_file():  # beside a checkout with ../shared (CI): byte for byte the same file
        packaged = Path(__file__).resolve().parents[1] / "workloads" / "reference" / "inference_runs.yaml"
        assert packaged.read_bytes() == SHARED.read_bytes()


def test_a_tensorrt_llm_row_maps_its_model_system_tp_precision_and_lengths():
    plan = map_serving_row(_row("trtllm-v1.0-Llama_3.3_70B-H100-tp2-1000-1000"), TABLE)
    spec = plan.spec
    assert (plan.profile, plan.racks, plan.convert) == ("h100-dgx.yaml", 1, "serving_tokens")
    assert (spec["kind"], spec["model"], spec["parallelism"]["tp"], spec["precision"]) == (
        "inference",
        "llama3-70b",
        2,
        "fp8",
    )
    assert spec["kv_cache"]["precision"] == "fp8" and spec["requests"] == {
        "count": REQUESTS,
        "input_tokens": 1000,
        "output_tokens": 1000,
    }
    assert "rate" not in spec["requests"]  # offline: every request at t = 0
    fp4 = map_serving_row(_row("trtllm-v1.0-Qwen3-235B-A22B-B200-tp8-128-128"), TABLE)
    assert (fp4.spec["model"], fp4.spec["precision"], fp4.spec["kv_cache"]["precision"]) == (
        "qwen3-235b-a22b",
        "fp4",
        "fp8",
    )
    assert fp4.profile == "b200-dgx.yaml" and fp4.measured == 63362


def test_every_tensorrt_llm_row_maps_and_every_mlperf_row_says_why_not():
    mapped, skipped = 0, 0
    for row in TABLE["runs"]:
        if "scenario" not in row:
            continue  # the simulator-fidelity note
        try:
            map_serving_row(row, TABLE)
            mapped += 1
        except NotRunnable as exc:
            assert row["group"].startswith("MLPerf"), row["id"]
            reason = str(exc)
            if "offline" in row["scenario"].lower():
                assert reason.startswith("request lengths not given")
            else:  # Server / Interactive: latency-bounded, not an offline throughput
                assert reason.startswith("scenario ") and "only offline" in reason
            skipped += 1
    assert (mapped, skipped) == (127, 82)


@pytest.mark.parametrize(
    "row,tolerance",
    [
        # Prefill-heavy and decode-heavy rows of the 8B on one H100 (FP8): compute- and HBM-bound ends.
        ("trtllm-v1.0-Llama_3.1_8B-H100-tp1-2048-128", 0.10),
        ("trtllm-v1.0-Llama_3.1_8B-H100-tp1-1000-1000", 0.10),
    ],
)
def test_known_rows_within_tolerance(row, tolerance):
    res = run_plan(map_serving_row(_row(row), TABLE))
    assert res.runnable and abs(res.error_pct) < 100 * tolerance, res


def test_cli_serving_prints_the_table_writes_json_and_specs_rerun(tmp_path, capsys):
    from simcore.cli import main

    parser = argparse.ArgumentParser()
    validate_cli.add_parser(parser.add_subparsers(dest="command"))
    rows = "trtllm-v1.0-Llama_3.1_8B-H100-tp1-5000-500,*Dell-XE9680_H100_SXM_80GBx8_TRT-llama2-70b-99-Offline"
    out = tmp_path / "v.json"
    args = parser.parse_args(
        [
            "validate",
            "--serving",
            "--rows",
            rows,
            "--json",
            str(out),
            "--specs",
            str(tmp_path / "s"),
            "--quiet",
        ]
    )
    assert validate_cli.run(args) == 0
    text = capsys.readouterr().out
    assert "MAPE over 1 runnable rows" in text and "request lengths not given" in text
    result = json.loads(out.read_text())
    assert [r["runnable"] for r in result] == [False, True] or [r["runnable"] for r in result] == [
        True,
        False,
    ]
    [validated] = [r for r in result if r["runnable"]]
    assert set(validated) >= {"id", "runnable", "reason", "metric", "measured", "predicted", "error_pct"}
    # The written spec reruns to the same prediction (a serving run: no --steps).
    [spec] = sorted((tmp_path / "s").iterdir())
    rerun = next(line for line in spec.read_text().splitlines() if line.startswith("# rerun: "))
    assert "--steps" not in rerun
    assert (
        main([*shlex.split(rerun.removeprefix("# rerun: python run_sim.py ")), "--out", str(tmp_path / "o")])
        == 0
    )
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["tokens_per_s"] == pytest.approx(validated["predicted"], rel=1e-12)
    capsys.readouterr()


def test_a_table_may_mix_training_and_serving_rows():
    training, _ = load_table()
    mixed = {
        "runs": [
            _row("trtllm-v1.0-Llama_3.1_8B-H100-tp1-2048-128"),
            next(r for r in training["runs"] if r["id"] == "korthikanti-22B-full_recompute"),
        ],
        "hardware_platforms": training["hardware_platforms"],
        "model_catalog": training["model_catalog"],
    }
    report = validate(mixed)
    assert [r.metric for r in report.runnable] == ["output tokens/s (engine)", "iteration s"]
