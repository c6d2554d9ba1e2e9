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
    "load",
    "parse",
    "parse_and_build",
    "render",
    "save",
]
