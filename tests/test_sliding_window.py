"""Sliding-window attention (GPT-OSS, Gemma, Mistral): a windowed layer's query attends to its last
``sliding_window`` keys; every ``full_attention_every``-th layer keeps full causal attention."""

from __future__ import annotations

import pytest
from sim_helpers import simulate

from simcore.errors import ConfigError
from workloads import model as mdl
from workloads.spec import TrainingSpec, load_training_spec


def _core_flops(spec: mdl.ModelSpec, layer: int, seq: int = 4096) -> float:
    ops = mdl.layer_ops(spec, layer, micro_batch=1, seq_len=seq)
    return next(op.flops for op in ops if op.name == "attn_core")


@pytest.mark.parametrize("s,w", [(16, 1), (16, 5), (16, 16), (16, 40), (37, 7), (4096, 128)])
def test_causal_keys_per_query_is_the_mean_band_width(s, w):
    # The flash kernel's executed share in the continuous convention: the integral of min(x, w) over a
    # query position x in [0, s], per query (s/2 without a window).
    grid = [(i + 0.5) * s / 20000 for i in range(20000)]
    integral = sum(min(x, w) for x in grid) / len(grid)
    assert mdl.causal_keys_per_query(s, w) == pytest.approx(integral, rel=1e-6)
    assert mdl.causal_keys_per_query(s, None) == s / 2


def test_a_smaller_window_never_costs_more_and_the_full_window_meets_full_attention():
    for keys_of in (mdl.causal_keys_per_query, mdl.flash_keys_per_query):
        keys = [keys_of(4096, w) for w in (4096, 4095, 2048, 1024, 128, 1)]
        assert keys[0] == 2048 and keys[1] == pytest.approx(2048, abs=1e-3)
        assert keys == sorted(keys, reverse=True)
    # A flash kernel also runs the tile a window's edge cuts, and never more than the causal triangle.
    assert mdl.flash_keys_per_query(4096, 128) == mdl.causal_keys_per_query(4096, 128) + mdl.FLASH_TILE
    assert mdl.flash_keys_per_query(4096, 3900) == 2048  # band 2,043 + a tile: capped


def test_gpt_oss_alternates_windowed_and_full_layers_and_their_core_work():
    spec = mdl.load_preset("gpt-oss-120b")
    assert [spec.attention_window(i) for i in range(4)] == [128, None, 128, None]
    ratio = _core_flops(spec, 0) / _core_flops(spec, 1)
    # The band (126 keys per query) plus one 128-key tile its edge cuts, against the causal 2,048.
    assert ratio == pytest.approx((128 - 128**2 / 8192 + mdl.FLASH_TILE) / 2048, rel=1e-12)
    assert ratio < 0.13  # ~1/8 of the full core's work
    # Everything else in the layer is the same.
    other = [op.flops for op in mdl.layer_ops(spec, 0, micro_batch=1) if op.name != "attn_core"]
    assert other == [op.flops for op in mdl.layer_ops(spec, 1, micro_batch=1) if op.name != "attn_core"]


def test_model_flops_count_each_layers_band():
    spec = mdl.load_preset("gpt-oss-120b")
    full = mdl.ModelSpec(**{**spec.__dict__, "sliding_window": None, "full_attention_every": 0})
    per_layer = 2.0 * spec.heads * (spec.qk_head_dim + spec.v_head_dim)
    # The convention counts twice a causal query's keys: s for a full layer, 2·(w - w²/2s) for a windowed one.
    band = 2.0 * (128 - 128 * 128 / (2 * 4096))
    saved = 3.0 * 18 * per_layer * (4096 - band)
    assert mdl.model_flops_per_token(full) - mdl.model_flops_per_token(spec) == pytest.approx(
        saved, rel=1e-12
    )


def test_a_window_as_long_as_the_sequence_changes_nothing():
    base = mdl.load_preset("llama3-8b")
    wide = mdl.ModelSpec(**{**base.__dict__, "sliding_window": base.seq_len})
    assert mdl.layer_ops(wide, 0, micro_batch=1) == mdl.layer_ops(base, 0, micro_batch=1)
    assert mdl.model_flops_per_token(wide) == mdl.model_flops_per_token(base)


def _spec(window: int | None, every: int = 0) -> TrainingSpec:
    model: dict = {"preset": "llama3-8b", "layers": 4, "seq_len": 8192}
    if window is not None:
        model |= {"sliding_window": window, "full_attention_every": every}
    return load_training_spec(
        {
            "kind": "training",
            "model": model,
            "parallelism": {"tp": 1, "pp": 1, "dp": 1, "recompute": "none"},
            "batch": {"global_seqs": 1, "micro": 1},
            "steps": 1,
        },
        file="swa.yaml",
    )


