"""Tile lengths of the Triton kernels, without torch: the chunk lengths a layer option may take (the specs'
``Option(choices=...)``) and the ones the kernel wrappers accept (:mod:`hybriddsl.kernels.checks`) are these."""

from __future__ import annotations

# tl.dot needs tiles of >= 16 rows; the SSD and GLA kernels (mamba2, gla, rwkv) tile at most 64 steps
CHUNK_SIZES: tuple[int, ...] = (16, 32, 64)
CHUNK_MIN = CHUNK_SIZES[0]  # the delta-rule kernel takes any power of two from here up
