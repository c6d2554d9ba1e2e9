"""Parallel block ``[M | A]``: branches see the same (normed) input; their outputs are combined.

As in Hymba (Dong et al. 2024, "Hymba: A Hybrid-head Architecture for Small Language Models") and Falcon-H1
(attention and SSM heads side by side). Each branch is a sequence of mixers applied in series. Combination:

    mean:   y = (1/n) sum_i y_i
    sum:    y = sum_i y_i                              (Falcon-H1: attention and Mamba-2 outputs added)
    gate:   y = sum_i beta_i * rmsnorm_i(y_i)          beta_i learned per channel, init 1/n (Hymba's normalized
                                                       and re-scaled head outputs)
    concat: y = W [y_1; ...; y_n]                      (a learned projection of the concatenation)

Branches are mixers only: a kind's sub-blocks (attention's FFN) are not inserted inside a branch; put an FFN
after the parallel block instead.
"""

from __future__ import annotations

import torch
from torch import nn

from hybriddsl.layers.base import Mixer, State, options_from
from hybriddsl.specs.parallel import SPEC


@options_from(SPEC)
class Parallel(Mixer):
    """Branches of mixers on one input. x: [batch, seq, hidden] -> [batch, seq, hidden]."""

    def __init__(self, hidden_size: int, *, branches: list[list[nn.Module]], mix: str):
        """``branches``: each a list of built mixers applied in series (``registry.build`` makes them from the
        resolved ``[[{"kind", "opts"}, ...], ...]``)."""
        super().__init__()
        self.mix = mix
        self.branches = nn.ModuleList(nn.ModuleList(branch) for branch in branches)
        n = len(branches)
        if mix == "gate":
            self.norms = nn.ModuleList(nn.RMSNorm(hidden_size, eps=1e-6) for _ in range(n))
            self.beta = nn.Parameter(torch.empty(n, hidden_size))
        elif mix == "concat":
            self.proj = nn.Linear(n * hidden_size, hidden_size, bias=False)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        if self.mix == "gate":
            self.beta.fill_(1.0 / len(self.branches))

    def _combine(self, outs: list[torch.Tensor]) -> torch.Tensor:
        if self.mix == "mean":
            return torch.stack(outs).mean(0)
        if self.mix == "sum":
            return sum(outs[1:], outs[0])
        if self.mix == "gate":
            return sum(self.beta[i] * self.norms[i](o) for i, o in enumerate(outs))
        return self.proj(torch.cat(outs, dim=-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for branch in self.branches:
            h = x
            for layer in branch:
                h = layer(h)
            outs.append(h)
        return self._combine(outs)

    def init_state(self, batch: int, device=None, dtype=None) -> State:
        return {
            f"{i}.{j}.{k}": v
            for i, branch in enumerate(self.branches)
            for j, layer in enumerate(branch)
            for k, v in layer.init_state(batch, device=device, dtype=dtype).items()
        }

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        new: State = {}
        outs = []
        for i, branch in enumerate(self.branches):
            h = x
            for j, layer in enumerate(branch):
                prefix = f"{i}.{j}."
                sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
                h, sub = layer.step(h, sub)
                new.update({prefix + k: v for k, v in sub.items()})
            outs.append(h)
        return self._combine(outs), new

    def state_bytes(self, seq_len: int, dtype_bytes: int = 4) -> int:
        return sum(layer.state_bytes(seq_len, dtype_bytes) for branch in self.branches for layer in branch)
