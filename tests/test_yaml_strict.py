"""racksim's YAML dialect (simcore/yaml_strict.py) and what a user sees when a file is not YAML."""

from __future__ import annotations

import pytest
import yaml

from simcore.errors import ConfigError
from simcore.profile import parse_set_option, read_yaml
from simcore.yaml_strict import loads


def test_a_key_given_twice_is_an_error_naming_both_lines():
    with pytest.raises(yaml.YAMLError, match=r"'tp' is given twice \(first at line 2\)"):
        loads("parallelism:\n  tp: 2\n  pp: 1\n  tp: 4\n")
    assert loads("a: {tp: 2}\nb: {tp: 4}\n") == {"a": {"tp": 2}, "b": {"tp": 4}}  # other mappings may


@pytest.mark.parametrize(
    ("text", "value"),
    [("5e-1", 0.5), ("1E2", 100.0), ("-2.5e3", -2500.0), ("3", 3), ("0.25", 0.25), (".inf", float("inf")),
     ("'5e-1'", "5e-1"), ("1_000", 1000), ("yes", True), ("8 GB", "8 GB")],
)  # fmt: skip
def test_exponent_numbers_are_numbers_and_the_rest_reads_as_before(text, value):
    assert loads(f"x: {text}")["x"] == value
    assert type(loads(f"x: {text}")["x"]) is type(value)


def test_set_options_read_exponents_as_numbers():
    assert parse_set_option("requests.rate=5e-1") == (["requests", "rate"], 0.5)


def test_a_file_that_is_not_text_or_has_a_duplicate_is_one_line(tmp_path):
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"kind: \xff\xfe\x00training")
    with pytest.raises(ConfigError, match="not UTF-8 text") as err:
        read_yaml(binary)
    assert "b.yaml" in str(err.value)
    dup = tmp_path / "d.yaml"
    dup.write_text("kind: training\nkind: inference\n")
    with pytest.raises(ConfigError, match="line 2") as err:
        read_yaml(dup)
    assert "d.yaml" in str(err.value) and "given twice" in str(err.value)


def test_merge_keys_may_be_overridden_and_leading_zero_numbers_read_as_before():
    data = loads("leaf: &t {name: leaf, span_gpus: 256}\nspine: {<<: *t, name: spine, span_gpus: 2048}\n")
    assert data["spine"] == {"name": "spine", "span_gpus": 2048}
    assert loads("a: 08\nb: 0128\nc: 007") == yaml.safe_load("a: 08\nb: 0128\nc: 007")
