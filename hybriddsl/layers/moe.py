"""Mixture-of-experts feed-forward block with a top-k router (Shazeer et al. 2017; Fedus et al. 2021 "Switch
Transformers"; Jiang et al. 2024 "Mixtral of Experts").

For a token ``x`` with router probabilities ``p = softmax(W_r x)`` over ``E`` experts, ``S`` its ``top_k``
experts, and renormalized weights ``g_e = p_e / sum_{e' in S} p_e'``::

    y = sum_{e in S} g_e FFN_e(x)

Every token reaches all of its top-k experts (no capacity, no dropping): tokens are gathered per expert,
run through that expert and written back into a ``[tokens, top_k, hidden]`` buffer, each (token, slot)
written exactly once, so the result is deterministic on GPU as well (no atomic scatter-add).

Load balancing (Switch Transformer, eq. 4, with ``f`` over the ``N top_k`` assignments)::

    aux = aux_weight * E * sum_e f_e P_e,   f_e = (assignments to e) / (N top_k),   P_e = mean_tokens p_e

It equals ``aux_weight`` when routing is uniform. After every forward it is on ``module.aux_loss`` (a scalar
tensor in the graph); a training loop adds it::

    loss = task_loss + sum(m.aux_loss for m in model.modules() if isinstance(m, MoE))

The router runs in float32 (routing decisions are sensitive to rounding).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hybriddsl.layers.base import Mixer
from hybriddsl.layers.ffn import FFN
from hybriddsl.specs.moe import SPEC, moe_flops, validate  # noqa: F401 (the kind's spec, torch-free)


class MoE(Mixer):
    """Top-k routed mixture of FFN experts. x: [batch, seq, hidden] -> [batch, seq, hidden].

    ``router`` [experts, hidden] (no bias); ``experts[e]`` an :class:`~hybriddsl.layers.ffn.FFN`.
    ``aux_loss``: the weighted load-balancing loss of the last forward (0-d tensor).
    """

    def __init__(
        self,
        hidden_size: int,
        experts: int = 8,
        top_k: int = 2,
        mult: float = 4.0,
        act: str = "gelu",
        capacity: float | None = None,
        aux_weight: float = 0.01,
        bias: bool = False,
    ):
        super().__init__()
        msg = validate({"experts": experts, "top_k": top_k, "capacity": capacity}, hidden_size)
        if msg:
            raise ValueError(msg)
        self.n_experts, self.top_k, self.aux_weight = experts, top_k, aux_weight
        self.router = nn.Linear(hidden_size, experts, bias=False)
        # Switch Transformer init: truncated normal, std sqrt(0.1 / fan_in)
        nn.init.trunc_normal_(self.router.weight, std=math.sqrt(0.1 / hidden_size))
        self.experts = nn.ModuleList(FFN(hidden_size, mult=mult, act=act, bias=bias) for _ in range(experts))
        self.aux_loss: torch.Tensor = torch.zeros(())

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [N, hidden] -> (probs [N, E] (>= float32), top-k expert ids [N, k], renormalized weights [N, k])."""
        rdtype = torch.promote_types(x.dtype, torch.float32)  # float32, or float64 for a float64 module
        logits = x.to(rdtype) @ self.router.weight.to(rdtype).T
        probs = logits.softmax(-1)
        w, idx = probs.topk(self.top_k, dim=-1)
        return probs, idx, w / w.sum(-1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        n = flat.shape[0]
        probs, idx, w = self.route(flat)
        out = flat.new_zeros(n, self.top_k, shape[-1])
        for e, expert in enumerate(self.experts):
            tok, slot = (idx == e).nonzero(as_tuple=True)
            if tok.numel():
                out[tok, slot] = expert(flat[tok])
        y = (out * w.to(out.dtype).unsqueeze(-1)).sum(1)
        self.aux_loss = self._balance_loss(probs, idx)
        return y.reshape(shape)

    def step(self, x: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """One token per row: x [batch, hidden] -> y [batch, hidden] (stateless).

        Traced (torch.export, torch.compile, a compiled stream) it runs every expert on every row and weights
        them by a dense gate that is zero outside the top-k: the same sum, with static shapes (the sparse
        dispatch of :meth:`forward` has data-dependent ones). Eager, it dispatches sparsely."""
        if not (torch.compiler.is_compiling() or torch.compiler.is_exporting()):
            return self.forward(x.unsqueeze(1)).squeeze(1), state
        probs, idx, w = self.route(x)
        gate = torch.zeros_like(probs).scatter(-1, idx, w)  # [batch, experts]
        ys = torch.stack([expert(x) for expert in self.experts], 1)  # [batch, experts, hidden]
        return (ys * gate.to(ys.dtype).unsqueeze(-1)).sum(1), state

    def _balance_loss(self, probs: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        counts = torch.zeros(self.n_experts, device=probs.device, dtype=probs.dtype)
        counts.scatter_add_(0, idx.reshape(-1), torch.ones_like(idx.reshape(-1), dtype=probs.dtype))
        f = counts / idx.numel()  # fraction of assignments per expert (no gradient: a count)
        p_mean = probs.mean(0)  # carries the gradient to the router
        return self.aux_weight * self.n_experts * (f * p_mean).sum()
