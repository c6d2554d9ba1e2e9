"""Hugging Face ``config.json`` files of hybrid model families <-> .hyb.

``from_hf(config)`` picks the family by ``model_type`` (or, when that is missing, by the fields only that family
has) and writes .hyb text; ``to_hf(src, family)`` compiles .hyb and writes that family's config fields, or raises
ConvertError saying what the family cannot express. One module per family holds the field mapping.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

from hybriddsl.errors import suggest
from hybriddsl.interop import falcon_h1, jamba, nemotron_h, qwen3_next, recurrent_gemma, zamba2
from hybriddsl.interop.common import ConvertError, collect_problems, compile_source
from hybriddsl.ir import Graph

FAMILIES: dict[str, ModuleType] = {
    "jamba": jamba,
    "zamba2": zamba2,
    "nemotron_h": nemotron_h,
    "qwen3_next": qwen3_next,
    "recurrent_gemma": recurrent_gemma,
    "falcon_h1": falcon_h1,
}
DISPLAY = {k: "hf-recurrentgemma" if k == "recurrent_gemma" else f"hf-{k.replace('_', '-')}" for k in FAMILIES}
ALIASES = {"recurrentgemma": "recurrent_gemma", "nemotronh": "nemotron_h", "falconh1": "falcon_h1"}


def family_name(name: str) -> str:
    """'hf-nemotron-h', 'Nemotron_H', 'recurrentgemma' -> the canonical family key; ConvertError when unknown."""
    key = name.lower().removeprefix("hf-").removeprefix("hf_").replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in FAMILIES:
        names = list(DISPLAY.values())
        raise ConvertError(
            f"unknown Hugging Face family '{name}'" + suggest(name.lower(), names),
            hint="known: " + ", ".join(names),
        )
    return key


def detect(config: dict[str, Any]) -> str:
    """The family of an HF config: its ``model_type`` when known, else the family whose fields it has."""
    if not isinstance(config, dict):
        raise ConvertError(f"a Hugging Face config is a JSON object, got {type(config).__name__}")
    mt = config.get("model_type")
    if mt in FAMILIES:
        return mt
    if mt is None:
        for key, mod in FAMILIES.items():
            if mod.detect(config):
                return key
    known = ", ".join(FAMILIES)
    what = f"model_type '{mt}'" if mt else "a config without model_type whose fields match no known family"
    raise ConvertError(f"cannot convert {what}: known hybrid families are {known}")


def from_hf(config: dict[str, Any], family: str | None = None) -> str:
    """A Hugging Face config (the dict of config.json) -> .hyb source text. ``family`` skips auto-detection."""
    key = family_name(family) if family else detect(config)
    try:
        return FAMILIES[key].from_config(config)
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError, ZeroDivisionError) as e:
        # a config is untrusted input: a field of the wrong type or value is the file's fault, not a bug
        raise ConvertError(f"the {key} config has a malformed field ({type(e).__name__}: {e})") from None


def to_hf(src: str | os.PathLike | Graph, family: str, **settings: Any) -> dict[str, Any]:
    """.hyb source (text, path or compiled Graph) -> the config fields of ``family`` ('jamba', 'hf-nemotron-h',
    ...). Raises ConvertError naming the layer and the reason when the family cannot express the model."""
    key = family_name(family)
    graph = compile_source(src, **settings)
    with collect_problems():  # every problem of the model in one error, not one per run
        return FAMILIES[key].to_config(graph)
