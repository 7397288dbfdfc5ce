"""workloads/reference/megatron_bridge_26x_runs.yaml: Megatron-Bridge's pre-training rows of NeMo containers
26.02 .. 26.08.01, an out-of-sample table (racksim's calibration stops at 25.11; docs/validation.md). These tests
keep it expressible: every row of a known model in the 26.04 sections maps to a workload, the Llama 3.1 405B
layouts with pp·vp = layers + 2 map to embedding-only and loss-only end chunks, and two dense rows stay within a
stated tolerance."""

from __future__ import annotations

from pathlib import Path

import pytest

from workloads import model as mdl
from workloads.validation import NotRunnable, load_table, map_row, select_rows, validate

TABLE_PATH = Path(__file__).resolve().parents[1] / "workloads" / "reference" / "megatron_bridge_26x_runs.yaml"
TABLE, LABEL = load_table(TABLE_PATH)
# Nemotron 3 Ultra's layer order is not published (its rows are in the 26.08 sections); Nano, Super and 3.5
# Lightning have presets
MODELS_RACKSIM_LACKS = ("Nemotron_3_Ultra", "DeepSeekV4")


def test_rows_of_known_models_all_map():
    """The 26.04 and 26.04.01 sections (91 rows): only models racksim has no preset for are not runnable."""
    rows = select_rows(TABLE, ["*26.04*"])
    assert len(rows) == 91
    mapped = 0
    for row in rows:
        try:
            map_row(row, TABLE)
            mapped += 1
        except NotRunnable as exc:
            assert row["model"]["name"].startswith(MODELS_RACKSIM_LACKS), (row["id"], str(exc))
            assert "is not a preset" in str(exc)
    assert mapped == 91  # every row of those two sections, the 25 Nemotron 3 Nano and Super rows included


def test_llama31_405b_on_pp16_vp8_runs_with_edge_only_end_chunks():
    """Megatron-Bridge's 405B GB200 layout (tp 4, pp 16, vp 8): 128 chunks for 126 layers, so the first chunk
    is the embedding alone and the last the output layer and loss alone (the automatic split, no layout)."""
    [row] = select_rows(TABLE, ["*26.04-*LLAMA3.1_405B-DGX-GB200*NVFP4*"])
    par = map_row(row, TABLE).spec["parallelism"]
    assert (par["tp"], par["pp"], par["vp"]) == (4, 16, 8) and "layers_per_chunk" not in par
    stages = mdl.pipeline_layers(mdl.load_preset("llama3-405b"), 16, 8)
    assert [len(stages[0][0]), len(stages[15][7])] == [0, 0]


@pytest.mark.parametrize(
    "pattern",
    ["*26.04-*LLAMA3_70B-DGX-H100*", "*26.04-*LLAMA3_70B-DGX-GB200-64-FP8*"],
)
def test_dense_rows_within_15_percent(pattern):
    """Published measurements, stated tolerance: within 15 % (December 2026: H100 with TP 4, PP 8, VP 5
    -5.8 %; GB200 with FSDP over 64 GPUs -5.8 %)."""
    report = validate(TABLE, label=LABEL, patterns=[pattern])
    [result] = report.runnable
    assert abs(result.error_pct) < 15, (result.id, result.error_pct)


def test_deepseek_v3_configs_are_told_apart_by_release_and_mapping():
    """Megatron-Bridge's DeepSeek-V3 MXFP8 configs changed in 26.06: GB300 went to micro-batch 1 with HybridEP,
    the 1F1B all-to-all overlap and full-iteration CUDA graphs (GB200 likewise at pp 4 x vp 4 x ep 64); B200's
    pp 8 x vp 2 x ep 32 config (from 26.04.01) overlaps its cross-node DeepEP all-to-alls. Older rows of the
    same GPU keep the plain all-to-all; every row gets the recipe's 16-chunk layout."""

    def plan(pattern: str):
        [row] = select_rows(TABLE, [pattern])
        return map_row(row, TABLE)

    new = plan("mbridge-26.06-*DeepSeekV3-DGX-GB300-256-MXFP8-gbs4096")
    par = new.spec["parallelism"]
    assert par["ep_comm_overlap"] and par["ep_dispatch"] == "deepep" and new.spec["kernels"]["cuda_graphs"]
    assert par["pipeline_layout"] == "Et*4|(t*4|)*14tmL" and new.spec["model"]["mtp_layers"] == 1
    old = plan("mbridge-26.04.01-*DeepSeekV3-DGX-GB300-*").spec
    assert not old["parallelism"].get("ep_comm_overlap") and "cuda_graphs" not in old["kernels"]
    assert old["parallelism"]["pipeline_layout"] == par["pipeline_layout"]
    for pattern in ("mbridge-26.06-*DeepSeekV3-DGX-GB200-*", "mbridge-26.08-*DeepSeekV3-DGX-GB200-*"):
        assert plan(pattern).spec["parallelism"]["ep_comm_overlap"]
    assert not plan("mbridge-26.04-*DeepSeekV3-DGX-GB200-*").spec["parallelism"].get("ep_comm_overlap")
    b200 = plan("mbridge-26.04.01-*DeepSeekV3-DGX-B200-*").spec["parallelism"]
    assert (b200["pp"], b200["vp"], b200["ep"], b200["ep_comm_overlap"]) == (8, 2, 32, True)
    assert b200["recompute_modules"] == ["mla_up_proj", "mlp"]
    assert not plan("mbridge-26.04-*DeepSeekV3-DGX-B200-*").spec["parallelism"].get("ep_comm_overlap")
