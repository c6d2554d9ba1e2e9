"""Megatron-LM hybrid layer patterns (``--hybrid-override-pattern``, Nemotron-H's ``hybrid_override_pattern``).

One letter per residual layer (Megatron-LM ``megatron/core/models/hybrid``/``ssm`` layer allocation):
``M`` a Mamba layer (Megatron's MambaLayer runs a Mamba-2 mixer, so ``M`` becomes ``mamba2`` by default),
``*`` self-attention (attention only: Megatron's MLPs are the separate ``-`` letters, so ``ffn=false``),
``-`` an MLP, ``E`` a mixture-of-experts MLP, ``G`` a gated DeltaNet layer. ``|`` separates pipeline stages
and ``/`` the multi-token-prediction layers, which follow the main decoder: only what precedes the first ``/`` is
the model. Like Megatron, lower-case letters and whitespace are refused; ``D`` (DeepSeek sparse attention) and
``+`` (multi-latent attention) are Megatron letters without a layer kind here.
"""

from __future__ import annotations

import os
from typing import Any

from hybriddsl.errors import Span
from hybriddsl.interop.common import ConvertError, HybText, compile_source, reject_ties, sublayers
from hybriddsl.ir import Graph

LETTERS = {"M": "mamba", "*": "attention", "-": "ffn", "E": "moe", "G": "gated_delta_net"}
UNSUPPORTED = {"D": "DSA (DeepSeek sparse attention)", "+": "MLA (multi-latent attention)"}
TOKENS = {"mamba": "M", "mamba2": "M2", "attention": "A", "ffn": "F", "moe": "E", "gated_delta_net": "GD"}
KIND_LETTER = {"mamba": "M", "mamba2": "M", "attention": "*", "ffn": "-", "moe": "E", "gated_delta_net": "G"}


def parse_pattern(pattern: str) -> list[str]:
    """Megatron letters -> layer kinds (``mamba`` for M). ``|`` (pipeline-stage marks) is skipped; the
    multi-token-prediction part after ``/`` is left out."""
    if not isinstance(pattern, str) or not pattern:
        raise ConvertError("the Megatron pattern is empty: give letters such as 'M-M*-'")
    main = pattern.split("/", 1)[0]
    kinds = []
    for i, ch in enumerate(main):
        span = Span(1, i + 1, 1, "<megatron pattern>")
        if ch == "|":
            continue
        if ch in UNSUPPORTED:
            raise ConvertError(
                f"'{ch}' is Megatron's {UNSUPPORTED[ch]}, which hybriddsl does not support", span, pattern
            )
        if ch not in LETTERS:
            what = "whitespace" if ch.isspace() else f"'{ch}'"
            hint = " (Megatron's letters are upper case)" if ch.upper() in LETTERS else ""
            raise ConvertError(
                f"{what} is not a Megatron hybrid-pattern letter{hint} "
                "(M = Mamba, * = attention, - = MLP, E = MoE, G = gated DeltaNet, | = stage, / = MTP)",
                span,
                pattern,
            )
        kinds.append(LETTERS[ch])
    if not kinds:
        raise ConvertError(f"the Megatron pattern {pattern!r} has no layers before its first '/'")
    return kinds


def from_megatron(pattern: str, mamba: str = "mamba2", **settings: Any) -> str:
    """A Megatron-LM hybrid pattern (``"M-M*-"``) -> .hyb source text.

    ``mamba`` picks the kind an ``M`` becomes (``mamba2``, Megatron's own, or ``mamba``). ``settings`` are written
    as model settings (``hidden=1024``, ``heads=8``, ``attention.kv_heads=2``).
    """
    if mamba not in ("mamba", "mamba2"):
        raise ConvertError(f"--mamba must be mamba or mamba2, got {mamba!r}")
    kinds = parse_pattern(pattern)
    doc = HybText(
        f'converted from the Megatron-LM hybrid pattern "{pattern.strip()}" '
        f"(M = {mamba}, * = attention, - = MLP, E = MoE, G = gated DeltaNet)"
    )
    for k, v in settings.items():
        doc.set(k, v)
    if "attention" in kinds and "attention.ffn" not in settings and "ffn" not in settings:
        doc.set("attention.ffn", False)  # the '-' letters are the MLPs
    doc.stack = [TOKENS[mamba if k == "mamba" else k] for k in kinds]
    return doc.render()


def to_megatron(src: str | os.PathLike | Graph, **settings: Any) -> str:
    """.hyb source (text, path or compiled Graph) -> the Megatron letters, one per residual layer.

    Companion sub-blocks count as layers (``A`` with ``ffn=true`` is ``*-``). Raises ConvertError for layer kinds,
    parallel blocks, shared blocks or tied weights that Megatron's pattern cannot say.
    """
    graph = compile_source(src, **settings)
    subs = sublayers(graph)
    reject_ties(subs, "a Megatron pattern")
    out = []
    for s in subs:
        if s.role == "shared":
            raise ConvertError(
                f"{s.where()} is a shared block (one set of weights used several times); "
                "a Megatron pattern has no shared layers"
            )
        if s.kind not in KIND_LETTER:
            raise ConvertError(
                f"{s.where()}: Megatron's hybrid pattern has no letter for '{s.kind}' "
                "(it has M = Mamba, * = attention, - = MLP, E = MoE, G = gated DeltaNet)"
            )
        out.append(KIND_LETTER[s.kind])
    return "".join(out)
