"""The Python API: ``parse``, ``compile``, ``parse_and_build``, ``render``, ``save`` and ``load``.

>>> model = parse_and_build("M M A M GLA FFN; shared attn@2,4,6", embed_dim=32)
>>> model(torch.randn(2, 16, 32)).shape      # [batch, hidden] from the last position
torch.Size([2, 256])
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybriddsl import syntax
from hybriddsl.errors import HybError, HybFileError, Span
from hybriddsl.fileio import atomic_path, read_source
from hybriddsl.ir import Graph
from hybriddsl.passes import run

if TYPE_CHECKING:  # torch and the lowering are imported by the functions that build modules
    import torch

    from hybriddsl.lower import HybridModel

FORMAT = "hybriddsl-model/1"


def _source(src_or_path: str | os.PathLike) -> tuple[str, str]:
    """(text, file name): a path (a Path, or a one-line string ending in .hyb) is read, anything else is source."""
    if isinstance(src_or_path, os.PathLike) or (
        isinstance(src_or_path, str) and "\n" not in src_or_path and src_or_path.strip().endswith(".hyb")
    ):
        path = Path(src_or_path)
        return read_source(path), str(path)
    if not isinstance(src_or_path, str):
        raise HybError(f"expected .hyb source text or a path, got {type(src_or_path).__name__}")
    return src_or_path, "<string>"


def parse(src: str, file: str = "<string>") -> syntax.Program:
    """Parse .hyb source text into a Program (the AST). Raises HybSyntaxError with file:line:col."""
    return syntax.parse(src, file)


def compile(src_or_path: str | os.PathLike, debug: bool = False, dump=None, passes=None, **settings: Any) -> Graph:
    """Source or path -> the processed Graph (all passes run). Keyword arguments override file settings."""
    text, file = _source(src_or_path)
    prog = syntax.parse(text, file)
    for name, value in settings.items():
        scope, _, key = name.rpartition(".")
        span = Span(0, 0, 1, f"<keyword argument {name}={value!r}>")
        prog.settings.append(syntax.Setting(key, scope or None, syntax.Value(value, span), span))
    g = run(prog, passes=passes, debug=debug, dump=dump)
    g.directives["overrides"] = dict(settings)
    return g


def parse_and_build(
    src_or_path: str | os.PathLike,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    **settings: Any,
) -> HybridModel:
    """Source or path -> a ready ``nn.Module``. ``settings`` override the file's (``embed_dim=32``, ``hidden=64``)."""
    from hybriddsl.lower import lower

    graph = compile(src_or_path, **settings)
    model = lower(graph, device=device, dtype=dtype)
    model.graph = graph
    return model


def render(src_or_path: str | os.PathLike | Graph, path: str | os.PathLike, **settings: Any) -> Path:
    """Draw the model to ``path`` (.svg, .png, .pdf or .dot); returns the path written."""
    from hybriddsl.rendering import render_graph

    graph = src_or_path if isinstance(src_or_path, Graph) else compile(src_or_path, **settings)
    return render_graph(graph, path)


def save(model: HybridModel, path: str | os.PathLike) -> None:
    """Write weights + .hyb source (+ overrides) to ``path`` atomically; ``load`` rebuilds the model."""
    import torch

    payload = {
        "format": FORMAT,
        "source": model.hyb_source,
        "file": model.hyb_file,
        "overrides": model.hyb_overrides,
        "state_dict": model.state_dict(),
    }
    try:
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
    except OSError as e:
        raise HybFileError(f"cannot write {path}: {e.strerror}") from None


def load(path: str | os.PathLike, device: torch.device | str | None = None) -> HybridModel:
    """Rebuild a model saved with ``save`` (or ``hybdsl compile -o model.pt``): same source, same weights."""
    import torch

    p = Path(path)
    if not p.exists():
        raise HybFileError(f"no such file: {p}", Span(0, 0, 1, str(p)))
    try:
        payload = torch.load(p, map_location=device or "cpu", weights_only=True)
    except Exception as e:
        raise HybFileError(f"{p} is not a hybriddsl model file ({type(e).__name__}: {e})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise HybFileError(f"{p} is not a hybriddsl model file (no '{FORMAT}' header)")
    model = parse_and_build(payload["source"], device=device, **payload["overrides"])
    model.hyb_file = payload["file"]
    model.load_state_dict(payload["state_dict"])
    return model
