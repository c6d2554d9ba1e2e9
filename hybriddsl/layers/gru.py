"""Gated recurrent unit layer (Cho et al. 2014, "Learning Phrase Representations using RNN Encoder-Decoder").

With input ``x_t`` [hidden] and state ``h_t`` [size] (``h_0 = 0``; Edifice draws a random ``h_0``, we do not,
so outputs are deterministic), the equations of ``torch.nn.GRU``::

    r_t = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
    z_t = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
    n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}
    y_t = W_o h_t + b_o            (only when size != hidden; otherwise y_t = h_t)

The recurrence is nonlinear in ``h``, so no parallel scan applies: ``forward`` calls ``torch.nn.GRU`` (cuDNN
on GPU), ``step`` applies the same equations with the same weights to one token.
"""

from __future__ import annotations

import torch
from torch import nn

from hybriddsl.layers.base import Mixer, State, options_from
from hybriddsl.specs.gru import SPEC, gru_flops  # noqa: F401 (the kind's spec, torch-free)


@options_from(SPEC)
class GRU(Mixer):
    """One-layer GRU. x: [batch, seq, hidden] -> [batch, seq, hidden]; state ``h`` [batch, size] float32.

    Weights are ``torch.nn.GRU``'s (``weight_ih_l0`` [3 size, hidden], ``weight_hh_l0`` [3 size, size], gates
    in the order r, z, n), initialized as torch does: uniform(-1/sqrt(size), 1/sqrt(size)).
    """

    def __init__(self, hidden_size: int, *, size: int | None, bias: bool):
        super().__init__()
        self.size = size or hidden_size
        self.rnn = nn.GRU(hidden_size, self.size, batch_first=True, bias=bias)
        self.out_proj = nn.Linear(self.size, hidden_size, bias=bias) if self.size != hidden_size else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(x)  # h_0 = zeros
        return self.out_proj(h) if self.out_proj is not None else h

    def init_state(self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> State:
        """``h`` [batch, size] in float32 (float64 for a float64 module), zeros."""
        w = self.rnn.weight_hh_l0
        sdtype = torch.promote_types(dtype or w.dtype, torch.float32)
        return {"h": torch.zeros(batch, self.size, device=device or w.device, dtype=sdtype)}

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One token x [batch, hidden] -> y [batch, hidden]; the GRU cell in the state's precision."""
        h = state["h"]
        r = self.rnn
        gi = x.to(h.dtype) @ r.weight_ih_l0.to(h.dtype).T
        gh = h @ r.weight_hh_l0.to(h.dtype).T
        if r.bias:
            gi = gi + r.bias_ih_l0.to(h.dtype)
            gh = gh + r.bias_hh_l0.to(h.dtype)
        ir, iz, in_ = gi.chunk(3, dim=-1)
        hr, hz, hn = gh.chunk(3, dim=-1)
        rt = torch.sigmoid(ir + hr)
        zt = torch.sigmoid(iz + hz)
        nt = torch.tanh(in_ + rt * hn)
        h = (1 - zt) * nt + zt * h
        y = h.to(x.dtype)
        if self.out_proj is not None:
            y = self.out_proj(y)
        return y, {"h": h}
