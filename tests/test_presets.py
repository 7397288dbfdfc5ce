"""Bundled model presets: they load, cite a source, and count the parameters their publishers print."""

from __future__ import annotations

import dataclasses
from importlib import resources

import pytest
import yaml

from workloads.model import (
    active_params,
    check_parallelism,
    embedding_params,
    list_presets,
    load_model,
    load_preset,
    non_embedding_params,
    output_params,
    total_params,
)

EXPECTED_PRESETS = {
    "llama2-7b", "llama2-13b", "llama2-70b", "llama3-8b", "llama3-70b", "llama3-405b", "gpt3-175b",
    "gpt-1.7b", "gpt-3.6b", "gpt-7.5b", "gpt-18.4b", "gpt-39.1b", "gpt-76.1b", "gpt-145.6b", "gpt-310.1b",
    "gpt-529.6b", "gpt-1008b", "gpt-22b", "mpt-1b", "mpt-3b", "mpt-7b", "mpt-13b", "mpt-30b", "mpt-70b",
    "mixtral-8x7b", "mixtral-8x22b", "qwen3-30b-a3b", "qwen3-235b-a22b", "deepseek-v3", "gpt-oss-120b",
    "kimi-k2", "nemotron-4-340b", "nemotron-3-nano-30b-a3b", "nemotron-3-super-120b-a12b",
    "nemotron-3.5-lightning-30b-a3b", "nemotron-h-8b", "nemotron-h-56b",
}  # fmt: skip


def test_all_expected_presets_exist():
    assert set(list_presets()) == EXPECTED_PRESETS


@pytest.mark.parametrize("name", sorted(EXPECTED_PRESETS))
def test_preset_loads_names_itself_and_cites_a_source(name):
    spec = load_preset(name)
    assert spec.name == name
    assert len(spec.source) > 20
    text = (resources.files("workloads") / "presets" / f"{name}.yaml").read_text(encoding="utf-8")
    assert text.lstrip().startswith("#")  # a comment saying where the numbers come from
    assert yaml.safe_load(text)["name"] == name


# (preset, published total params, relative tolerance, where it is printed)
PUBLISHED_TOTALS = [
    ("llama2-7b", 6_738_415_616, 1e-9, "HF meta-llama/Llama-2-7b-hf"),
    ("llama2-13b", 13_015_864_320, 1e-9, "HF meta-llama/Llama-2-13b-hf"),
    ("llama2-70b", 68_976_648_192, 1e-9, "HF meta-llama/Llama-2-70b-hf"),
    ("llama3-8b", 8.03e9, 0.02, "Llama 3 model card"),
    ("llama3-70b", 70.6e9, 0.02, "Llama 3 model card"),
    ("llama3-405b", 405.8e9, 0.02, "Llama 3.1 model card"),
    ("gpt3-175b", 174.6e9, 0.02, "GPT-3 Table 2.1 (175.0B printed, 174.6B counted)"),
    ("mixtral-8x7b", 46.7e9, 0.02, "Mixtral paper §2.1"),
    ("mixtral-8x22b", 141e9, 0.02, "Mistral AI announcement"),
    ("qwen3-30b-a3b", 30.5e9, 0.02, "Qwen3 report Table 2"),
    ("qwen3-235b-a22b", 235e9, 0.02, "Qwen3 report Table 2"),
    ("deepseek-v3", 671e9, 0.02, "DeepSeek-V3 report §4.2 (without the 14B MTP module)"),
    ("kimi-k2", 1.04e12, 0.02, "Kimi K2 report"),
    ("gpt-oss-120b", 116.83e9, 0.02, "gpt-oss model card table"),
    ("nemotron-4-340b", 341e9, 0.02, "Nemotron-4 340B report: 9.4B embedding + 331.6B non-embedding"),
    ("nemotron-3-nano-30b-a3b", 31.6e9, 0.02, "Nemotron 3 Nano model card"),
    ("nemotron-3-super-120b-a12b", 123.6e9, 0.02, "Nemotron 3 Super BF16 checkpoint, MTP module included"),
    ("nemotron-h-8b", 8e9, 0.02, "Nemotron-H report: 8B (racksim counts 8.10B)"),
    ("nemotron-h-56b", 56e9, 0.02, "Nemotron-H report: 56B"),
]


@pytest.mark.parametrize(("name", "published", "rel", "where"), PUBLISHED_TOTALS)
def test_total_params_match_published(name, published, rel, where):
    assert total_params(load_preset(name)) == pytest.approx(published, rel=rel), where


# (preset, published active params per token)
PUBLISHED_ACTIVE = [
    ("mixtral-8x7b", 12.9e9),  # Mixtral paper §2.1: "13B active"
    ("mixtral-8x22b", 39e9),
    ("qwen3-30b-a3b", 3.3e9),
    ("qwen3-235b-a22b", 22e9),
    ("deepseek-v3", 37e9),
    ("kimi-k2", 32.6e9),
    ("nemotron-3-nano-30b-a3b", 3.6e9),  # model card: 3.6B with the embeddings (3.2B without)
]


