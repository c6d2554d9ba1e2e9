"""hybriddsl: a compiler for hybrid sequence models.

A one-line layer pattern such as ``M M A M GLA FFN; shared attn@2,4,6`` becomes a PyTorch module whose
recurrent layers run on Triton kernels, or a graphviz diagram. See README.md and docs/language.md.
"""

from hybriddsl.api import compile, load, parse, parse_and_build, render, save
from hybriddsl.errors import (
    HybError,
    HybFileError,
    HybNameError,
    HybOptionError,
    HybSyntaxError,
    IRError,
    LoweringError,
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

__all__ = [
    "HybError",
    "HybFileError",
    "HybNameError",
    "HybOptionError",
    "HybSyntaxError",
    "IRError",
    "LoweringError",
    "compile",
    "from_pretrained",
    "load",
    "parse",
    "parse_and_build",
    "render",
    "save",
    "save_pretrained",
]
