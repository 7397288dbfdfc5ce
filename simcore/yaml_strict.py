"""The YAML dialect of racksim's input files: PyYAML's safe loader with two traps of YAML 1.1 closed.

* A key given twice in one mapping is an error (YAML 1.1 keeps the last silently, so
  ``parallelism: {tp: 2, tp: 4}`` would run tp 4 without a word).
* ``5e-1`` and ``1E2`` are numbers, as in YAML 1.2 and JSON (YAML 1.1 reads an exponent without a dot as a
  string, which the schema then rejected as "must be a number; got '5e-1'").
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from typing import Any

import yaml
from yaml.constructor import ConstructorError

# exponent floats without a dot (YAML 1.2 / JSON); everything else resolves as PyYAML's 1.1 rules say
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$")


class StrictLoader(yaml.SafeLoader):
    """Safe loader that rejects duplicate keys and reads 1.2-style exponent floats."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: merged keys may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):  # PyYAML's own error says so below
                continue
            first = seen.setdefault(key, key_node)
            if first is not key_node:
                raise ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"key {key!r} is given twice (first at line {first.start_mark.line + 1}); "
                    "YAML would silently keep the last",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


StrictLoader.yaml_implicit_resolvers = {  # a copy: yaml.SafeLoader keeps its own table
    k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _first in "-+0123456789.":
    StrictLoader.yaml_implicit_resolvers.setdefault(_first, []).append(
        ("tag:yaml.org,2002:float", _EXPONENT_FLOAT)
    )


def loads(text: str) -> Any:
    """Parse one YAML document with :class:`StrictLoader` (raises ``yaml.YAMLError`` with a position)."""
    return yaml.load(text, Loader=StrictLoader)
