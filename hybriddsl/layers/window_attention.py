"""Sliding-window causal attention without a dense ``[T, T]`` mask.

Query ``t`` attends to keys ``t - window + 1 .. t`` (the window counts the current token). Three ways to compute it,
all the same function of ``q, k, v``:

- ``dense``: SDPA with a boolean ``[T, T]`` mask: the reference. O(T²) memory and work, and the mask rules out
  SDPA's flash kernels on a GPU.
- ``chunked``: queries in blocks of ``c`` positions, each block against the ``c + window - 1`` keys it can see
  (SDPA with a ``[c, c + window - 1]`` mask per block): O(T (c + window)) work, O(c (c + window)) memory. The
  CPU path, and the GPU path where flex_attention is missing or dropout is on. Up to three blocks it makes one
  SDPA call with the whole (cached) band mask instead: 2-3x faster than the calls on slices at ``T = 2c``.
- ``flex``: ``torch.nn.attention.flex_attention`` with a block mask (tiles entirely outside the window are skipped,
  tiles entirely inside run without a mask), compiled: the GPU path.

``impl="auto"`` takes ``flex`` on CUDA when it imports and no dropout is asked, else ``chunked``; the attention
layer passes :data:`IMPL` (tests and benchmarks/attention.py set it). ``flex`` runs compiled on CUDA and eagerly
elsewhere (eager flex materializes the scores: a correctness reference only).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from hybriddsl.kernels.checks import traced

IMPLS = ("auto", "dense", "chunked", "flex")
IMPL = "auto"  # what the attention layer asks for


def window_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int) -> torch.Tensor:
    """Boolean ``[len(q_pos), len(k_pos)]``: True where ``0 <= q - k < window``."""
    d = q_pos[:, None] - k_pos[None, :]
    return (d >= 0) & (d < window)


def block_size(window: int) -> int:
    """Query block of the chunked path: the window itself, within [64, 512] (fewer Python steps for small windows,
    bounded memory per block for large ones)."""
    return max(64, min(window, 512))


def sliding_window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: int,
    impl: str = "auto",
    dropout_p: float = 0.0,
    enable_gqa: bool = False,
) -> torch.Tensor:
    """Causal attention over a sliding window.

    Args:
        q: ``[B, Hq, T, d]``; k, v: ``[B, Hkv, T, d]`` (``enable_gqa`` when ``Hkv < Hq``, as in SDPA).
        window: keys per query, the current token included (>= 1).
        impl: ``auto``, ``dense``, ``chunked`` or ``flex`` (see the module docstring).
        dropout_p: attention-probability dropout (not with ``flex``).

    Returns:
        ``[B, Hq, T, d]`` in q's dtype.
    """
    if impl not in IMPLS:
        raise ValueError(f"sliding_window_attention: impl must be one of {IMPLS}, got {impl!r}")
    if impl == "auto":
        impl = "flex" if q.is_cuda and dropout_p == 0.0 and _flex() is not None else "chunked"
    t = q.shape[2]
    sdpa = functools.partial(F.scaled_dot_product_attention, dropout_p=dropout_p, enable_gqa=enable_gqa)
    if impl == "dense":
        pos = torch.arange(t, device=q.device)
        return sdpa(q, k, v, attn_mask=window_mask(pos, pos, window))
    if impl == "flex":
        if dropout_p:
            raise ValueError("sliding_window_attention: flex_attention has no dropout; use impl='chunked'")
        eager, make_mask = _flex()
        # inside torch.compile, dynamo compiles flex_attention itself: no nested torch.compile
        flex = _compiled_flex() if q.is_cuda and not torch.compiler.is_compiling() else eager
        blocks = _block_mask.__wrapped__ if traced(q) else _block_mask  # a traced mask must not outlive its trace
        return flex(q, k, v, block_mask=blocks(make_mask, window, t, str(q.device)), enable_gqa=enable_gqa)
    c = block_size(window)
    if t <= window:  # every key is inside the window: plain causal attention
        return sdpa(q, k, v, is_causal=True)
    band = _band.__wrapped__ if traced(q) else _band  # a traced mask must not outlive its trace
    if t <= 3 * c:  # a few blocks: one call with the whole band mask beats 2-3 calls on slices (2-3x at T = 2c)
        return sdpa(q, k, v, attn_mask=band(t, t, window, str(q.device)))
    outs = []
    for s in range(0, t, c):
        e = min(s + c, t)
        k0 = max(0, s - window + 1)
        if k0 == 0 and e <= window:  # every key of the block is inside the window: plain causal, no mask
            outs.append(sdpa(q[:, :, s:e], k[:, :, :e], v[:, :, :e], is_causal=True))
        else:
            mask = band(e - s, e - k0, window, str(q.device))
            outs.append(sdpa(q[:, :, s:e], k[:, :, k0:e], v[:, :, k0:e], attn_mask=mask))
    return torch.cat(outs, dim=2)


@functools.lru_cache(maxsize=64)
def _band(rows: int, cols: int, window: int, device: str) -> torch.Tensor:
    """The chunked path's mask of a block of ``rows`` queries ending with its ``cols`` keys (the last query is the
    last key's position): it depends only on these sizes, so it is built once, not per block and call."""
    pos = torch.arange(cols, device=device)
    return window_mask(pos[cols - rows :], pos, window)


_flex_fns: tuple | None | bool = False  # False: not looked up yet


def _flex() -> tuple | None:
    """(flex_attention, create_block_mask), or None where this torch has no flex_attention."""
    global _flex_fns
    if _flex_fns is False:
        try:
            from torch.nn.attention.flex_attention import create_block_mask, flex_attention

            _flex_fns = (flex_attention, create_block_mask)
        except Exception:
            _flex_fns = None
    return _flex_fns


@functools.lru_cache(maxsize=1)
def _compiled_flex():
    # compiled once per process, on first use on a GPU (importing the compiler costs seconds: not at import)
    return torch.compile(_flex()[0], dynamic=False)


@functools.lru_cache(maxsize=32)
def _block_mask(create_block_mask, window: int, t: int, device: str):
    """The block mask of a window over ``t`` positions (cached: building it costs a pass over the tiles)."""

    def in_window(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & (q_idx - kv_idx < window)

    return create_block_mask(in_window, None, None, t, t, device=device)
