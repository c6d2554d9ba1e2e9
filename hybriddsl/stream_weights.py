"""The weights a batch-1 stream reads, and the matrix-vector form it computes with.

At batch 1 a step reads every weight matrix once to multiply it by one vector, so its time is the time it takes
to read the weights (the "matvec floor"). Two things here bring a compiled step down to that floor and below:

- **Matvecs as fused reductions.** Inside :class:`BatchOneStep`, ``F.linear(x, W, b)`` with a single row of
  ``x`` becomes ``(x[..., None, :] * W).sum(-1) + b``, which AOTInductor compiles into one C++ loop over the
  rows of ``W`` (vectorized along them, with the neighbouring elementwise work fused in), instead of an
  external BLAS call per matrix with its dispatch, output allocation and a strided view of ``W`` each frame.
  Attention over one query (``F.scaled_dot_product_attention`` with one query position) becomes the same
  kind of reductions (scores, softmax, weighted sum) for the same reason.
- **Smaller weights** (``weights="bf16"`` or ``"int8"``): :class:`StreamWeights` holds a copy of every
  ``nn.Linear`` weight in bfloat16, or in int8 with one float32 scale per output row (symmetric:
  ``scale[o] = max|W[o, :]| / 127``, ``q = round(W / scale)``). The matvec widens the weight to float32 inside
  the fused loop (``(x * q.float()).sum(-1) * scale``), so a frame reads 2 or 1 bytes per weight instead of 4
  while every activation, the state and the accumulation stay float32.

Everything else (norms, the recurrent scans, convolution weights, embeddings) is computed as in the model.
The quantized copies are taken when the stream is made: a later change to the model's weights is not seen by
such a stream (make a new one); a float32 stream reads the model's own tensors.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from hybriddsl.errors import HybOptionError

FORMATS = ("float32", "bf16", "int8")
ALIASES = {None: "float32", "fp32": "float32", "float32": "float32", "bf16": "bf16", "bfloat16": "bf16", "int8": "int8"}
MAX_ROWS = 8  # rows of x up to which a matvec is a fused reduction; above it a matmul kernel is faster


def weight_format(weights: str | None) -> str:
    """The stream's ``weights=`` setting as one of :data:`FORMATS` (None: the model's own float32 weights)."""
    if isinstance(weights, str | type(None)) and weights in ALIASES:
        return ALIASES[weights]
    raise HybOptionError(f"weights takes None (the model's own), 'bf16' or 'int8', got {weights!r}")


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel symmetric int8: w [out, in] -> (q [out, in] int8, scale [out] float32), with
    ``w ≈ q * scale[:, None]``, ``scale = max|w[o]| / 127`` (1 for an all-zero row), q in [-127, 127]."""
    w = w.detach().float()
    scale = w.abs().amax(dim=1) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


def matvec(
    x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None, scale: torch.Tensor | None = None
) -> torch.Tensor:
    """``x @ (w * scale[:, None]).T + bias`` as an elementwise product and a sum over the input dim.

    x: [..., in] (few rows); w: [out, in] in any dtype (widened to x's inside the product); scale: [out] or
    None; bias: [out] or None. Returns [..., out] in x's dtype. Compiled, this is one reduction loop that reads
    ``w`` once at its own width."""
    y = (x.unsqueeze(-2) * w.to(x.dtype)).sum(-1)
    if scale is not None:
        y = y * scale.to(x.dtype)
    return y if bias is None else y + bias.to(x.dtype)


