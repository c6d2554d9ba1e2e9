"""RoPE fields of Hugging Face configs <-> our attention options (no torch here).

transformers 5 keeps RoPE in ``rope_parameters`` (``rope_type``, ``rope_theta``, ``factor``, ...); older files
have ``rope_theta`` at the top level and the scaling in ``rope_scaling`` (``type`` or ``rope_type``). Read:
``default`` (plain RoPE), ``linear``, ``llama3`` and ``yarn`` (attention's ``rope_scaling`` and its
``rope_*`` options, formulas in hybriddsl/layers/rope.py); any other ``rope_type`` (``dynamic``, ``longrope``,
...) is a ConvertError naming the field.
"""

from __future__ import annotations

import math
from typing import Any

from hybriddsl import registry
from hybriddsl.interop.common import ConvertError, as_float, as_int

SUPPORTED = ("default", "linear", "llama3", "yarn")
# our attention options that a config's rope fields set (every layer has the same)
KEYS = (
    "rope_theta",
    "rope_scaling",
    "rope_factor",
    "rope_original",
    "rope_low_freq",
    "rope_high_freq",
    "rope_beta_fast",
    "rope_beta_slow",
    "rope_mscale",
    "rope_truncate",
)


def _params(cfg: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """(the rope dict, its field name) of a config."""
    for field in ("rope_parameters", "rope_scaling"):
        rp = cfg.get(field)
        if rp:
            if not isinstance(rp, dict):
                raise ConvertError(f"{field} must be an object, got {rp!r}")
            return rp, field
    return {}, "rope_parameters"


def rope_type(cfg: dict[str, Any]) -> str:
    """The config's ``rope_type`` (``default`` without one)."""
    rp, _ = _params(cfg)
    return rp.get("rope_type", rp.get("type", "default"))


def read(cfg: dict[str, Any], family: str, default_theta: float = 10000.0) -> dict[str, Any]:
    """Our attention options for the config's RoPE: ``rope_theta`` and, for a scaled RoPE, ``rope_scaling`` and
    its ``rope_*`` options. ConvertError naming the field for an unsupported ``rope_type``."""
    rp, field = _params(cfg)
    kind = rope_type(cfg)
    if kind not in SUPPORTED:
        raise ConvertError(
            f"{field}.rope_type {kind!r} is not supported for {family} (supported: {', '.join(SUPPORTED)})"
        )
    theta = rp.get("rope_theta", cfg.get("rope_theta", default_theta))
    out: dict[str, Any] = {"rope_theta": as_float(theta, f"{field}.rope_theta")}
    if kind == "default":
        return out
    out["rope_scaling"] = kind
    orig = cfg.get("original_max_position_embeddings") or rp.get("original_max_position_embeddings")
    if orig is None and kind in ("llama3", "yarn"):  # transformers' default (standardize_rope_params)
        orig = cfg.get("max_position_embeddings")
        if orig is None:
            raise ConvertError(f"{field}: rope_type {kind} needs original_max_position_embeddings")
    factor = rp.get("factor")
    if factor is None and kind == "yarn" and orig:  # transformers: max_position_embeddings / original
        factor = as_int(cfg.get("max_position_embeddings"), "max_position_embeddings") / as_int(orig, "original")
    if factor is None:
        raise ConvertError(f"{field}.factor is missing: rope_type {kind} needs it")
    factor = as_float(factor, f"{field}.factor")
    if not factor > 0:
        raise ConvertError(f"{field}.factor must be > 0, got {factor}")
    out["rope_factor"] = factor
    if kind in ("llama3", "yarn"):
        out["rope_original"] = as_int(orig, f"{field}.original_max_position_embeddings")
    if kind == "llama3":
        for key, ours in (("low_freq_factor", "rope_low_freq"), ("high_freq_factor", "rope_high_freq")):
            if key not in rp:
                raise ConvertError(f"{field}.{key} is missing: rope_type llama3 needs it")
            out[ours] = as_float(rp[key], f"{field}.{key}")
        if not out["rope_high_freq"] > out["rope_low_freq"]:
            raise ConvertError(f"{field}: high_freq_factor must be larger than low_freq_factor")
    if kind == "yarn":
        out["rope_beta_fast"] = as_float(rp.get("beta_fast") or 32.0, f"{field}.beta_fast")
        out["rope_beta_slow"] = as_float(rp.get("beta_slow") or 1.0, f"{field}.beta_slow")
        af, ms, msa = rp.get("attention_factor"), rp.get("mscale"), rp.get("mscale_all_dim")
        if af is None and ms and msa:  # DeepSeek-style: a ratio of two mscales

            def m(scale: float, k: float) -> float:
                return 1.0 if scale <= 1 else 0.1 * k * math.log(scale) + 1.0

            af = m(factor, as_float(ms, f"{field}.mscale")) / m(factor, as_float(msa, f"{field}.mscale_all_dim"))
        if af is not None:
            out["rope_mscale"] = as_float(af, f"{field}.attention_factor")
        if rp.get("truncate", True) is False:
            out["rope_truncate"] = False
    return out


def write(opts: dict[str, Any]) -> dict[str, Any]:
    """``rope_parameters`` for attention options ``opts`` (those of :data:`KEYS`; missing = the spec's default)."""
    opts = registry.complete("attention", opts)
    kind = opts["rope_scaling"]
    out: dict[str, Any] = {
        "rope_type": "default" if kind == "none" else kind,
        "rope_theta": float(opts["rope_theta"]),
    }
    if kind == "none":
        return out
    out["factor"] = float(opts["rope_factor"])
    if kind in ("llama3", "yarn"):
        out["original_max_position_embeddings"] = int(opts["rope_original"])
    if kind == "llama3":
        out["low_freq_factor"] = float(opts["rope_low_freq"])
        out["high_freq_factor"] = float(opts["rope_high_freq"])
    if kind == "yarn":
        out["beta_fast"] = float(opts["rope_beta_fast"])
        out["beta_slow"] = float(opts["rope_beta_slow"])
        if opts["rope_mscale"] is not None:
            out["attention_factor"] = float(opts["rope_mscale"])
        if opts["rope_truncate"] is False:
            out["truncate"] = False
    return out


def is_plain(opts: dict[str, Any]) -> bool:
    """True when the attention options use no RoPE scaling."""
    return registry.complete("attention", opts)["rope_scaling"] == "none"
