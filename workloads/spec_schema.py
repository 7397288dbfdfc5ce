"""JSON Schema of workload specs (``racksim schema --kind workload``), for editor autocompletion.

Generated from what the loaders read, so a field cannot be added to one and forgotten in the other:

* the training and serving sections (parallelism, batch, kernels, optimizer, job, kv_cache, scheduler,
  requests) from their field specs in ``workloads.spec`` and ``workloads.inference`` (``simcore.schema``);
* the top-level keys from ``WORKLOAD_KEYS`` and ``INFERENCE_KEYS`` (the keys the loaders accept);
* the ``model:`` block from the key lists of ``workloads.model.load_model`` (required and optional keys of
  the model and its moe, mla and mamba sections), the types and defaults of the ``ModelSpec`` dataclasses
  and the loader's allowed values; its descriptions and lower bounds are the table below, which must name
  every key the loader accepts (building the schema fails otherwise).

A file with ``kind: inference`` is a serving spec, anything else a training spec: the top level has only
``kind`` and an ``if``/``then``/``else`` picks the one branch that checks the rest, so each mistake is
reported once.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import types
import typing
from typing import Any

from simcore.schema import json_schema, required_only, without_required
from workloads import model as model_module
from workloads.inference import INFERENCE_KEYS, _ServingFields
from workloads.model import (
    FFN_KINDS,
    HYBRID_BLOCKS,
    POSITION_KINDS,
    RECOMPUTE_MODULES,
    MambaSpec,
    MLASpec,
    ModelSpec,
    MoESpec,
    list_presets,
)
from workloads.spec import MAX_SIMULATED_STEPS, WORKLOAD_KEYS, _TrainingFields

# Each model section: its dataclass, the loader's (required, optional) keys and a description of every key.
MODEL_SECTIONS: dict[str, tuple[type, tuple[str, ...], tuple[str, ...]]] = {
    "model": (ModelSpec, model_module._MODEL_REQUIRED, model_module._MODEL_OPTIONAL),
    "moe": (MoESpec, model_module._MOE_REQUIRED, model_module._MOE_OPTIONAL),
    "mla": (MLASpec, model_module._MLA_REQUIRED, model_module._MLA_OPTIONAL),
    "mamba": (MambaSpec, model_module._MAMBA_REQUIRED, model_module._MAMBA_OPTIONAL),
}
MODEL_DOCS: dict[str, dict[str, str]] = {
    "model": {
        "name": "model name (the run's workload name unless the spec gives one)",
        "layers": "transformer layers (a hybrid model: blocks, one per hybrid_pattern character)",
        "hidden": "hidden size",
        "ffn_hidden": "dense FFN width (of the dense layers of an MoE model)",
        "heads": "attention heads",
        "kv_heads": "key/value heads: divides heads (grouped-query attention); = heads for MHA and MLA",
        "vocab": "vocabulary size",
        "seq_len": "sequence length (tokens per training sequence)",
        "ffn": "FFN activation: gelu, swiglu (gated) or squared_relu (Nemotron-4, not gated)",
        "head_dim": "per-head width; default hidden / heads",
        "moe": "mixture-of-experts FFN (null: a dense model)",
        "mla": "multi-head latent attention (DeepSeek-V2/V3, Kimi K2)",
        "tied_embeddings": "the output layer shares the input embedding's weights",
        "bias": "linear layers and norms carry biases (GPT-2/3, Megatron GPT, MPT)",
        "position_embedding": "rope, alibi or learned (learned adds seq_len x hidden parameters)",
        "qk_norm": "RMSNorm over every query and key head before RoPE (Qwen3, OLMo 2, Gemma 3)",
        "mtp_layers": "multi-token-prediction modules after the last layer (DeepSeek-V3 trains 1)",
        "mtp_shared": "the MTP depths share one module's weights (Megatron's mtp_use_repeated_layer)",
        "sliding_window": "windowed layers attend to their last N tokens; null = no window",
        "full_attention_every": "with sliding_window: every N-th layer (1-based) keeps full attention; 0 = none",
        "hybrid_pattern": "one block per layer (Megatron's hybrid_override_pattern): M Mamba-2, * attention, "
        "- dense MLP, E MoE; null = every layer a transformer layer",
        "mamba": "the Mamba-2 mixer of a hybrid model's M blocks",
        "source": "citation for the numbers",
    },
    "moe": {
        "experts": "routed experts",
        "top_k": "experts per token",
        "expert_ffn_hidden": "FFN width of one expert",
        "shared_experts": "experts every token goes through",
        "dense_layers": "the first N layers have a dense FFN",
        "imbalance": "tokens on the busiest expert-parallel rank over the mean (dropless routing)",
        "dense_ffn_hidden": "FFN width of the dense layers; default ffn_hidden",
        "route_groups": "group-limited routing: the experts form this many equal groups",
        "route_group_topk": "groups a token picks its experts from; 0 = no limit",
        "capacity_factor": "token-drop routing: each expert's input padded to this x its mean share; "
        "null = dropless",
        "latent": "LatentMoE: routed experts work in this width (Megatron's moe_latent_size); null = hidden",
    },
    "mla": {
        "q_lora_rank": "query compression rank; 0 = queries projected from the hidden state",
        "kv_lora_rank": "key/value compression rank",
        "qk_nope_head_dim": "per-head query/key width without position embedding",
        "qk_rope_head_dim": "per-head query/key width with RoPE",
        "v_head_dim": "per-head value width",
    },
    "mamba": {
        "heads": "Mamba heads (heads x head_dim is the inner width)",
        "head_dim": "channels per head",
        "state": "state size N per channel",
        "groups": "groups sharing B and C (divides heads)",
        "conv_kernel": "taps of the causal depthwise conv",
        "chunk": "SSD chunk length",
    },
}
# What the loader checks beyond the dataclass types: lower bounds (its integers are >= 1 unless listed
# here), allowed values, non-empty names.
MODEL_MINIMUM: dict[str, dict[str, float]] = {
    "model": {"mtp_layers": 0, "full_attention_every": 0},
    "moe": {
        "shared_experts": 0,
        "dense_layers": 0,
        "route_group_topk": 0,
        "imbalance": 1.0,
        "capacity_factor": 1.0,
    },
    "mla": {"q_lora_rank": 0},
    "mamba": {},
}
MODEL_EXTRA: dict[str, dict[str, dict[str, Any]]] = {
    "model": {
        "name": {"minLength": 1},
        "ffn": {"enum": list(FFN_KINDS)},
        "position_embedding": {"enum": list(POSITION_KINDS)},
        "hybrid_pattern": {"pattern": "^[" + "".join(map(re.escape, HYBRID_BLOCKS)) + "]+$"},
    },
}
# Field specs the loader checks further after building the section.
SECTION_EXTRA: dict[tuple[str, ...], dict[str, Any]] = {
    ("training", "steps"): {"maximum": MAX_SIMULATED_STEPS},
    ("training", "parallelism", "recompute_modules"): {
        "items": {"enum": list(RECOMPUTE_MODULES)},
        "minItems": 1,
    },
}


def preset_names() -> list[str]:
    """Model presets a spec may name, with their aliases."""
    return sorted({*list_presets(), *(alias for alias, _ in model_module._PRESET_ALIASES)})


def _json_type(hint: Any) -> tuple[list[str], type | None]:
    """JSON types of a dataclass field's type hint, and the nested dataclass it holds (if any)."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    names: list[str] = []
    nested = None
    for arg in args:
        if arg is type(None):
            names.append("null")
        elif arg is bool:
            names.append("boolean")
        elif arg is int:
            names.append("integer")
        elif arg is float:
            names.append("number")
        elif arg is str:
            names.append("string")
        elif dataclasses.is_dataclass(arg):
            names.append("object")
            nested = arg
        else:
            raise TypeError(f"no JSON type for {arg!r}")
    return names, nested


