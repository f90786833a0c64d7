"""Safe YAML loading that rejects a key written twice in one mapping (PyYAML keeps the
last one silently, which hides typos in manifests and datasets)."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import yaml

__all__ = ["load_yaml"]


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader whose mappings refuse duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False
                          ) -> dict[Hashable, Any]:
        first_line: dict[str, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            if key_node.value in first_line:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"found duplicate key {key_node.value!r} "
                    f"(first on line {first_line[key_node.value] + 1})",
                    key_node.start_mark,
                )
            first_line[key_node.value] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """Parse one YAML document safely.

    :raises yaml.YAMLError: malformed YAML or a duplicate key (with its position).
    """
    return yaml.load(text, Loader=_UniqueKeyLoader)
