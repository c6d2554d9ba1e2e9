"""A fresh layer like a built one, without running its constructor: how lowering builds repeated layers fast.

A 1,000-layer pattern repeats a few layer configurations. Building each with its constructor spends most of
the time in ``nn.Module`` machinery (``__setattr__``, ``register_parameter``: ~1 ms a layer), not in drawing
weights. :func:`replica` copies the module tree of a freshly built layer (new parameter storage, the same
structure and settings) and calls its ``reset_parameters()``, which draws from the random generator exactly
as construction does (:class:`~hybriddsl.layers.base.Mixer`), so a model built with replicas has the same
weights, bit for bit, as one built layer by layer from the same seed (``tests/test_replicate.py``).
"""

from __future__ import annotations

import copy
import types
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

_SHARED = {bool, int, float, str, type(None), tuple, frozenset, torch.dtype, torch.device}  # immutable
_CONTAINERS = {dict, OrderedDict, list, set}


def replicable(module: nn.Module) -> bool:
    """Whether :func:`replica` may stand in for building ``module``'s layer again: it re-initializes itself
    (``reset_parameters``) and says nothing against it (custom code: ``replicable = False``, also inside a
    parallel block)."""
    return all(getattr(m, "replicable", True) for m in module.modules()) and hasattr(module, "reset_parameters")


def replica(module: nn.Module) -> nn.Module:
    """A new, freshly initialized layer of the same kind and options as ``module`` (a freshly built layer).

    Parameters get new storage on the same device and dtype, then ``reset_parameters()`` draws them; buffers
    and other tensors are copied (they are set by construction, not drawn); containers are copied one level
    so that caches are never shared; methods bound to the original are bound to the copy.
    """
    return replicator(module)()


def replicator(module: nn.Module) -> Callable[[], nn.Module]:
    """``make`` with ``make()`` = ``replica(module)``, faster when called many times: what copying each
    sub-module takes is worked out once. For a freshly built ``module`` that nothing runs between the calls."""
    recipe = _recipe(module)

    def make() -> nn.Module:
        new = _make(recipe, {})
        with torch.no_grad():
            new.reset_parameters()
        return new

    return make


class _Recipe:
    """How to copy one module: its class, the entries of its ``__dict__`` that are not shared (empty hook
    dicts, other containers, tensors, bound methods), its parameters, buffers and children."""

    __slots__ = ("src", "cls", "empty", "other", "params", "buffers", "children")

    def __init__(self, m: nn.Module):
        self.src, self.cls = m, type(m)
        self.empty: list[tuple[str, type]] = []
        self.other: list[str] = []
        self.params: list[tuple[str, Any]] = []
        self.buffers: list[tuple[str, Any]] = []
        self.children: list[tuple[str, _Recipe | None]] = []


def _recipe(m: nn.Module) -> _Recipe:
    r = _Recipe(m)
    for k, v in m.__dict__.items():
        t = type(v)
        if t in _SHARED:
            continue
        if k == "_parameters":
            r.params = list(v.items())
        elif k == "_buffers":
            r.buffers = list(v.items())
        elif k == "_modules":
            r.children = [(n, None if c is None else _recipe(c)) for n, c in v.items()]
        elif t in _CONTAINERS and not v:  # the dozen hook dicts of every module
            r.empty.append((k, t))
        else:
            r.other.append(k)
    return r


def _make(r: _Recipe, memo: dict[int, Any]) -> nn.Module:
    m = r.src
    if id(m) in memo:  # a sub-module registered twice stays shared, as in the original
        return memo[id(m)]
    new = object.__new__(r.cls)
    memo[id(m)] = new
    d = m.__dict__.copy()
    for k, t in r.empty:
        d[k] = t()
    d["_parameters"] = {n: None if p is None else _new_param(p, memo) for n, p in r.params}
    d["_buffers"] = {n: None if b is None else b.clone() for n, b in r.buffers}
    d["_modules"] = {n: None if c is None else _make(c, memo) for n, c in r.children}
    for k in r.other:
        v = d[k]
        if type(v) is types.MethodType and v.__self__ is m:
            d[k] = types.MethodType(v.__func__, new)
        elif isinstance(v, torch.Tensor):
            d[k] = v.clone()
        elif isinstance(v, (dict, list, set)):  # caches: never shared with the original
            d[k] = copy.copy(v)
    new.__dict__.update(d)
    return new


def _new_param(p: nn.Parameter, memo: dict[int, Any]) -> nn.Parameter:
    if id(p) not in memo:  # a parameter tied inside the layer stays tied
        q = nn.Parameter(torch.empty_like(p), requires_grad=p.requires_grad)
        if p.__dict__:
            q.__dict__.update(p.__dict__)  # flags such as _no_weight_decay
        memo[id(p)] = q
    return memo[id(p)]
