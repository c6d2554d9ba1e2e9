"""Passes over the graph IR, one module each; :mod:`.pipeline` lists them in order."""

from hybriddsl.passes.count import count
from hybriddsl.passes.expand import expand
from hybriddsl.passes.fuse import fuse_add_norm
from hybriddsl.passes.pipeline import PIPELINE, run
from hybriddsl.passes.resolve import resolve
from hybriddsl.passes.shapes import infer_shapes
from hybriddsl.passes.shared import insert_shared
from hybriddsl.passes.tie import tie

__all__ = [
    "PIPELINE",
    "count",
    "expand",
    "fuse_add_norm",
    "infer_shapes",
    "insert_shared",
    "resolve",
    "run",
    "tie",
]
