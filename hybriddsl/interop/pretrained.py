"""Hugging Face checkpoints in and out: :func:`from_pretrained` and :func:`save_pretrained`.

Import reads a local model folder (nothing is downloaded): ``config.json`` becomes .hyb text through the family
module's ``from_config``, the model is built on the meta device (no memory, no init), and every weight is a
memory-mapped view of the safetensors file put in place with ``load_state_dict(assign=True)``; only tensors that
must change layout or dtype are copied. Peak memory is about one copy of the checkpoint.

A family module provides ``from_config(cfg) -> str``, ``to_config(graph) -> dict`` and
``weight_rules(cfg, model) -> list[Rule]`` (see :mod:`hybriddsl.interop.weights`); ``IGNORED`` (optional) lists
checkpoint tensor name suffixes that carry no weights of ours (e.g. cached rotary tables); ``SKIPPED``
(optional, ``{name prefix: what it is}``) parts of a checkpoint that are another model than the one imported
(Nemotron-H's ``mtp.*`` layers): skipped with a warning naming them.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from hybriddsl.errors import HybError, HybFileError, Span
from hybriddsl.fileio import atomic_path
from hybriddsl.interop.checkpoint import CONFIG, INDEX, SINGLE, Checkpoint, read_config
from hybriddsl.interop.common import ConvertError
from hybriddsl.interop.weights import Group, Rule
from hybriddsl.lower import HybridModel

DTYPE_NAMES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _family(cfg: dict[str, Any], family: str | None) -> tuple[str, Any]:
    from hybriddsl.interop.hf import FAMILIES, detect, family_name

    key = family_name(family) if family else detect(cfg)
    return key, FAMILIES[key]


def _has_weights(key: str, mod: Any) -> None:
    if not hasattr(mod, "weight_rules"):
        raise ConvertError(
            f"Hugging Face {key}: only its config converts so far (hybdsl convert config.json --from hf), "
            "not its weights"
        )


def _dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPE_NAMES:
        raise ConvertError(f"dtype must be one of {', '.join(DTYPE_NAMES)}, got {dtype!r}")
    return DTYPE_NAMES[dtype]


@contextlib.contextmanager
def _no_init():
    """Skip ``torch.nn.init``'s fills while building on the meta device: there is nothing to fill, and a meta
    ``normal_`` goes through torch's decompositions, whose first use imports torch._dynamo (seconds)."""
    saved = {n: getattr(torch.nn.init, n) for n in INIT_FNS}
    for n in INIT_FNS:
        setattr(torch.nn.init, n, lambda t, *a, **k: t)
    try:
        yield
    finally:
        for n, f in saved.items():
            setattr(torch.nn.init, n, f)


INIT_FNS = (
    "normal_",
    "uniform_",
    "trunc_normal_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "zeros_",
    "ones_",
    "constant_",
    "orthogonal_",
)


def build_meta(text: str, file: str) -> HybridModel:
    """The model for .hyb text, its parameters on the meta device (allocated by the load)."""
    from hybriddsl import api

    graph = api.compile(text)
    graph.file = file
    with torch.device("meta"), _no_init():
        model = HybridModel(graph)
    model.graph = graph
    model.hyb_file = file
    return model


def from_pretrained(
    path: str | os.PathLike,
    dtype: torch.dtype | str | None = None,
    family: str | None = None,
    device: torch.device | str | None = None,
) -> HybridModel:
    """A local Hugging Face model folder -> a :class:`HybridModel` with the checkpoint's weights.

    ``path`` holds ``config.json`` and ``model.safetensors`` (or a sharded ``model.safetensors.index.json``).
    The family comes from ``model_type`` unless ``family`` is given. ``dtype``: the parameters' dtype (default:
    the checkpoint's, from its embedding). The model takes token ids ``[batch, seq]`` and returns logits
    ``[batch, seq, vocab]``; it is in eval mode. Raises HybFileError / ConvertError naming the file and the
    field or tensor at fault.
    """
    folder = Path(path)
    cfg = read_config(folder)
    if not folder.is_dir():
        raise HybFileError(
            f"{folder} is a file: give the model folder (config.json and weights)", Span(0, 0, 1, str(folder))
        )
    key, mod = _family(cfg, family)
    _has_weights(key, mod)
    text = mod.from_config(cfg)
    ck = Checkpoint(folder)
    model = build_meta(text, str(folder))
    rules = mod.weight_rules(cfg, model)
    sd = load_tensors(ck, rules, model, _dtype(dtype), getattr(mod, "IGNORED", ()), key, getattr(mod, "SKIPPED", {}))
    model.load_state_dict(sd, strict=True, assign=True)
    if model.head is not None and model.graph.settings["tie_embeddings"]:
        model.head.weight = model.embed.weight  # assign=True replaced both: tie them again
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise ConvertError(f"the {key} importer left {left[0]} unset (a bug in hybriddsl/interop/{key}.py)")
    # no reference to ck is kept: each memory map stays open as long as a tensor made from it (torch.frombuffer
    # holds a reference), and nothing here ever closes one
    if device is not None:
        model = model.to(device)
    return model.eval()


