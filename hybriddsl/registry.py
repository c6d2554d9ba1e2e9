"""The one registry of layer kinds: the table, name lookup and building.

Every kind is a frozen :class:`~hybriddsl.layer_spec.LayerSpec` (its types live in :mod:`hybriddsl.layer_spec`):
its canonical name and aliases, its typed options with defaults, the factory that builds its module, cross-option
checks, a FLOP formula and how to draw it. The parser resolves names here, the ``resolve`` pass checks options
here, :func:`build` makes modules (for ``lower`` and ``count``), the renderer takes colours and key options from
here. Adding a kind means writing ``specs/<kind>.py`` with a ``SPEC``, ``layers/<kind>.py`` with its module class,
and listing it in ``specs/__init__.py``; nothing else changes. The layer contract is in :mod:`hybriddsl.layer_spec`.
"""

from __future__ import annotations

from typing import Any

from hybriddsl.errors import HybError, HybNameError, LoweringError, suggest
from hybriddsl.layer_spec import (  # noqa: F401  (the registry's types, importable from here as before)
    MAX_INT,
    Companions,
    FlopFormula,
    LayerSpec,
    Option,
    OptionValue,
    Validator,
    matmul_flops,
)

_SPECS: dict[str, LayerSpec] = {}
_NAMES: dict[str, str] = {}  # lower-cased name or alias -> canonical name
_loaded = False  # the built-in kinds are registered (on first use, so that importing the registry is cheap)


def register(spec: LayerSpec) -> LayerSpec:
    """Add a kind; every name and alias must be new (case-insensitive). Nothing is added when one is taken."""
    _ensure_loaded()  # built-ins first: a user kind registered before any lookup must not hide them
    return _add(spec)


def _add(spec: LayerSpec) -> LayerSpec:
    for n in (spec.name, *spec.aliases, *spec.edifice):
        key = n.lower()
        if key in _NAMES and _NAMES[key] != spec.name:
            raise ValueError(f"layer name '{n}' of '{spec.name}' is already used by '{_NAMES[key]}'")
    for n in (spec.name, *spec.aliases, *spec.edifice):
        _NAMES[n.lower()] = spec.name
    _SPECS[spec.name] = spec
    return spec


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    from hybriddsl.specs import builtin  # the spec modules import only the types, never this table

    for spec in builtin():
        _add(spec)
    _loaded = True


def complete(kind: str, opts: dict[str, Any]) -> dict[str, Any]:
    """``opts`` of a ``kind`` layer with every declared option present, missing ones at the spec's defaults."""
    return get(kind).complete(opts)


def build(kind: str, opts: dict[str, Any], hidden: int) -> Any:
    """The ``nn.Module`` of one ``kind`` layer of width ``hidden``: ``opts`` completed from the spec's defaults,
    sub-layers (a parallel block's branches) built first. Maps ``[batch, seq, hidden]`` to itself. A factory that
    fails is a LoweringError naming the kind (a HybError from it passes unchanged)."""
    spec = get(kind)
    opts = spec.complete(opts)
    if spec.branches:
        opts["branches"] = [[build(b["kind"], b["opts"], hidden) for b in branch] for branch in opts["branches"]]
    try:
        return spec.factory(hidden, **opts)
    except HybError:
        raise
    except Exception as e:  # a factory bug or a user's custom factory failing: say which layer
        if isinstance(e, MemoryError) or "can't allocate memory" in str(e):  # a size mistake, not a bug
            asked = str(e).partition("you tried to allocate ")[2].partition(" bytes")[0]
            size = f" ({int(asked) / 2**30:,.0f} GiB for one tensor)" if asked.isdigit() else ""
            raise LoweringError(
                f"out of memory building a {kind} layer{size}: the model is too large for this machine "
                "(a smaller hidden, fewer or narrower layers?)"
            ) from None
        raise LoweringError(f"building a {kind} layer failed: {type(e).__name__}: {e}") from e


def canonical(name: str) -> str | None:
    """The canonical kind for a name or alias (case-insensitive), or None."""
    _ensure_loaded()
    return _NAMES.get(name.lower())


def get(name: str) -> LayerSpec:
    """The spec for a name or alias; raises HybNameError with a suggestion when unknown."""
    kind = canonical(name)
    if kind is None or _SPECS[kind].internal and name.lower() != kind:
        raise HybNameError(f"unknown layer '{name}'" + suggest(name, user_names()))
    return _SPECS[kind]


def specs() -> list[LayerSpec]:
    """Every registered kind, in registration order."""
    _ensure_loaded()
    return list(_SPECS.values())


def user_names() -> list[str]:
    """Every name a user may write (canonical names and aliases), for suggestions."""
    _ensure_loaded()
    out = []
    for s in _SPECS.values():
        if not s.internal:
            out += [s.name, *s.aliases, *s.edifice]
    return out