def test_a_smaller_window_is_never_slower_and_full_layers_keep_their_cost():
    steps = [simulate(_spec(w), "h100-dgx.yaml")[2] for w in (None, 4096, 1024, 128)]
    assert steps == sorted(steps, reverse=True) and steps[-1] < 0.95 * steps[0]
    # Half the layers full: between the all-windowed and the all-full step.
    half = simulate(_spec(128, every=2), "h100-dgx.yaml")[2]
    assert steps[-1] < half < steps[0]
    # The job builds one program per kind of layer, not one for all.
    job = simulate(_spec(128, every=2), "h100-dgx.yaml")[0]
    assert {key[2] for key in job._programs if len(key) == 6} == {128, None}


def test_bad_window_fields_name_the_field():
    with pytest.raises(ConfigError, match="full_attention_every"):
        mdl.load_model(
            {**mdl.load_preset("llama3-8b").__dict__, "moe": None, "mla": None, "full_attention_every": 2}
        )
    with pytest.raises(ConfigError, match="sliding_window"):
        _spec(0)


@pytest.mark.parametrize("cached,new,w", [(0, 10, 4), (3, 5, 4), (0, 8, 100), (50, 20, 32), (7, 1, 8)])
def test_serving_counts_the_keys_each_new_token_attends_to(cached, new, w):
    from workloads.inference import _keys_attended

    grid = [cached + (i + 0.5) * new / 20000 for i in range(20000)]
    integral = sum(min(x, w) for x in grid) * new / len(grid)
    assert _keys_attended(cached, new, w) == pytest.approx(integral, rel=1e-6)
    if cached + new <= w:  # inside the window: exactly the unwindowed count
        assert _keys_attended(cached, new, w) == _keys_attended(cached, new, None)


def test_serving_windowed_layers_read_and_attend_to_their_window_only():
    from workloads.inference import iteration_work, load_inference_spec, replica_costs

    def costs(window):
        model = {"preset": "llama3-8b"} | ({"sliding_window": window} if window else {})
        return replica_costs(load_inference_spec({"model": model}, file="x"))

    full, win = costs(None), costs(256)
    assert win.windowed_layers == win.layers == 32
    assert win.kv_bytes(100) == full.kv_bytes(100)  # shorter than the window: the same cache
    assert win.kv_bytes(10_000) == pytest.approx(full.kv_bytes(256), rel=1e-12)
    # Decode only: a windowed layer reads min(context, window) keys per sequence.
    work_f, _ = iteration_work(full, [4000, 100], [], 0, row_tile=1)
    work_w, _ = iteration_work(win, [4000, 100], [], 0, row_tile=1)
    decode_f, decode_w = work_f[0][1], work_w[0][1]  # the cache-read op of the first layer
    assert next(op[1] for op in work_w if op[3] == work_f[1][3]) == pytest.approx(
        (256 + 100) * win.kv_bytes_per_token_layer
    )
    assert decode_w == decode_f  # the GEMM part is untouched
    # Prefill only, after 3,000 cached tokens: the chunk attends to the window, reads window + chunk.
    work_w, _ = iteration_work(win, [], [(3000, 500)], 0, row_tile=1)
    attn = next(op for op in work_w if op[2] == win.attention_head_dim)
    assert attn[0] == pytest.approx(4.0 * 500 * (256 + mdl.FLASH_TILE) * win.heads * win.head_dim)
    assert attn[1] == pytest.approx((256 + 500) * win.kv_bytes_per_token_layer)


def test_serving_a_windowed_model_caches_and_reads_only_the_window(tmp_path):
    import yaml

    from simcore.runner import RunOptions, run
    from workloads.inference import load_inference_spec, replica_costs

    def serve(window: int | None) -> dict:
        model = {"preset": "llama3-8b"} | (
            {"sliding_window": window, "full_attention_every": 2} if window else {}
        )
        path = tmp_path / f"serve{window}.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "kind": "inference",
                    "model": model,
                    "precision": "fp8",
                    "requests": {"count": 8, "input_tokens": 8192, "output_tokens": 64},
                }
            )
        )
        return run(RunOptions(profile="h100-dgx.yaml", workload=str(path), write_trace=False)).summary

    full, half = serve(None), serve(512)
    # Half the layers keep 512 of 8,256 tokens: the KV cache is ~53 % of the full one.
    spec = load_inference_spec(
        {"model": {"preset": "llama3-8b", "sliding_window": 512, "full_attention_every": 2}}, file="x"
    )
    costs = replica_costs(spec)
    assert costs.windowed_layers == 16
    assert costs.kv_bytes(8256) == pytest.approx(costs.kv_bytes_per_token_layer * (16 * 8256 + 16 * 512))
    assert half["kv_cache_peak_bytes"] == pytest.approx(
        full["kv_cache_peak_bytes"] * (8256 + 512) / 16512, rel=1e-9
    )
    # Less attention work and fewer cache reads: faster to the first token and between tokens.
    assert half["ttft_s_p50"] < full["ttft_s_p50"] and half["tpot_s_p50"] < full["tpot_s_p50"]


