"""YAML out of plain data: every generated file goes through PyYAML, so it is always well-formed."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml


class _Dumper(yaml.SafeDumper):
    """Block style everywhere; multi-line strings (CI scripts) as readable ``|`` literals."""

    def ignore_aliases(self, data: Any) -> bool:
        return True  # no &id001 anchors: shared label dicts are written out in full, as humans expect

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)  # indent list items under their key, as kubectl does


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str)


def dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1000,
                     allow_unicode=True)


def dump_all(docs: Iterable[Any], header: str = "") -> str:
    """Several documents in one stream, with an optional ``#`` comment header (YAML has no other place)."""
    head = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return head + yaml.dump_all(list(docs), Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                                width=1000, allow_unicode=True, explicit_start=True)
