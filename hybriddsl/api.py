"""The Python API: ``parse``, ``compile``, ``parse_and_build``, ``render``, ``save`` and ``load``.

>>> model = parse_and_build("M M A M GLA FFN; shared attn@2,4,6", embed_dim=32)
>>> model(torch.randn(2, 16, 32)).shape      # [batch, hidden] from the last position
torch.Size([2, 256])
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybriddsl import limits as _limits
from hybriddsl import syntax
from hybriddsl.errors import HybError, HybFileError, LimitError, Span, UntrustedCodeError
from hybriddsl.fileio import SourceText, atomic_path, source_of
from hybriddsl.ir import CompileOptions, Graph
from hybriddsl.passes import run

if TYPE_CHECKING:  # torch and the lowering are imported by the functions that build modules
    import torch

    from hybriddsl.lower import HybridModel

FORMAT = "hybriddsl-model/1"


def parse(src: str, file: str = "<string>") -> syntax.Program:
    """Parse .hyb source text into a Program (the AST). Raises HybSyntaxError with file:line:col."""
    return syntax.parse(src, file)


def compile(
    src_or_path: str | os.PathLike,
    debug: bool = False,
    dump=None,
    passes=None,
    trust_custom: bool = False,
    limits: _limits.Limits | None = None,
    **settings: Any,
) -> Graph:
    """Source or path -> the processed Graph (all passes run). Keyword arguments override file settings.

    Nothing here imports or calls a custom factory (its layers count as unknown). ``trust_custom=True`` marks the
    graph as allowed to build the ``custom(fn="mod:attr")`` factories its text names (see :mod:`hybriddsl.trust`);
    ``limits`` replaces the default :class:`hybriddsl.limits.Limits` for this call."""
    with _limits.using(limits):
        text, file = source_of(src_or_path)
        prog = syntax.parse(text, file)
        for name, value in settings.items():
            scope, _, key = name.rpartition(".")
            span = Span.none(f"<keyword argument {name}={value!r}>")
            prog.settings.append(syntax.Setting(key, scope or None, syntax.Value(value, span), span))
        g = run(prog, passes=passes, debug=debug, dump=dump)
    g.compiled = CompileOptions(dict(settings), bool(trust_custom), _limits.resolve(limits))
    return g


def parse_and_build(
    src_or_path: str | os.PathLike,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    trust_custom: bool = False,
    limits: _limits.Limits | None = None,
    max_params: int | None = None,
    **settings: Any,
) -> HybridModel:
    """Source or path -> a ready ``nn.Module``. ``settings`` override the file's (``embed_dim=32``, ``hidden=64``).

    ``trust_custom=True`` allows ``custom(fn="mod:attr")`` strings in the text to be imported and called (only for
    text you trust; a callable passed in ``settings`` needs no switch). The parameter count is checked against
    ``max_params`` (and the memory available) before any tensor is allocated."""
    from hybriddsl.lower import lower
    from hybriddsl.passes.count import fill_built

    lim = _limits.resolve(limits, max_params=max_params)
    graph = compile(src_or_path, trust_custom=trust_custom, limits=lim, **settings)
    model = lower(graph, device=device, dtype=dtype)
    fill_built(graph, model)
    return model


def render(src_or_path: str | os.PathLike | Graph, path: str | os.PathLike, **settings: Any) -> Path:
    """Draw the model to ``path`` (.svg, .png, .pdf or .dot); returns the path written."""
    from hybriddsl.rendering import render_graph

    graph = src_or_path if isinstance(src_or_path, Graph) else compile(src_or_path, **settings)
    return render_graph(graph, path)


_RESERVED = frozenset({"src_or_path", "debug", "dump", "passes", "trust_custom", "limits", "device", "dtype"})
PAYLOAD_KEYS = frozenset({"format", "source", "source_sha256", "file", "overrides", "state_dict"})


def source_hash(source: str) -> str:
    """The SHA-256 of a source text, stored beside the weights so that an edited source is caught."""
    import hashlib

    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def _saveable_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """Overrides as plain values: a callable (custom's fn) becomes its importable ``"module:qualname"``."""
    from hybriddsl.specs.custom import importable_name

    out = {}
    for k, v in overrides.items():
        if callable(v):
            name = importable_name(v)
            if name is None:
                raise HybFileError(
                    f"cannot save setting {k}={v!r}: a Python callable is stored by name, and this one cannot be "
                    "imported by name",
                    Span(0, 0, 1, "<save>"),
                    hint="define the factory at module level in an importable module and pass it (or its "
                    '"module:name" string); load then needs trust_custom=True',
                )
            v = name
        out[k] = v
    return out


def save(model: HybridModel, path: str | os.PathLike) -> None:
    """Write weights + .hyb source (+ overrides, + the source's SHA-256) to ``path`` atomically; ``load`` rebuilds
    the model. A callable passed as an override is stored as its ``"module:qualname"``."""
    import torch

    payload = {
        "format": FORMAT,
        "source": model.hyb_source,
        "source_sha256": source_hash(model.hyb_source),
        "file": model.hyb_file,
        "overrides": _saveable_overrides(model.hyb_overrides),
        "state_dict": model.state_dict(),
    }
    try:
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
    except OSError as e:
        raise HybFileError(f"cannot write {path}: {e.strerror}") from None


def _check_payload(payload: Any, p: Path) -> None:
    """Raise HybFileError unless ``payload`` is a well-formed model payload (types only; the source is compiled
    later as text)."""
    import torch

    from hybriddsl import registry
    from hybriddsl.settings import model_setting

    where = Span(0, 0, 1, str(p))

    def bad(msg: str) -> HybFileError:
        return HybFileError(f"{p} is not a valid hybriddsl model file: {msg}", where)

    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise HybFileError(f"{p} is not a hybriddsl model file (no '{FORMAT}' header)", where)
    unknown = sorted(str(k) for k in payload if k not in PAYLOAD_KEYS)
    if unknown:
        raise bad(f"unknown entries {', '.join(map(repr, unknown))}")
    for key in ("source", "state_dict"):
        if key not in payload:
            raise bad(f"no '{key}' entry")
    if not isinstance(payload["source"], str):
        raise bad(f"the source is a {type(payload['source']).__name__}, not text")
    if not isinstance(payload.get("file", ""), str):
        raise bad("the file name is not text")
    digest = payload.get("source_sha256")
    if digest is not None and digest != source_hash(payload["source"]):
        raise bad("the stored source does not match its SHA-256 (the source was edited after saving)")
    sd = payload["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise bad("the weights are not a mapping of names to tensors")
    overrides = payload.get("overrides", {})
    if not isinstance(overrides, dict):
        raise bad(f"the overrides are a {type(overrides).__name__}, not a mapping")
    option_names = {o.name for spec in registry.specs() for o in spec.options}
    for k, v in overrides.items():
        if not isinstance(k, str):
            raise bad(f"override name {k!r} is not text")
        scope, _, name = k.rpartition(".")
        known = (
            registry.canonical(scope) is not None and (registry.get(scope).open_options or name in option_names)
            if scope
            else model_setting(name) is not None or name in option_names
        )
        if not known or k in _RESERVED:  # a compile() keyword would be taken as an argument, not a setting
            raise bad(f"override '{k}' is not a setting name")
        if not isinstance(v, (int, float, str, bool)) and v is not None:
            raise bad(f"override '{k}' has a {type(v).__name__} value")


def _check_unpacked_size(p: Path, lim: _limits.Limits) -> None:
    """A ``torch.save`` file is a zip: refuse one whose entries unpack to more than the memory limits allow (a
    small compressed file can declare gigabytes), before ``torch.load`` reads any of it."""
    import zipfile

    try:
        with zipfile.ZipFile(p) as z:
            unpacked = sum(i.file_size for i in z.infolist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return  # not a zip: torch.load reports it
    cap = lim.max_bytes
    if cap is None:
        free = _limits.available_memory()
        cap = free // 2 if free is not None else None
    if cap is not None and unpacked > cap:
        raise _limits.exceeded(f"{p} unpacks to too many bytes", unpacked, "max_bytes", cap, Span(0, 0, 1, str(p)))


def load(
    path: str | os.PathLike,
    device: torch.device | str | None = None,
    trust_custom: bool = False,
    limits: _limits.Limits | None = None,
    max_params: int | None = None,
) -> HybridModel:
    """Rebuild a model saved with ``save`` (or ``hybdsl compile -o model.pt``): same source, same weights.

    The file is read with ``weights_only=True`` (no pickled code), its stored source is compiled as text (never
    read as a path), custom factories named in it need ``trust_custom=True``, and the model's size is checked
    against the limits (and against the weights in the file) before anything is allocated."""
    import torch

    from hybriddsl.lower import lower

    p = Path(path)
    if not p.exists():
        raise HybFileError(f"no such file: {p}", Span.none(str(p)))
    lim = _limits.resolve(limits, max_params=max_params)
    _check_unpacked_size(p, lim)
    try:
        payload = torch.load(p, map_location="cpu" if device is None else device, weights_only=True)
    except Exception as e:
        raise HybFileError(f"{p} is not a hybriddsl model file ({type(e).__name__}: {e})") from None
    _check_payload(payload, p)
    file = payload.get("file") or str(p)
    try:
        graph = compile(
            SourceText(payload["source"], file), trust_custom=trust_custom, limits=lim, **payload.get("overrides", {})
        )
    except (LimitError, UntrustedCodeError):
        raise  # refusals by policy, not a broken file
    except HybError as e:  # the stored source does not compile: the file is malformed
        raise HybFileError(
            f"{p} is not a valid hybriddsl model file: its stored source does not compile ({e.kind}: {e.message})",
            e.span,
            e.source,
            e.hint,
        ) from None
    stored = sum(t.numel() for t in payload["state_dict"].values())
    if not graph.totals.get("unknown") and stored < graph.totals["params"]:
        raise HybFileError(
            f"{p} is not a valid hybriddsl model file: it holds {stored:,} weights but its source describes "
            f"{graph.totals['params']:,} parameters",
            Span(0, 0, 1, str(p)),
        )
    from hybriddsl.passes.count import fill_built

    model = lower(graph, device=device)
    fill_built(graph, model)
    model.graph = graph
    model.hyb_file = payload.get("file", "")
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as e:  # missing/unexpected keys or shapes: the weights are not this source's
        raise HybFileError(f"{p}: the weights do not fit the stored source ({e})", Span(0, 0, 1, str(p))) from None
    return model
