"""GEMM row tiles in serving (calibration.gemm.<dtype>.row_tile): a GEMM's token rows fill whole tiles, so a
compute-bound batch pays for the padded rows; the weights' bytes do not change."""

from __future__ import annotations

import itertools

import numpy as np
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


BLACKWELL = ("b200-dgx", "b300-dgx", "gb200-nvl72", "gb300-nvl72", "gen2", "gen3")


def test_profiles_carry_the_tile_of_their_tensor_cores():
    hopper = ComputeModel(load_profile("h100-dgx.yaml"))
    assert hopper.row_tile("fp8") == 64 and hopper.row_tile("bf16") == 64  # wgmma: 64 rows a warpgroup
    for name in BLACKWELL:
        model = ComputeModel(load_profile(f"{name}.yaml"))
        assert model.row_tile("fp8") == 64 and model.row_tile("bf16") == 64, name  # one-CTA UMMA
        assert model.row_tile("fp4") == 128, name  # block-scaled UMMA: 128 rows per CTA


def test_a_bad_row_tile_names_the_field():
    with pytest.raises(ConfigError) as err:
        load_profile("h100-dgx.yaml", ["calibration.gemm.fp8.row_tile=0"])
    assert "calibration.gemm.fp8.row_tile" in str(err.value)


def test_padded_rows_cost_tensor_time_not_bytes():
    """158 decodes compute as many rows as 192 (a 64-row tile) but read only their own activations."""
    c = _costs("llama3-70b")
    w158, _ = iteration_work(c, [1000] * 158, [], 158, row_tile=64)
    w192, _ = iteration_work(c, [1000] * 192, [], 192, row_tile=64)
    flat, _ = iteration_work(c, [1000] * 158, [], 158, row_tile=1)
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
        work, _ = iteration_work(c, [1000] * batch, [], batch, row_tile=tile)
        return model.time_fused((work[0],), "fp8", 1.0).time_s - model.overhead_s  # the launch is not scaled

    assert gemm_time(158, 64) == pytest.approx(gemm_time(158, 1) * 192 / 158, rel=1e-3)
    assert gemm_time(158, 64) == pytest.approx(gemm_time(192, 64), rel=1e-2)  # only activations differ
    # a memory-bound batch (8 decodes read the weights once) hides its padding
    assert gemm_time(8, 64) == pytest.approx(gemm_time(8, 1), rel=1e-9)


def test_more_sequences_never_take_less_time():
    model = ComputeModel(load_profile("h200-hgx.yaml"))
    c = _costs("llama3-70b")
    times = [
        model.time_fused(iteration_work(c, [1000] * n, [], n, row_tile=64)[0], "fp8", 1.0).time_s
        for n in range(1, 300, 7)
    ]
    assert all(a <= b for a, b in itertools.pairwise(times))


def test_expert_rows_match_random_routing():
    """The experts' padded rows against a Monte-Carlo of balanced routing (each token picks top_k distinct
    experts at random), where the mean-count shortcut would be off by up to 30 %: around one tile per
    expert, a count of 120 pads to 128 and one of 136 to 256."""
    rng = np.random.default_rng(0)
    experts, top_k = 128, 8
    for tokens, tile in ((64, 128), (1728, 128), (2048, 64), (300, 1)):
        totals = []
        for _ in range(200):
            picks = np.argsort(rng.random((tokens, experts)), axis=1)[:, :top_k]
            counts = np.bincount(picks.ravel(), minlength=experts)
            totals.append(float(np.sum(np.ceil(counts / tile) * tile)))
        exact = expert_tile_rows(tokens, top_k, experts, tile)
        assert exact == pytest.approx(np.mean(totals), rel=0.01), (tokens, tile)
    assert expert_tile_rows(300, 8, 128, 1) == 300 * 8  # one-row tiles: no padding
    assert expert_tile_rows(0, 8, 128, 128) == 0.0
    assert expert_tile_rows(10, 8, 8, 128) == 8 * 128  # every expert gets every token


def test_the_experts_pay_their_tiles_not_their_bytes():
    c = _costs("qwen3-30b-a3b", "fp4")
    flat, tiled = routed_work(c, 64, row_tile=1)[0], routed_work(c, 64, row_tile=128)[0]
    assert flat[0] == pytest.approx(64 * c.routed_flops_per_token_layer, rel=1e-12)
    assert tiled[0] > 25 * flat[0]  # ~126 experts with ~4 rows each compute 128 rows each
    assert tiled[1] == flat[1]  # the experts' weights are read once either way


def test_moe_serving_pays_the_expert_tiles(tmp_path):
    """Qwen3-30B-A3B in NVFP4 on one B200: the expert GEMMs of a few hundred decodes are compute-bound
    once their rows fill 128-row tiles, so the tile lowers throughput end to end."""
    data = {"kind": "inference", "model": "qwen3-30b-a3b", "precision": "fp4",
            "requests": {"count": 256, "input_tokens": 128, "output_tokens": 32},
            "scheduler": {"max_num_seqs": 256}}  # fmt: skip
    path = tmp_path / "moe.yaml"
    path.write_text(yaml.safe_dump(data))
    zero_host = ["calibration.serving_sequence_host_time=0us", "calibration.serving_kernel_host_time=0us"]

    def tokens_per_s(tile: int) -> float:
        sets = [*zero_host, f"calibration.gemm.fp4.row_tile={tile}"]
        opts = RunOptions(profile="b200-dgx.yaml", workload=str(path), write_trace=False, sets=sets)
        return run(opts).summary["tokens_per_s"]

    assert tokens_per_s(1) > 1.05 * tokens_per_s(128)


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
