"""Deployment: the streaming step (and optionally the parallel forward) through ``torch.export``.

The step is exported as a pure function of flat tensors (:class:`hybriddsl.streaming.StepFunction`)::

    (x [batch, embed_dim] or ids [batch], *state) -> (y [batch, ...], *new_state)

with ``state`` the tensors of ``model.init_state(batch)`` in :func:`hybriddsl.streaming.flatten_state` order.
The ``.pt2`` file carries ``hybriddsl.json`` (``torch.export.load(..., extra_files=...)``): the state tensors'
names, shapes and dtypes (all zeros at the start), the input shape and the ``.hyb`` source, so a runtime with
no hybriddsl can allocate the state and drive the loop. A state must have a fixed shape to be exported: every
attention layer needs a window (a growing KV cache changes shape every frame).

``--forward`` also writes ``<name>.forward.pt2``: ``forward(x [batch, seq, embed_dim])`` with a dynamic
``seq`` where the model allows it (static at ``seq_len`` otherwise).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hybriddsl.errors import ExportError, HybFileError, HybOptionError, Span, first_line
from hybriddsl.fileio import atomic_path
from hybriddsl.streaming import flatten_state, growing_state, state_labels, step_function

META = "hybriddsl.json"


def _example_frame(model: nn.Module, batch: int) -> torch.Tensor:
    p = next(model.parameters())
    if model.vocab:
        return torch.zeros(batch, dtype=torch.long, device=p.device)
    return torch.randn(batch, model.embed_dim, device=p.device, dtype=p.dtype)


def step_metadata(model: nn.Module, batch: int) -> dict[str, Any]:
    """What a runtime needs to drive the exported step: input and state layout, and the model's source."""
    names, tensors = flatten_state(model.init_state(batch))
    x = _example_frame(model, batch)
    return {
        "format": "hybriddsl-step/1",
        "batch": batch,
        "input": {"shape": list(x.shape), "dtype": str(x.dtype)},
        "state": [{"name": n, "shape": list(t.shape), "dtype": str(t.dtype)} for n, t in zip(names, tensors)],
        "outputs": ["y"] + [f"new.{n}" for n in names],
        "source": getattr(model, "hyb_source", None),
    }


def export_step(model: nn.Module, batch: int = 1) -> torch.export.ExportedProgram:
    """``torch.export`` of one streaming position: ``(x, *state) -> (y, *new_state)`` at a fixed ``batch``."""
    if batch < 1:
        raise HybOptionError(f"export batch must be >= 1, got {batch}")
    grow = growing_state(model, batch)
    if grow:
        raise HybOptionError(
            "the step cannot be exported: these state tensors grow every frame: "
            + ", ".join(state_labels(model, grow))
            + " (give every attention layer a window, e.g. attention.window = 60)"
        )
    fn, state = step_function(model.eval(), batch)
    with torch.no_grad():
        return torch.export.export(fn, (_example_frame(model, batch), *state), strict=False)


def export_forward(model: nn.Module, batch: int = 1, seq: int | None = None) -> torch.export.ExportedProgram:
    """``torch.export`` of the parallel forward on [batch, seq, embed_dim] (or ids [batch, seq]).

    ``seq`` defaults to :data:`FORWARD_SEQ` (or the model's ``seq_len`` when shorter): tracing time grows with
    the length (the chunked kernels loop over chunks in Python), 2 min at 2,048 against seconds at 64 on 2
    cores. The sequence dim is exported as dynamic where the model's ops allow it; chunked kernels still bound
    it to the lengths with the same number of chunks, and some models specialize it: :func:`forward_lengths`
    says which lengths the program accepts.
    """
    settings = getattr(getattr(model, "graph", None), "settings", {}) or {}
    seq = seq or min(settings.get("seq_len") or FORWARD_SEQ, FORWARD_SEQ)
    p = next(model.parameters())
    if model.vocab:
        x = torch.zeros(batch, seq, dtype=torch.long, device=p.device)
    else:
        x = torch.randn(batch, seq, model.embed_dim, device=p.device, dtype=p.dtype)
    model.eval()
    with torch.no_grad():
        try:
            return torch.export.export(model, (x,), dynamic_shapes=({1: torch.export.Dim.AUTO},), strict=False)
        except Exception:  # a data-dependent length somewhere: a static export still serves fixed windows
            return torch.export.export(model, (x,), strict=False)


def save_step(model: nn.Module, path: str | Path, batch: int = 1, aot: bool = False) -> Path:
    """Write the exported step to ``path`` (.pt2, atomically) with :data:`META` inside; returns the path.

    ``aot=True`` also compiles the step with AOTInductor (weights inside) into the same file: the program still
    loads with ``torch.export.load``, and the compiled one with ``torch._inductor.aoti_load_package`` (Python)
    or ``torch::inductor::AOTIModelPackageLoader`` (C++, no Python at all)."""
    ep = export_step(model, batch)
    meta = json.dumps(step_metadata(model, batch))
    files = _aoti_files(ep) if aot else None
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object: the temporary name does not end in .pt2
            if files is None:
                torch.export.save(ep, f, extra_files={META: meta})
            else:
                from torch.export.pt2_archive._package import package_pt2

                package_pt2(f, exported_programs={"model": ep}, aoti_files={"model": files}, extra_files={META: meta})
    return Path(path)