def test_a_cache_bound_windowed_server_never_overfills_and_frees_everything(tmp_path):
    import yaml

    from simcore.runner import RunOptions, run

    path = tmp_path / "serve.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "kind": "inference",
                "model": {"preset": "llama3-8b", "sliding_window": 1024, "full_attention_every": 2},
                "precision": "fp8",
                "kv_cache": {"memory_fraction": 0.2},
                "requests": {"count": 64, "input_tokens": 8192, "output_tokens": 256},
            }
        )
    )
    s = run(RunOptions(profile="h100-dgx.yaml", workload=str(path), write_trace=False)).summary
    assert s["requests_completed"] == 64
    assert 0 < s["kv_cache_peak_bytes"] <= s["kv_cache_capacity_bytes"]
    # 16 full layers hold 8,448 tokens and 16 windowed ones 1,024: the cache admits more requests than the
    # all-full model's capacity / request would.
    from workloads.inference import load_inference_spec, replica_costs

    costs = replica_costs(
        load_inference_spec(
            {
                "model": {"preset": "llama3-8b", "sliding_window": 1024, "full_attention_every": 2},
                "precision": "fp8",
            },
            file="x",
        )
    )
    per_request = costs.kv_bytes(8448)
    assert per_request == pytest.approx(costs.kv_bytes_per_token_layer * 16 * (8448 + 1024))
    assert s["kv_cache_peak_bytes"] / per_request == pytest.approx(
        round(s["kv_cache_peak_bytes"] / per_request)
    )


def test_hardware_flops_of_windowed_layers_follow_the_recompute_mode():
    for mode in ("selective", "full"):
        spec = load_training_spec(
            {
                "kind": "training",
                "model": {
                    "preset": "llama3-8b",
                    "layers": 4,
                    "seq_len": 8192,
                    "sliding_window": 128,
                    "full_attention_every": 2,
                },
                "parallelism": {"tp": 1, "pp": 1, "dp": 1, "recompute": mode},
                "batch": {"global_seqs": 1, "micro": 1},
                "steps": 1,
            },
            file="hfu.yaml",
        )
        job = simulate(spec, "h100-dgx.yaml")[0]
        expected = mdl.hardware_flops_per_token(spec.model, 8192, mode)
        assert job.hardware_flops_per_token() == pytest.approx(expected, rel=1e-12)
        windowless = mdl.ModelSpec(
            **{**spec.model.__dict__, "sliding_window": None, "full_attention_every": 0}
        )
        assert expected < mdl.hardware_flops_per_token(windowless, 8192, mode)


def test_ring_context_parallelism_rejects_a_window_and_a_preset_window_can_be_turned_off():
    base = {
        "kind": "training",
        "model": {"preset": "llama3-8b", "layers": 4, "sliding_window": 512},
        "parallelism": {"tp": 1, "pp": 1, "dp": 1, "cp": 2},
        "batch": {"global_seqs": 1, "micro": 1},
    }
    with pytest.raises(ConfigError, match="cp_comm"):
        load_training_spec(base, file="cp.yaml")
    ok = load_training_spec(
        {**base, "parallelism": {**base["parallelism"], "cp_comm": "allgather"}}, file="cp.yaml"
    )
    assert ok.model.sliding_window == 512
    off = load_training_spec(
        {
            **base,
            "model": {"preset": "gpt-oss-120b", "sliding_window": None},
            "parallelism": {"ep": 8, "dp": 8},
            "batch": {"global_seqs": 8, "micro": 1},
        },
        file="off.yaml",
    )
    assert off.model.sliding_window is None and off.model.full_attention_every == 0
    with pytest.raises(ConfigError, match=r"model\.preset"):
        load_training_spec({**base, "model": {"preset": None}}, file="bad.yaml")
