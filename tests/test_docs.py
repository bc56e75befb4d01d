"""The README's key table against the schema: every key, its default and its choices, so the docs cannot drift."""

from __future__ import annotations

import re
from enum import Enum

import yaml
from omegaconf import OmegaConf

from mlbasics.config import PROJECT_DIR, Config

ROW = re.compile(r"^\| `([\w.]+)` \| (.*?) \| (.*) \|$")


def readme_table() -> dict[str, tuple[str, str]]:
    text = (PROJECT_DIR / "README.md").read_text()
    section = text[text.index("## Configuration"):text.index("### Why these defaults")]
    return {m.group(1): (m.group(2), m.group(3)) for m in map(ROW.match, section.splitlines()) if m}


def schema_leaves() -> dict[str, object]:
    schema = OmegaConf.structured(Config)
    leaves = {}

    def walk(node, prefix):
        for key in node:
            value = node._get_node(key)
            if OmegaConf.is_dict(value):
                walk(value, f"{prefix}{key}.")
            else:
                leaves[f"{prefix}{key}"] = value
    walk(schema, "")
    return leaves


GROUPS = ("dataset", "model", "optimizer")


def test_every_key_is_in_the_table_and_nothing_else():
    assert sorted(readme_table()) == sorted([*schema_leaves(), *GROUPS])


def test_defaults_in_the_table_are_the_schemas(make_cfg):
    table, composed = readme_table(), make_cfg()
    for key, node in schema_leaves().items():
        cell = table[key][0]
        parent, _, leaf = key.rpartition(".")
        if OmegaConf.is_interpolation(OmegaConf.select(composed, parent) if parent else composed, leaf):
            # dataset.root: resolved at run time
            assert "MLBASICS_DATA" in cell, key
            continue
        written = yaml.safe_load(re.match(r"`([^`]*)`", cell).group(1))
        value = OmegaConf.select(composed, key)
        value = value.value if isinstance(value, Enum) else value
        value = list(value) if OmegaConf.is_list(value) else value
        assert written == value, f"{key}: README says {written!r}, the schema {value!r}"


def test_choices_in_the_table_are_the_schemas():
    table = readme_table()
    for key, node in schema_leaves().items():
        enum = node._metadata.object_type if hasattr(node, "_metadata") else None
        if isinstance(enum, type) and issubclass(enum, Enum):
            allowed = set(re.findall(r"`([^`]*)`", table[key][1]))
            assert {member.value for member in enum} <= allowed, key
    for group in GROUPS:
        options = {p.stem for p in (PROJECT_DIR / "conf" / group).glob("*.yaml")}
        assert set(re.findall(r"`([^`]*)`", table[group][1])) >= options, group
        assert re.match(r"`([^`]*)`", table[group][0]).group(1) in options