def _aoti_files(ep: torch.export.ExportedProgram) -> list:
    """AOTInductor's compiled files for an exported step (what ``package_pt2`` bundles)."""
    import warnings

    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", FutureWarning)  # torch-internal pytree deprecations
            return torch._inductor.aot_compile(
                ep.module(), tuple(ep.example_inputs[0]), options={"aot_inductor.package": True}
            )
    except Exception as e:  # a compiler missing or failing: the plain export still works without --aot
        raise ExportError(f"AOTInductor could not compile the step ({first_line(e)}); export without --aot") from e


FORWARD_SEQ = 64  # default example length of export_forward


def forward_lengths(ep: torch.export.ExportedProgram) -> tuple[int, int | None]:
    """(shortest, longest or None for unbounded) sequence length the exported forward accepts."""
    (name,) = ep.graph_signature.user_inputs
    node = next(n for n in ep.graph.nodes if n.name == name)
    t = node.meta["val"].shape[1]
    if isinstance(t, int):
        return t, t
    r = ep.range_constraints.get(t.node.expr)
    if r is None:
        return 0, None
    hi = r.upper
    return int(r.lower), (None if not getattr(hi, "is_finite", True) or hi > 2**62 else int(hi))


def save_forward(model: nn.Module, path: str | Path, batch: int = 1, seq: int | None = None) -> Path:
    """Write the exported parallel forward to ``path`` (.pt2, atomically)."""
    ep = export_forward(model, batch, seq)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.export.save(ep, f)
    return Path(path)


def load_step(path: str | Path, trust: bool = False) -> tuple[torch.export.ExportedProgram, dict[str, Any]]:
    """(program, metadata) of a file written by :func:`save_step`.

    ``torch.export.load`` unpickles (``weights_only=False``) every archive entry marked ``use_pickle``, custom and
    opaque objects, and any sample-input or legacy ``.pt`` blob that a safe load refuses. A file from someone else
    could run code that way, so such archives are refused unless ``trust=True``; :func:`save_step` never writes
    them. Raises HybFileError for a file that is not a readable ``.pt2`` archive."""
    if not trust:
        check_archive(path)
    extra = {META: ""}
    try:
        ep = torch.export.load(path, extra_files=extra)
    except Exception as e:
        raise HybFileError(f"{path} is not a loadable .pt2 export ({first_line(e)})", Span(0, 0, 1, str(path))) from e
    try:
        meta = json.loads(extra[META]) if extra[META] else {}
    except ValueError as e:
        raise HybFileError(f"{path}: {META} is not JSON ({e})", Span(0, 0, 1, str(path))) from None
    return ep, meta


def check_archive(path: str | Path) -> None:
    """Raise HybFileError when the ``.pt2`` archive at ``path`` holds anything that loading would unpickle."""
    import io
    import zipfile

    where = Span(0, 0, 1, str(path))

    def refuse(what: str) -> HybFileError:
        return HybFileError(
            f"{path} holds {what}, which loading would unpickle (and so could run code); refused",
            where,
            hint="only if you trust whoever made this file: load_step(path, trust=True)",
        )

    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise HybFileError(f"{path} is not a .pt2 archive ({e})", where) from None
    with archive:
        for name in archive.namelist():
            inner = name.split("/", 1)[1] if "/" in name else name
            if inner.startswith("data/") and inner.endswith("_config.json"):
                try:
                    config = json.loads(archive.read(name)).get("config", {})
                    entries = list(config.items())
                except (ValueError, AttributeError):
                    raise HybFileError(f"{path}: {inner} is not a payload config", where) from None
                for fqn, meta in entries:
                    if not isinstance(meta, dict):
                        raise HybFileError(f"{path}: {inner} is not a payload config", where)
                    entry = str(meta.get("path_name", ""))
                    if meta.get("use_pickle") or not entry.startswith(("weight_", "tensor_")):
                        raise refuse(f"a pickled entry ({fqn!r} -> {entry!r})")
            elif inner.endswith(".pt"):  # sample inputs (and legacy weights): loaded with a pickle fallback
                try:
                    torch.load(io.BytesIO(archive.read(name)), weights_only=True)
                except Exception:
                    raise refuse(f"a pickle that a safe load refuses ({inner})") from None


def initial_state(meta: dict[str, Any], device: torch.device | str | None = None) -> list[torch.Tensor]:
    """Zero state tensors as the metadata describes them (the model's initial state is all zeros)."""
    return [
        torch.zeros(s["shape"], dtype=getattr(torch, s["dtype"].removeprefix("torch.")), device=device)
        for s in meta["state"]
    ]