def one_query_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float | None
) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` for one query position, as reductions.

    q: [batch, heads, 1, d]; k, v: [batch, kv_heads, keys, d] (kv_heads divides heads: grouped-query heads
    read key head ``h // (heads / kv_heads)``); mask: bool, broadcastable to [batch, heads, 1, keys], True
    where a key is visible, or None. Returns [batch, heads, 1, d]."""
    b, h, _, d = q.shape
    kvh = k.shape[1]
    qg = q.view(b, kvh, h // kvh, d).float()  # query heads grouped by the key head they read
    s = (qg.unsqueeze(-2) * k.float().unsqueeze(2)).sum(-1) * (d**-0.5 if scale is None else scale)  # [b, kvh, g, keys]
    if mask is not None:
        s = s.masked_fill(~mask.expand(b, h, 1, k.shape[2]).reshape(b, kvh, h // kvh, k.shape[2]), float("-inf"))
    p = torch.softmax(s, dim=-1)
    o = (p.unsqueeze(-1) * v.float().unsqueeze(2)).sum(-2)  # [b, kvh, g, d]
    return o.reshape(b, h, 1, d).to(q.dtype)


def linear_layers(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """Every ``nn.Linear`` of the model with a 2-d weight, once each (a shared module appears once)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and m.weight.dim() == 2]


class StreamWeights(nn.Module):
    """The ``nn.Linear`` weights of ``model`` in a stream's format (buffers ``w<i>`` and, for int8, ``s<i>``).

    ``float32`` holds nothing: the step reads the model's own parameters. ``bf16`` and ``int8`` hold copies
    taken now (quantized as :func:`quantize_int8` says). ``table()`` maps each layer's current weight tensor
    to (weight, scale) for :class:`BatchOneStep`."""

    def __init__(self, model: nn.Module, fmt: str):
        super().__init__()
        self.format = fmt
        self._layers = [m for _, m in linear_layers(model)]  # a plain list: not submodules of this one
        for i, lin in enumerate(self._layers):
            if fmt == "bf16":
                self.register_buffer(f"w{i}", lin.weight.detach().to(torch.bfloat16).contiguous())
            elif fmt == "int8":
                q, s = quantize_int8(lin.weight)
                self.register_buffer(f"w{i}", q)
                self.register_buffer(f"s{i}", s.to(lin.weight.device))

    def table(self) -> dict[int, tuple[torch.Tensor, torch.Tensor | None]]:
        """id(layer.weight) -> (the weight to read, per-row scale or None), looked up at call time: while
        ``torch.export`` traces, the layers' parameters are stand-ins, so ids are taken fresh per call."""
        if self.format == "float32":
            # the model's own tensors (read by pointer: updates are seen). A fused loop instead of an extern MKL
            # gemv per matrix: no call, output allocation or strided view of W per frame (~9% of a compiled
            # Edifice step on 1 thread, ~15% on 2, measured against the same step with extern gemvs)
            return {id(m.weight): (m.weight, None) for m in self._layers}
        return {
            id(m.weight): (getattr(self, f"w{i}"), getattr(self, f"s{i}", None)) for i, m in enumerate(self._layers)
        }

    def nbytes(self) -> int:
        """Bytes of the matrices a frame reads through this table (scales included)."""
        if self.format == "float32":
            return sum(m.weight.numel() * m.weight.element_size() for m in self._layers)
        return sum(b.numel() * b.element_size() for b in self.buffers())


class BatchOneStep(TorchFunctionMode):
    """While active: ``F.linear`` on a weight in ``table`` with at most :data:`MAX_ROWS` rows of input runs as
    :func:`matvec` on the table's weight (with more rows, a non-float32 weight is widened and ``F.linear``
    runs on it); ``F.scaled_dot_product_attention`` with one query, no dropout and no causal flag runs as
    :func:`one_query_attention`. Everything else runs as it is."""

    def __init__(self, table: dict[int, tuple[torch.Tensor, torch.Tensor | None]]):
        super().__init__()
        self.table = table

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is F.linear:
            x, w = args[0], args[1] if len(args) > 1 else kwargs["weight"]
            b = args[2] if len(args) > 2 else kwargs.get("bias")
            hit = self.table.get(id(w))
            if hit is not None:
                wq, scale = hit
                if x.numel() // x.shape[-1] <= MAX_ROWS:
                    return matvec(x, wq, b, scale)
                if wq is not w:
                    wf = wq.to(x.dtype) * (scale.to(x.dtype)[:, None] if scale is not None else 1)
                    return F.linear(x, wf, b)
        elif func is F.scaled_dot_product_attention:
            q, k, v = args[:3]
            mask = args[3] if len(args) > 3 else kwargs.get("attn_mask")
            plain = not kwargs.get("is_causal", False) and not kwargs.get("dropout_p", 0.0) and len(args) <= 4
            if plain and q.shape[-2] == 1 and (mask is None or mask.dtype == torch.bool):
                return one_query_attention(q, k, v, mask, kwargs.get("scale"))
        return func(*args, **kwargs)
