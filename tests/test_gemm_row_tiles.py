"""GEMM row tiles in serving (calibration.gemm.<dtype>.row_tile): a GEMM's token rows fill whole tiles, so a
compute-bound batch pays for the padded rows; the weights' bytes do not change."""

from __future__ import annotations

import itertools
import math

import pytest
import yaml

from simcore.errors import ConfigError
from simcore.kernels.compute import ComputeModel
from simcore.profile import load_profile
from simcore.runner import RunOptions, run
from workloads.inference import (
    expert_tile_rows,
    iteration_work,
    load_inference_spec,
    replica_costs,
    routed_work,
    tile_rows,
)


def _costs(model: str, precision: str = "fp8", **par):
    spec = (
        {"model": model, "precision": precision, "parallelism": par}
        if par
        else {"model": model, "precision": precision}
    )
    return replica_costs(load_inference_spec(spec, file="x"))


def test_tile_rows_rounds_up_to_whole_tiles():
    assert tile_rows(158, 64) == 192
    assert tile_rows(64, 64) == 64 and tile_rows(65, 64) == 128
    assert tile_rows(1, 128) == 128
    assert tile_rows(0, 64) == 0.0
    assert tile_rows(158, 1) == 158  # a one-row tile is no padding
    assert tile_rows(2.5, 1) == 3  # a fractional average row count (balanced experts) still fills a row


def test_profiles_carry_the_tile_of_their_tensor_cores():
    hopper, blackwell = (
        ComputeModel(load_profile("h100-dgx.yaml")),
        ComputeModel(load_profile("b200-dgx.yaml")),
    )
    assert hopper.row_tile("fp8") == 64 and hopper.row_tile("bf16") == 64  # wgmma: 64 rows a warpgroup
    assert blackwell.row_tile("fp8") == 64
    assert blackwell.row_tile("fp4") == 128  # block-scaled UMMA: 128 rows per CTA
    assert ComputeModel(load_profile("gb300-nvl72.yaml")).row_tile("fp4") == 128  # its own fp4 entry keeps it


def test_a_bad_row_tile_names_the_field():
    with pytest.raises(ConfigError) as err:
        load_profile("h100-dgx.yaml", ["calibration.gemm.fp8.row_tile=0"])
    assert "calibration.gemm.fp8.row_tile" in str(err.value)


def test_padded_rows_cost_tensor_time_not_bytes():
    """158 decodes compute as many rows as 192 (a 64-row tile) but read only their own activations."""
    c = _costs("llama3-70b")
    w158, _ = iteration_work(c, [1000] * 158, [], 158, 64)
    w192, _ = iteration_work(c, [1000] * 192, [], 192, 64)
    flat, _ = iteration_work(c, [1000] * 158, [], 158, 1)
    gemm158, gemm192, gemm_flat = w158[0], w192[0], flat[0]
    assert gemm158[0] == gemm192[0] == 192 * c.flops_per_token_layer
    assert gemm_flat[0] == 158 * c.flops_per_token_layer
    assert gemm158[1] == gemm_flat[1] < gemm192[1]  # bytes: the weights and 158 tokens' activations
    head158 = w158[-1]
    assert head158[0] == 192 * c.lm_head_flops_per_token


def test_a_compute_bound_decode_pays_its_padding():
    """Llama 3 70B FP8 on one H200 at 158 decodes: the GEMMs are compute-bound (~20 ms of tensor work
    against ~17 ms of weights), so their time grows by 192/158 with the tile, and a batch one tile wide
    costs the same GEMM time as 158."""
    model = ComputeModel(load_profile("h200-hgx.yaml"))
    c = _costs("llama3-70b")

    def gemm_time(batch: int, tile: int) -> float:
        work, _ = iteration_work(c, [1000] * batch, [], batch, tile)
        return model.time_fused((work[0],), "fp8", 1.0).time_s - model.overhead_s  # the launch is not scaled

    assert gemm_time(158, 64) == pytest.approx(gemm_time(158, 1) * 192 / 158, rel=1e-3)
    assert gemm_time(158, 64) == pytest.approx(gemm_time(192, 64), rel=1e-2)  # only activations differ
    # a memory-bound batch (8 decodes read the weights once) hides its padding
    assert gemm_time(8, 64) == pytest.approx(gemm_time(8, 1), rel=1e-9)


def test_more_sequences_never_take_less_time():
    model = ComputeModel(load_profile("h200-hgx.yaml"))
    c = _costs("llama3-70b")
    times = [
        model.time_fused(iteration_work(c, [1000] * n, [], n, 64)[0], "fp8", 1.0).time_s
        for n in range(1, 300, 7)
    ]
    assert all(a <= b for a, b in itertools.pairwise(times))


def test_each_touched_expert_fills_whole_tiles():
    """Qwen3-30B-A3B decode of 64 tokens: top-8 of 128 experts touches ~126 experts with ~4 rows each;
    each expert's GEMM computes a whole tile. A prefill-sized batch pays the expected residue, half a tile."""
    assert expert_tile_rows(4.06, 128) == 128
    assert expert_tile_rows(4.06, 1) == 4.06  # one-row tiles: the mean, no padding
    assert expert_tile_rows(128, 128) == 128 + 63.5  # about half the experts spill into a second tile
    c = _costs("qwen3-30b-a3b", "fp4")
    tokens = 64
    touched = 128 * -math.expm1(tokens * math.log1p(-8 / 128))
    flat = routed_work(c, tokens, 1)[0]
    tiled = routed_work(c, tokens, 128)[0]
    assert flat[0] == pytest.approx(tokens * c.routed_flops_per_token_layer, rel=1e-12)
    assert tiled[0] == pytest.approx(touched * 128 * c.routed_flops_per_token_layer / 8, rel=1e-12)
    assert tiled[0] > 25 * flat[0]  # ~4 rows of 128 do work
    assert tiled[1] == flat[1]  # the experts' weights are read once either way
    many = 16_384  # 1,024 rows an expert
    assert routed_work(c, many, 128)[0][0] == pytest.approx(
        routed_work(c, many, 1)[0][0] * (1024 + 63.5) / 1024, rel=1e-9
    )


def test_serving_with_the_tile_is_never_faster(tmp_path):
    req = {"count": 200, "input_tokens": 128, "output_tokens": 256}
    data = {"kind": "inference", "model": "llama3-70b", "precision": "fp8", "requests": req,
            "scheduler": {"max_num_seqs": 160}}  # fmt: skip
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(data))

    def tokens_per_s(tile: int) -> float:
        sets = [f"calibration.gemm.fp8.row_tile={tile}"]
        return run(
            RunOptions(profile="h200-hgx.yaml", workload=str(path), write_trace=False, sets=sets)
        ).summary["tokens_per_s"]

    one, sixty_four, one_twenty_eight = tokens_per_s(1), tokens_per_s(64), tokens_per_s(128)
    assert one > sixty_four > one_twenty_eight  # 160 decodes: 192 and 256 rows, compute-bound