def _model_section(section: str) -> dict[str, Any]:
    """The strict schema of one model section (required keys listed)."""
    cls, required, optional = MODEL_SECTIONS[section]
    docs = MODEL_DOCS[section]
    accepted = required + optional
    names = {f.name for f in dataclasses.fields(cls)}
    if set(accepted) != names or set(docs) != set(accepted):
        raise RuntimeError(
            f"model section {section}: the loader's keys, {cls.__name__}'s fields and MODEL_DOCS differ: "
            f"{sorted(set(accepted) ^ names | set(accepted) ^ set(docs))}"
        )
    hints = typing.get_type_hints(cls)
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    props: dict[str, Any] = {}
    for key in accepted:
        json_types, nested = _json_type(hints[key])
        if nested is not None:
            inner = next(name for name, (c, _, _) in MODEL_SECTIONS.items() if c is nested)
            # the section's mapping, or null where the dataclass says `| None` (type ["object", "null"])
            prop = {**_model_section(inner), "type": json_types, "description": docs[key]}
        else:
            prop = {"type": json_types[0] if len(json_types) == 1 else json_types, "description": docs[key]}
            if "integer" in json_types or "number" in json_types:
                prop["minimum"] = MODEL_MINIMUM[section].get(key, 1)
            prop.update(MODEL_EXTRA.get(section, {}).get(key, {}))
        default = defaults[key]
        if default is not dataclasses.MISSING and default is not None and key not in required:
            prop["default"] = default
        props[key] = prop
    return {"type": "object", "properties": props, "additionalProperties": False, "required": list(required)}


