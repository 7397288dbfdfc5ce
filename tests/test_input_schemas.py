"""JSON Schemas of workload specs and sweep files (`racksim schema --kind workload|sweep`): they list every
key the loaders accept and no other, accept every shipped example, preset and documented file, and report
each mistake once."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from simcore.cli import main
from simcore.errors import ConfigError
from simcore.profile import profile_json_schema
from simcore.schema import _inner_class, required_only
from simcore.sweep import DEFAULT_METRICS, SUMMARY_FIELDS, SWEEP_KEYS, load_sweep
from simcore.sweep_schema import sweep_json_schema
from workloads import model as model_module
from workloads.inference import INFERENCE_KEYS, _ServingFields, load_inference_spec
from workloads.model import list_presets, load_model
from workloads.spec import WORKLOAD_KEYS, _TrainingFields, load_training_spec, spec_mapping
from workloads.spec_schema import MODEL_SECTIONS, model_json_schema, workload_json_schema

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
PRESETS = ROOT / "workloads" / "presets"
DOCS = ROOT / "docs"

WORKLOAD = workload_json_schema()
SWEEP = sweep_json_schema()
TRAINING = WORKLOAD["$defs"]["training"]
SERVING = WORKLOAD["$defs"]["inference"]
MODEL_VALUE = model_json_schema()  # a preset name or a model mapping (a preset file is the latter)
MODEL = MODEL_VALUE["else"]  # the mapping form


_VALIDATORS: dict[int, Any] = {}


def _validator(schema: dict[str, Any]) -> Any:
    """A validator of ``schema`` (one of the module's constants), checked against the metaschema once."""
    jsonschema = pytest.importorskip(
        "jsonschema", reason="jsonschema is not installed in this environment (not a racksim dependency)"
    )
    if id(schema) not in _VALIDATORS:
        jsonschema.Draft202012Validator.check_schema(schema)
        _VALIDATORS[id(schema)] = jsonschema.Draft202012Validator(schema)
    return _VALIDATORS[id(schema)]


def _errors(schema: dict[str, Any], data: Any) -> list[tuple[str, str]]:
    return [(".".join(map(str, e.absolute_path)), e.message) for e in _validator(schema).iter_errors(data)]


def _load(data: dict[str, Any]) -> Any:
    """What `--workload FILE` does with the mapping (kind picks the loader)."""
    loader = load_inference_spec if data.get("kind") == "inference" else load_training_spec
    return loader(copy.deepcopy(data), file="spec.yaml")


def _doc_block(doc: str, start: str) -> Any:
    """The first ```yaml block after ``start`` in docs/<doc>."""
    text = (DOCS / doc).read_text()
    return yaml.safe_load(re.search(r"```yaml\n(.*?)```", text[text.index(start) :], re.S).group(1))


# ---------------------------------------------------------------------------------- the keys, both ways


def test_the_top_level_keys_are_the_loaders():
    assert set(TRAINING["properties"]) == set(WORKLOAD_KEYS)
    assert set(SERVING["properties"]) == set(INFERENCE_KEYS)
    assert set(SWEEP["properties"]) == set(SWEEP_KEYS)
    assert TRAINING["additionalProperties"] is False and SERVING["additionalProperties"] is False
    assert SWEEP["additionalProperties"] is False and SWEEP["required"] == ["profiles"]
    assert WORKLOAD["properties"]["kind"]["enum"] == ["training", "inference"]


@pytest.mark.parametrize("cls,branch", [(_TrainingFields, TRAINING), (_ServingFields, SERVING)])
def test_every_section_lists_its_dataclass_fields(cls, branch):
    """The sections come from the field specs `build` reads: the same names, nested alike."""

    def check(cls: type, node: dict[str, Any], where: str) -> None:
        fields = {f.name: f for f in dataclasses.fields(cls) if f.metadata.get("kind")}
        assert set(node["properties"]) >= set(fields), where
        for name, fld in fields.items():
            if fld.metadata["kind"] == "section":
                check(_inner_class(cls, name), node["properties"][name], f"{where}.{name}")
        if where:  # the top level also holds model and preset
            assert set(node["properties"]) == set(fields), where

    check(cls, branch, "")


def test_the_model_sections_are_the_loaders_key_lists():
    strict = MODEL["else"]  # what a model without preset: must give (required lists only)
    assert strict == required_only(strict)
    assert set(MODEL["properties"]) == {
        "preset",
        *model_module._MODEL_REQUIRED,
        *model_module._MODEL_OPTIONAL,
    }
    assert strict["required"] == list(model_module._MODEL_REQUIRED)
    for section, (_cls, required, optional) in MODEL_SECTIONS.items():
        if section == "model":
            continue
        assert set(MODEL["properties"][section]["properties"]) == {*required, *optional}, section
        assert strict["properties"][section]["required"] == list(required), section
    with_preset = {"preset": "deepseek-v3", "moe": {"capacity_factor": 1.0}}  # merged key by key
    assert not _errors(MODEL, with_preset)


def _fill(node: dict[str, Any]) -> Any:
    """A value for every property of a schema node: its default, null where allowed, else the smallest."""
    if "default" in node:
        return node["default"]
    types = node.get("type")
    types = types if isinstance(types, list) else [types]
    if "null" in types:
        return None
    if "object" in types:
        return {key: _fill(sub) for key, sub in node["properties"].items()}
    if "integer" in types:
        return max(1, node.get("minimum", 1))
    raise AssertionError(f"no value for {node}")


@pytest.mark.parametrize("kind", ["training", "inference"])
def test_a_spec_giving_every_schema_field_loads(kind):
    """Every key the schema offers is one the loader takes (with the value the schema says is its
    default): the other direction of the key check above."""
    branch = TRAINING if kind == "training" else SERVING
    spec = {k: _fill(v) for k, v in branch["properties"].items() if k not in ("kind", "model", "preset")}
    spec |= {"kind": kind, "model": "llama3-8b"}
    if kind == "training":
        spec["job"] = _fill({**branch["properties"]["job"], "type": "object"})
    assert not _errors(WORKLOAD, spec)
    _load(spec)


def test_a_model_giving_every_schema_field_loads():
    for preset, sections in (("deepseek-v3", ("moe", "mla")), ("nemotron-3-nano-30b-a3b", ("mamba",))):
        data = yaml.safe_load((PRESETS / f"{preset}.yaml").read_text())
        for key, sub in MODEL["properties"].items():
            if key != "preset" and key not in data:
                data[key] = _fill(sub) if key not in ("moe", "mla", "mamba") else None
        for section in sections:
            for key, sub in MODEL["properties"][section]["properties"].items():
                data[section].setdefault(key, _fill(sub))
        assert not _errors(MODEL_VALUE, data), preset
        load_model(data, file="m.yaml")


def test_a_sweep_giving_every_key_loads(tmp_path):
    sweep = {
        "name": "all",
        "profiles": ["gen2.yaml"],
        "workloads": ["llama3-8b", None],
        "set": ["parallelism.tp=8"],
        "grid": {"batch.micro": [1, 2]},
        "racks": 1,
        "steps": 1,
        "seed": 3,
        "trace": False,
        "metrics": ["mfu", "workload.parallelism.tp"],
    }
    assert set(sweep) == set(SWEEP_KEYS)
    assert not _errors(SWEEP, sweep)
    path = tmp_path / "all.yaml"
    path.write_text(yaml.safe_dump(sweep))
    assert load_sweep(path).size == 4


# ------------------------------------------------------------------------ files racksim ships and documents


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_validates(path):
    schema = SWEEP if path.name.startswith("sweep-") else WORKLOAD
    assert _errors(schema, yaml.safe_load(path.read_text())) == []


def test_every_preset_is_a_complete_model():
    names = list_presets()
    assert names and set(names) <= set(WORKLOAD["$defs"]["model"]["then"]["enum"])  # and the aliases
    for name in names:
        data = yaml.safe_load((PRESETS / f"{name}.yaml").read_text())
        assert _errors(MODEL_VALUE, data) == [], name
        assert _errors(WORKLOAD, {"model": data, "batch": {"global_seqs": 8}}) == [], name


def test_the_documented_files_validate():
    training = _doc_block("workloads.md", "## A training spec")
    assert training["kind"] == "training" and not _errors(WORKLOAD, training)
    job = _doc_block("workloads.md", "## Multi-day jobs")
    assert not _errors(WORKLOAD, {**training, **job})
    serving = _doc_block("inference.md", "# Inference serving")
    assert serving["kind"] == "inference" and not _errors(WORKLOAD, serving)
    assert not _errors(MODEL_VALUE, _doc_block("models.md", "## 1. The model block")["model"])
    assert not _errors(SWEEP, _doc_block("sweep.md", "## The sweep file"))


def test_the_editor_setup_is_documented():
    readme = (ROOT / "README.md").read_text()
    assert "schema --kind workload" in readme and "--kind sweep" in readme
    for doc, kind in (("workloads.md", "workload"), ("sweep.md", "sweep")):
        text = (DOCS / doc).read_text()
        assert f"schema --kind {kind} > {kind}.schema.json" in text
        assert "# yaml-language-server: $schema=" in text
    modeline = _doc_block("workloads.md", "## JSON Schema for editors")
    assert not _errors(WORKLOAD, modeline)
    _load(modeline)


def test_the_effective_spec_racksim_records_validates():
    """spec_mapping (the spec stored in the trace, reloadable with --workload) is a valid spec."""
    spec = _load(
        {
            "model": "deepseek-v3",
            "batch": {"global_seqs": 24},
            "parallelism": {"pp": 3, "dp": 8, "ep": 8},
            "job": {"steps": 1000, "checkpoint_bytes": "1.2 TB"},
        }
    )
    mapping = json.loads(json.dumps(spec_mapping(spec)))  # tuples as the YAML lists they are written as
    assert _errors(WORKLOAD, mapping) == []
    assert not _errors(WORKLOAD, {"preset": "llama3-8b"})  # a bare preset: racksim picks the layout


# ------------------------------------------------------------------------------ mistakes, reported once


@pytest.mark.parametrize(
    "spec,path,word",
    [
        ({"model": "llama3-8b", "batch": {"global_seqs": 8}, "parallelizm": {}}, "", "parallelizm"),
        (
            {"model": "llama3-8b", "batch": {"global_seqs": 8}, "parallelism": {"tpp": 2}},
            "parallelism",
            "tpp",
        ),
        (
            {"model": "llama3-8b", "batch": {"global_seqs": 8}, "job": {"steps": 9, "checkpoint_evry": 3}},
            "job",
            "checkpoint_evry",
        ),
        ({"model": {"preset": "llama3-8b", "layerz": 2}, "batch": {"global_seqs": 8}}, "model", "layerz"),
        (
            {"model": {"preset": "mixtral-8x7b", "moe": {"top_kk": 2}}, "batch": {"global_seqs": 8}},
            "model.moe",
            "top_kk",
        ),
        ({"kind": "trainig", "model": "llama3-8b", "batch": {"global_seqs": 8}}, "kind", "trainig"),
        ({"model": "llama3-8bb", "batch": {"global_seqs": 8}}, "model", "llama3-8bb"),
        ({"model": "llama3-8b", "batch": {"global_seqs": 8}, "precision": "fp9"}, "precision", "fp9"),
        ({"model": "llama3-8b", "batch": {"global_seqs": 8}, "steps": 200_000}, "steps", "200000"),
        ({"model": "llama3-8b"}, "", "'batch' is a required property"),
        ({"batch": {"global_seqs": 8}}, "", "'model' is a required property"),
        ({"kind": "inference", "model": "llama3-8b", "requests": {"rat": 2}}, "requests", "rat"),
        ({"kind": "inference", "model": "llama3-8b", "batch": {"global_seqs": 8}}, "", "batch"),
        (
            {"kind": "inference", "model": "llama3-8b", "scheduler": {"max_num_seqs": 0}},
            "scheduler.max_num_seqs",
            "0",
        ),
    ],
)
def test_a_mistake_is_one_schema_error_and_a_loader_error(spec, path, word):
    errors = _errors(WORKLOAD, spec)
    assert len(errors) == 1, errors
    assert errors[0][0] == path and word in errors[0][1]
    with pytest.raises(ConfigError):
        _load(spec)


@pytest.mark.parametrize(
    "sweep,path,word",
    [
        ({"profile": ["gen2.yaml"], "profiles": ["gen2.yaml"]}, "", "profile"),
        ({"profiles": ["gen2.yaml"], "metrics": ["mfu", "mfuu"]}, "metrics.1", "mfuu"),
        ({"profiles": ["gen2.yaml"], "metrics": "workloadz.tp"}, "metrics", "workloadz.tp"),
        ({"profiles": ["gen2.yaml"], "grid": {"parallelism.tp": 8}}, "grid.parallelism.tp", "array"),
        ({"profiles": ["gen2.yaml"], "set": ["parallelism.tp"]}, "set.0", "parallelism.tp"),
        ({"profiles": ["gen2.yaml"], "steps": 0}, "steps", "0"),
        ({"profiles": ["gen2.yaml"], "seed": None}, "seed", "None"),
        ({"workloads": ["llama3-8b"]}, "", "'profiles' is a required property"),
    ],
)
def test_a_sweep_mistake_is_one_schema_error_and_a_loader_error(tmp_path, sweep, path, word):
    errors = _errors(SWEEP, sweep)
    assert len(errors) == 1, errors
    assert errors[0][0] == path and word in errors[0][1]
    file = tmp_path / "s.yaml"
    file.write_text(yaml.safe_dump(sweep))
    with pytest.raises(ConfigError):
        load_sweep(file)


def _model_bounds() -> list[tuple[str, str, Any]]:
    """(section, key, a value just below the schema's bound or outside its enum) for every model key."""
    out = []
    for section in MODEL_SECTIONS:
        props = MODEL["properties"] if section == "model" else MODEL["properties"][section]["properties"]
        for key, prop in props.items():
            if "minimum" in prop:
                below = prop["minimum"] - (1 if "integer" in prop["type"] else 0.5)
                out.append((section, key, below))
            elif "enum" in prop and key != "preset":
                out.append((section, key, prop["enum"][0] + "x"))
            elif "pattern" in prop:
                out.append((section, key, "X" * 32))
    return out


@pytest.mark.parametrize("section,key,value", _model_bounds(), ids=lambda v: str(v))
def test_the_model_bounds_are_the_loaders(section, key, value):
    """A value the model schema rejects for its bound or allowed values, the loader rejects too, naming the
    field (the bounds are a table beside the hand-written loader, so this keeps them in step)."""
    preset = "nemotron-3-nano-30b-a3b" if section == "mamba" else "deepseek-v3"
    data = yaml.safe_load((PRESETS / f"{preset}.yaml").read_text())
    target = data if section == "model" else data[section]
    target[key] = value
    if section == "model" and key == "full_attention_every":
        data["sliding_window"] = 128
    assert _errors(MODEL_VALUE, data), (section, key)
    with pytest.raises(ConfigError) as info:
        load_model(data, file="m.yaml", path="model")
    assert key in str(info.value)


def test_the_sweep_metrics_are_the_summary_keys():
    metrics = SWEEP["properties"]["metrics"]
    assert metrics["else"]["enum"] == sorted(SUMMARY_FIELDS)
    assert metrics["default"] == list(DEFAULT_METRICS)


# -------------------------------------------------------------------------------------------- the command


@pytest.mark.parametrize(
    "kind,title", [("workload", "racksim workload spec"), ("sweep", "racksim sweep file")]
)
def test_schema_kind_prints_the_schema(capsys, kind, title):
    assert main(["schema", "--kind", kind]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == title


def test_schema_without_kind_is_still_the_profile_schema(capsys):
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(profile_json_schema()))


def test_bad_schema_arguments_are_one_line(capsys):
    with pytest.raises(SystemExit) as info:  # argparse's own check
        main(["schema", "--kind", "workloads"])
    assert info.value.code == 2
    assert main(["schema", "--kind", "sweep", "--markdown"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "invalid choice: 'workloads'" in err[0] and "--kind profile" in err[1]