@pytest.mark.parametrize(("name", "published"), PUBLISHED_ACTIVE)
def test_active_params_match_published(name, published):
    assert active_params(load_preset(name)) == pytest.approx(published, rel=0.02)


def test_gpt_oss_active_params_exclude_the_input_embedding():
    # The gpt-oss model card counts the unembedding but not the embedding lookup in its 5.13B active.
    spec = load_preset("gpt-oss-120b")
    assert active_params(spec) - embedding_params(spec) == pytest.approx(5.13e9, rel=0.01)


def test_nemotron_split_between_embedding_and_layers():
    spec = load_preset("nemotron-4-340b")
    assert embedding_params(spec) + output_params(spec) == pytest.approx(9.4e9, rel=0.01)
    assert non_embedding_params(spec) == pytest.approx(331.6e9, rel=0.01)


@pytest.mark.parametrize(
    ("name", "num_params"),
    [
        # num_params printed by the llm-foundry benchmark README (rows llmfoundry-* of training_runs.yaml).
        ("mpt-1b", 1_315_950_592),
        ("mpt-3b", 2_651_837_440),
        ("mpt-7b", 6_658_859_008),
        ("mpt-13b", 12_853_954_560),
        ("mpt-30b", 29_975_214_080),
        ("mpt-70b", 64_862_437_376),
    ],
)
def test_mpt_counts_are_exact(name, num_params):
    assert total_params(load_preset(name)) == num_params


SC21_ROWS = [
    # (preset, params_b printed in SC21 Table 1, layers, hidden, heads) = rows megatron-sc21-t1-* of
    # shared/reference/training_runs.yaml
    ("gpt-1.7b", 1.7, 24, 2304, 24),
    ("gpt-3.6b", 3.6, 30, 3072, 32),
    ("gpt-7.5b", 7.5, 36, 4096, 32),
    ("gpt-18.4b", 18.4, 40, 6144, 48),
    ("gpt-39.1b", 39.1, 48, 8192, 64),
    ("gpt-76.1b", 76.1, 60, 10240, 80),
    ("gpt-145.6b", 145.6, 80, 12288, 96),
    ("gpt-310.1b", 310.1, 96, 16384, 128),
    ("gpt-529.6b", 529.6, 105, 20480, 128),
    ("gpt-1008b", 1008, 128, 25600, 160),
]


@pytest.mark.parametrize(("name", "params_b", "layers", "hidden", "heads"), SC21_ROWS)
def test_sc21_shapes_and_sizes(name, params_b, layers, hidden, heads):
    spec = load_preset(name)
    assert (spec.layers, spec.hidden, spec.heads, spec.vocab, spec.seq_len) == (
        layers,
        hidden,
        heads,
        51200,
        2048,
    )
    n = total_params(spec)
    # SC21 §5.1: P = 12·l·h²·(1 + 13/(12h) + (V + s)/(12·l·h)); our count adds only the final LayerNorm (2h).
    l, h, v, s = layers, hidden, 51200, 2048  # noqa: E741
    assert n == round(12 * l * h * h * (1 + 13 / (12 * h) + (v + s) / (12 * l * h))) + 2 * h
    assert n / 1e9 == pytest.approx(params_b, rel=0.03)  # 1.7B is printed for 1.652B


@pytest.mark.parametrize(
    ("name", "tp", "pp", "vp", "ep"),
    [
        # Layouts published for these models (training_runs.yaml rows): they must pass the checks.
        ("gpt-529.6b", 8, 35, 1, 1),  # SC21 Table 1
        ("gpt-1008b", 8, 64, 1, 1),  # SC21 Table 1
        ("gpt3-175b", 4, 8, 6, 1),  # NeMo 24.07
        ("nemotron-4-340b", 8, 8, 12, 1),  # NeMo 24.07
        ("llama3-70b", 4, 4, 5, 1),  # NeMo 24.07 (cp 2)
        ("llama3-405b", 4, 16, 4, 1),  # Megatron-Bridge 25.11 (126 + 2 layers over 64 chunks)
        ("qwen3-235b-a22b", 1, 4, 12, 16),  # Megatron-Bridge 25.11 (94 + 2 layers over 48 chunks)
        ("qwen3-30b-a3b", 1, 2, 24, 8),  # Megatron-Bridge 25.11
        ("gpt-oss-120b", 1, 4, 1, 8),  # Megatron-Bridge 25.11
    ],
)
def test_published_layouts_pass_checks(name, tp, pp, vp, ep):
    check_parallelism(load_preset(name), tp=tp, pp=pp, vp=vp, ep=ep, sequence_parallel=True)


def test_standard_training_lengths():
    assert {load_preset(n).seq_len for n in ("llama3-8b", "llama3-70b", "llama3-405b")} == {8192}
    assert {load_preset(n).seq_len for n, *_ in SC21_ROWS} == {2048}


@pytest.mark.parametrize("name", sorted(EXPECTED_PRESETS))
def test_preset_round_trips_through_a_model_mapping(name):
    # workloads/spec.py overrides presets field by field via dataclasses.asdict -> load_model.
    spec = load_preset(name)
    mapping = {k: v for k, v in dataclasses.asdict(spec).items() if v is not None}
    assert load_model(mapping, file="job.yaml") == spec