def model_json_schema() -> dict[str, Any]:
    """A ``model:`` value: a preset name, a complete model mapping, or ``{preset: NAME, ...}`` overriding
    some of a preset's fields (nested sections merge key by key, so nothing is required then). The presets
    in workloads/presets/ are complete model mappings."""
    presets = preset_names()
    strict = _model_section("model")
    mapping = without_required(strict)
    mapping["properties"] = {
        "preset": {"enum": presets, "description": "start from this preset and override the fields given"},
        **mapping["properties"],
    }
    mapping["if"] = {"required": ["preset"]}
    mapping["else"] = required_only(strict)
    return {
        "description": "the model: a preset name, a model mapping, or {preset: NAME, ...overrides} "
        "(docs/models.md)",
        "if": {"type": "string"},
        "then": {"enum": presets},
        "else": mapping,
    }


def _sections(cls: type, kind: str) -> dict[str, Any]:
    """The schema of a spec's non-model fields from their field specs, with the loader's further checks."""
    schema = json_schema(cls)
    for path, extra in SECTION_EXTRA.items():
        if path[0] != kind:
            continue
        node = schema
        for key in path[1:]:
            node = node["properties"][key]
        node.update(copy.deepcopy(extra))
    return schema


def _model_or_preset() -> dict[str, Any]:
    """A spec names its model once: ``model:`` or ``preset:``."""
    return {
        "if": {"required": ["preset"]},
        "then": {"not": {"required": ["model"]}},
        "else": {"required": ["model"]},
    }


def _branch(fields: dict[str, Any], accepted: tuple[str, ...], kind: str) -> dict[str, Any]:
    props = {
        "model": {"$ref": "#/$defs/model"},
        "preset": {"enum": preset_names(), "description": "a model preset (the same as model: NAME)"},
        **fields["properties"],
    }
    props["kind"] = {"description": f"{kind} (checked at the top level)"}  # the enum is checked once, above
    return {
        "type": "object",
        "properties": {key: props[key] for key in accepted},
        "additionalProperties": False,
    }


def workload_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a workload spec file, training or serving."""
    training_fields = _sections(_TrainingFields, "training")
    serving_fields = _sections(_ServingFields, "inference")
    missing = [key for key in WORKLOAD_KEYS if key not in ("model", "preset", *training_fields["properties"])]
    missing += [
        key for key in INFERENCE_KEYS if key not in ("model", "preset", *serving_fields["properties"])
    ]
    if missing:
        raise RuntimeError(f"workload keys without a field spec: {missing}")
    training = _branch(training_fields, WORKLOAD_KEYS, "training")
    training_required = training_fields.get("required", [])
    # a file holding only `preset: NAME` is a bare preset: racksim lays it out (no batch needed)
    training["allOf"] = [
        _model_or_preset(),
        {"if": {"required": ["preset"], "maxProperties": 1}, "else": {"required": training_required}},
    ]
    serving = _branch(serving_fields, INFERENCE_KEYS, "inference")
    serving["allOf"] = [_model_or_preset()]
    if serving_fields.get("required"):
        serving["required"] = serving_fields["required"]
    kind_meta = next(f.metadata for f in dataclasses.fields(_TrainingFields) if f.name == "kind")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "racksim workload spec",
        "description": "a training spec (docs/workloads.md) or, with kind: inference, a serving spec "
        "(docs/inference.md)",
        "type": "object",
        "properties": {
            "kind": {
                "enum": list(kind_meta["options"]),
                "default": kind_meta["default"],
                "description": kind_meta["doc"],
            }
        },
        "if": {"properties": {"kind": {"const": "inference"}}, "required": ["kind"]},
        "then": {"$ref": "#/$defs/inference"},
        "else": {"$ref": "#/$defs/training"},
        "$defs": {"training": training, "inference": serving, "model": model_json_schema()},
    }
