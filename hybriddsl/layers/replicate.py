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
    new = _copy_tree(module, {})
    with torch.no_grad():
        new.reset_parameters()
    return new


def _copy_tree(m: nn.Module, memo: dict[int, Any]) -> nn.Module:
    if id(m) in memo:  # a sub-module registered twice (or a tied parameter) stays shared, as in the original
        return memo[id(m)]
    new = object.__new__(type(m))
    memo[id(m)] = new
    d = m.__dict__.copy()
    for k, v in d.items():
        t = type(v)
        if t in _SHARED:
            continue
        if k == "_parameters":
            d[k] = {n: None if p is None else _new_param(p, memo) for n, p in v.items()}
        elif k == "_buffers":
            d[k] = {n: None if b is None else b.clone() for n, b in v.items()}
        elif k == "_modules":
            d[k] = {n: None if c is None else _copy_tree(c, memo) for n, c in v.items()}
        elif t in _CONTAINERS:  # hooks (a dozen empty dicts a module), caches: never shared with the original
            d[k] = v.copy() if v else t()
        elif t is types.MethodType and v.__self__ is m:
            d[k] = types.MethodType(v.__func__, new)
        elif isinstance(v, torch.Tensor):
            d[k] = v.clone()
        elif isinstance(v, (dict, list, set)):
            d[k] = copy.copy(v)
    new.__dict__.update(d)
    return new


def _new_param(p: nn.Parameter, memo: dict[int, Any]) -> nn.Parameter:
    if id(p) not in memo:
        q = nn.Parameter(torch.empty_like(p), requires_grad=p.requires_grad)
        if p.__dict__:
            q.__dict__.update(p.__dict__)  # flags such as _no_weight_decay
        memo[id(p)] = q
    return memo[id(p)]
