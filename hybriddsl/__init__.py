"""hybriddsl: a compiler for hybrid sequence models.

A one-line layer pattern such as ``M M A M GLA FFN; shared attn@2,4,6`` becomes a PyTorch module whose
recurrent layers run on Triton kernels, or a graphviz diagram. See README.md and docs/language.md.

``import hybriddsl`` is cheap: the API functions are loaded on first use (module ``__getattr__``), so parsing,
checking and ``hybdsl --help`` never import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hybriddsl.errors import (
    ExportError,
    HybError,
    HybFileError,
    HybNameError,
    HybOptionError,
    HybRuntimeError,
    HybSyntaxError,
    IRError,
    LimitError,
    LoweringError,
    StreamError,
    TrainingError,
    UntrustedCodeError,
)


def from_pretrained(path, dtype=None, family=None, device=None):
    """A local Hugging Face model folder -> HybridModel (see :func:`hybriddsl.interop.pretrained.from_pretrained`)."""
    from hybriddsl.interop.pretrained import from_pretrained as _impl

    return _impl(path, dtype=dtype, family=family, device=device)


def save_pretrained(model, path, family, dtype=None):
    """Write a Hugging Face model folder (see :func:`hybriddsl.interop.pretrained.save_pretrained`)."""
    from hybriddsl.interop.pretrained import save_pretrained as _impl

    return _impl(model, path, family=family, dtype=dtype)


__version__ = "0.1.0"

# name -> module that defines it; imported on first access
_LAZY = {
    "compile": "hybriddsl.api",
    "load": "hybriddsl.api",
    "parse": "hybriddsl.api",
    "parse_and_build": "hybriddsl.api",
    "render": "hybriddsl.api",
    "save": "hybriddsl.api",
    "Limits": "hybriddsl.limits",
}

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ loads them
    from hybriddsl.api import compile, load, parse, parse_and_build, render, save  # noqa: F401
    from hybriddsl.limits import Limits  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # the next access is a plain global lookup
        return value
    raise AttributeError(f"module 'hybriddsl' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "ExportError",
    "HybError",
    "HybFileError",
    "Limits",
    "HybNameError",
    "HybOptionError",
    "HybRuntimeError",
    "HybSyntaxError",
    "IRError",
    "LimitError",
    "LoweringError",
    "UntrustedCodeError",
    "__version__",
    "StreamError",
    "TrainingError",
    "compile",
    "from_pretrained",
    "load",
    "parse",
    "parse_and_build",
    "render",
    "save",
    "save_pretrained",
]