def load_tensors(
    ck: Checkpoint,
    rules: list[Rule | Group],
    model: HybridModel,
    dtype: torch.dtype | None,
    ignored: tuple[str, ...],
    family: str,
    skipped: dict[str, str] | None = None,
) -> dict[str, torch.Tensor]:
    """Our state_dict from the checkpoint through ``rules`` (rules and groups): names, shapes and dtypes checked
    first."""
    where = ck.index_file
    ours = model.state_dict(keep_vars=True)
    by_key = {k: r for r in rules for k in r.keys}
    unmapped = [k for k in ours if k not in by_key]
    if unmapped:
        raise ConvertError(f"the {family} importer has no rule for our tensor '{unmapped[0]}' (a bug)")
    used = {n for r in rules for n in r.theirs}
    missing = [n for r in rules for n in r.theirs if n not in ck.infos]
    if missing:
        raise HybFileError(
            f"tensor '{missing[0]}' is missing"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + "; the config describes a model that needs it",
            Span(0, 0, 1, str(where)),
        )
    if model.head is not None and model.head.weight is model.embed.weight:
        ignored = (*ignored, "lm_head.weight")  # some tied checkpoints store the head too: the embedding wins
    for prefix, what in (skipped or {}).items():  # parts of the checkpoint that are not this model: said, skipped
        names = [n for n in ck.infos if n.startswith(prefix) and n not in used]
        if names:
            import warnings

            warnings.warn(
                f"{where}: {len(names)} tensors of {what} ({prefix}*, e.g. '{names[0]}') are not part of the "
                f"{family} main decoder and were not imported",
                stacklevel=3,
            )
            ignored = (*ignored, *names)
    extra = [n for n in ck.infos if n not in used and not n.endswith(tuple(ignored))]
    if extra:
        raise HybFileError(
            f"tensor '{extra[0]}' is not part of the model the config describes"
            + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""),
            Span(0, 0, 1, str(ck.infos[extra[0]].file)),
        )
    for n in used:
        info = ck.infos[n]
        if not info.dtype.is_floating_point:
            name = str(info.dtype).removeprefix("torch.")
            raise HybFileError(
                f"tensor '{n}' has dtype {name}; weights are floating point",
                Span(0, 0, 1, str(info.file)),
            )
    if dtype is None:
        dtype = ck.infos[by_key["embed.weight"].theirs[0]].dtype if "embed.weight" in by_key else torch.float32
    out = {}
    for r in rules:
        targets = [ours[k] for k in r.keys]
        expected = r.save_all(*(torch.empty(t.shape, device="meta") for t in targets))
        for n, e in zip(r.theirs, expected):
            info = ck.infos[n]
            if tuple(info.shape) != tuple(e.shape):
                raise HybFileError(
                    f"tensor '{n}' has shape {list(info.shape)}, the config says {list(e.shape)}",
                    Span(0, 0, 1, str(info.file)),
                )
        span = ck.span(r.theirs) if getattr(getattr(r, "transform", None), "concat0", False) else None
        if span is not None:  # parts back to back in the file: one view of them all, no copy
            ts, copied = (span.view(targets[0].shape),), False
        else:
            ts, copied = r.load_all(*(ck.tensor(n) for n in r.theirs)), r.copies
        for k, target, t in zip(r.keys, targets, ts):
            want = dtype if target.dtype.is_floating_point else target.dtype
            if t.dtype != want:
                t = t.to(want)
                copied = True
            out[k] = t
        if copied:
            for n in r.theirs:
                ck.release(n)
    return out


def save_pretrained(
    model: HybridModel, path: str | os.PathLike, family: str, dtype: torch.dtype | str | None = None
) -> Path:
    """Write ``config.json`` + ``model.safetensors`` for ``family`` ('mamba', 'hf-jamba', ...) into folder
    ``path`` (created if needed); ``transformers.AutoModelForCausalLM.from_pretrained(path)`` loads it.

    ``dtype``: the dtype written (default: the model's). Everything is computed before anything is written and
    each file is written atomically. Raises ConvertError naming the layer when the family cannot express the
    model. Returns the folder.
    """
    from hybriddsl.interop.hf import FAMILIES, family_name

    key = family_name(family)
    mod = FAMILIES[key]
    _has_weights(key, mod)
    graph = getattr(model, "graph", None)
    if graph is None:
        from hybriddsl import api

        graph = api.compile(model.hyb_source, **model.hyb_overrides)
    from hybriddsl.interop.common import collect_problems

    with collect_problems():  # every problem of the model in one error
        cfg = mod.to_config(graph)
    if model.vocab is None:
        raise ConvertError(f"a Hugging Face {key} checkpoint is a language model: the model needs 'vocab = N'")
    rules = mod.weight_rules(cfg, model)
    sd = model.state_dict()
    missing = [k for k in sd if k not in {k for r in rules for k in r.keys}]
    if missing:
        raise ConvertError(f"Hugging Face {key} has no place for our tensor '{missing[0]}'")
    want = _dtype(dtype) or next(model.parameters()).dtype
    out: dict[str, torch.Tensor] = {}
    for r in rules:
        for n, t in zip(r.theirs, r.save_all(*(sd[k].detach() for k in r.keys))):
            out[n] = t.to("cpu", want if t.dtype.is_floating_point else t.dtype).clone().contiguous()
    cfg.setdefault("dtype", str(want).removeprefix("torch."))
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise HybFileError(f"{folder} is a file: save_pretrained writes a folder", Span(0, 0, 1, str(folder)))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        from safetensors.torch import save_file

        with atomic_path(folder / SINGLE) as tmp:
            save_file(out, str(tmp), metadata={"format": "pt"})
        with atomic_path(folder / CONFIG) as tmp:
            tmp.write_text(json.dumps(cfg, indent=2) + "\n")
    except OSError as e:
        raise HybFileError(f"cannot write {folder}: {e.strerror}", Span(0, 0, 1, str(folder))) from None
    stale = folder / INDEX  # a sharded index left by an earlier save would shadow the new single file
    if stale.exists():
        stale.unlink()
    return folder


__all__ = ["HybError", "from_pretrained", "save_pretrained"]
