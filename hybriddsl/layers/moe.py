"""Mixture-of-experts feed-forward block with a top-k router (Shazeer et al. 2017; Fedus et al. 2021 "Switch
Transformers"; Jiang et al. 2024 "Mixtral of Experts").

For a token ``x`` with router probabilities ``p = softmax(W_r x)`` over ``E`` experts, ``S`` its ``top_k``
experts, and renormalized weights ``g_e = p_e / sum_{e' in S} p_e'``::

    y = sum_{e in S} g_e FFN_e(x)

Options for the routers of published checkpoints (defaults keep the rule above):

- ``norm_topk = false``: ``g_e = p_e`` (Jamba; OLMoE's ``norm_topk_prob = false``).
- ``score = sigmoid``: ``p = sigmoid(W_r x)`` (DeepSeek-V3, Nemotron-H); with ``score_bias`` a per-expert bias
  ``b`` (a buffer: DeepSeek-V3's ``e_score_correction_bias``) is added to ``p`` to *choose* ``S``, while the
  weights stay ``p_e``.
- ``groups``/``topk_groups``: experts form ``groups`` equal groups; a group scores the sum of its two best
  choice scores and ``S`` is taken from the ``topk_groups`` best groups only (DeepSeek-V3's node-limited routing).
- ``scale``: the weights are multiplied by it (``routed_scaling_factor``).
- ``shared``: the inner width of one always-on shared expert added to every token's output (DeepSeek-MoE,
  Nemotron-H); ``shared_gate``: that expert's output times ``sigmoid(w . x)`` per token (Qwen3-Next);
  ``inner``: the experts' exact width (overrides ``mult``).
- ``latent``: the routed experts work in a narrower space (Nemotron-H's latent MoE, ``moe_latent_size``): the
  router and the shared expert read ``x``, the experts ``latent_in x`` (``hidden -> latent``), and the weighted
  sum goes back through ``latent_out`` (``latent -> hidden``, once): ``y = latent_out(sum g_e FFN_e(latent_in
  x)) + shared(x)``; ``latent_bias`` puts biases on both projections.

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

from hybriddsl.kernels.checks import needs_grad
from hybriddsl.layers.base import Mixer, options_from
from hybriddsl.layers.ffn import FFN
from hybriddsl.specs.moe import SPEC, moe_flops, validate  # noqa: F401 (the kind's spec, torch-free)


@options_from(SPEC)
class MoE(Mixer):
    """Top-k routed mixture of FFN experts. x: [batch, seq, hidden] -> [batch, seq, hidden].

    ``router`` [experts, hidden] (no bias); ``experts[e]`` an :class:`~hybriddsl.layers.ffn.FFN`.
    ``aux_loss``: the weighted load-balancing loss of the last forward (0-d tensor).
    """

    def __init__(
        self,
        hidden_size: int,
        *,
        experts: int,
        top_k: int,
        mult: float,
        act: str,
        capacity: float | None,
        aux_weight: float,
        bias: bool,
        inner: int | None,
        norm_topk: bool,
        score: str,
        score_bias: bool,
        groups: int,
        topk_groups: int,
        scale: float,
        shared: int | None,
        shared_bias: bool,
        shared_gate: bool,
        latent: int | None,
        latent_bias: bool,
    ):
        super().__init__()
        self.n_experts, self.top_k, self.aux_weight = experts, top_k, aux_weight
        self.norm_topk, self.score, self.groups, self.topk_groups, self.scale = (
            norm_topk,
            score,
            groups,
            topk_groups,
            scale,
        )
        self.router = nn.Linear(hidden_size, experts, bias=False)
        # chooses experts, never weights them; set by a checkpoint, not by gradients
        self.register_buffer("score_bias", torch.zeros(experts) if score_bias else None)
        width = latent or hidden_size  # the experts' input and output width
        self.latent_in = nn.Linear(hidden_size, latent, bias=latent_bias) if latent else None
        self.latent_out = nn.Linear(latent, hidden_size, bias=latent_bias) if latent else None
        inner = inner or int(math.ceil(hidden_size * mult))  # mult is of hidden, also for latent experts
        self.experts = nn.ModuleList(FFN(width, act=act, bias=bias, inner=inner) for _ in range(experts))
        self.shared = FFN(hidden_size, act=act, bias=shared_bias, inner=shared) if shared else None
        # Qwen3-Next: the shared expert's output scaled per token by sigmoid(w . x)
        self.shared_gate = nn.Linear(hidden_size, 1, bias=False) if shared and shared_gate else None
        self.aux_loss: torch.Tensor = torch.zeros(())
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        # Switch Transformer init: truncated normal, std sqrt(0.1 / fan_in)
        nn.init.trunc_normal_(self.router.weight, std=math.sqrt(0.1 / self.router.in_features))
        if self.score_bias is not None:
            self.score_bias.zero_()

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [N, hidden] -> (probs [N, E] (>= float32), top-k expert ids [N, k], weights [N, k])."""
        rdtype = torch.promote_types(x.dtype, torch.float32)  # float32, or float64 for a float64 module
        logits = x.to(rdtype) @ self.router.weight.to(rdtype).T
        probs = logits.softmax(-1) if self.score == "softmax" else logits.sigmoid()
        if self.score_bias is None and self.groups == 1:
            w, idx = probs.topk(self.top_k, dim=-1)
        else:
            choice = probs if self.score_bias is None else probs + self.score_bias.to(rdtype)
            if self.groups > 1:
                n, per = choice.shape[0], self.n_experts // self.groups
                grouped = choice.view(n, self.groups, per)
                best = grouped.topk(min(2, per), dim=-1).values.sum(-1)  # [N, groups]
                keep = torch.zeros_like(best, dtype=torch.bool).scatter(
                    1, best.topk(self.topk_groups, -1).indices, True
                )
                choice = grouped.masked_fill(~keep[..., None], float("-inf")).view(n, self.n_experts)
            idx = choice.topk(self.top_k, dim=-1).indices
            w = probs.gather(-1, idx)
        if self.norm_topk:
            w = w / (w.sum(-1, keepdim=True) + (1e-20 if self.score == "sigmoid" else 0.0))
        if self.scale != 1.0:
            w = w * self.scale
        return probs, idx, w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        probs, idx, w = self.route(flat)
        inp = flat if self.latent_in is None else self.latent_in(flat)
        y = self._dispatch(inp, idx, w)
        if self.latent_out is not None:
            y = self.latent_out(y)
        if self.shared is not None:
            y = y + self._shared(flat)
        self.aux_loss = self._balance_loss(probs, idx)
        return y.reshape(shape)

    def _dispatch(self, inp: torch.Tensor, idx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Every (token, expert) assignment through its expert, weighted and summed per token.

        inp [N, width]; idx, w [N, k] -> [N, width']. One stable sort groups the assignments by expert, so each
        expert reads one contiguous slice of a single gathered copy of its tokens, and one ``index_add_`` sums
        the weighted outputs back per token: no [N, k, width'] buffer and no per-expert scatter."""
        n, k = idx.shape
        order = idx.reshape(-1).argsort(stable=True)  # assignment ids grouped by expert, token order within
        counts = torch.bincount(idx.reshape(-1), minlength=self.n_experts).tolist()
        tok = order // k
        parts = inp.index_select(0, tok).split(counts)
        outs = [expert(part) for expert, part in zip(self.experts, parts, strict=True) if part.shape[0]]
        if not outs:  # no tokens (an expert maps width -> width); inp * 0 keeps the graph for a backward
            return inp * 0
        ys = torch.cat(outs) if len(outs) > 1 else outs[0]
        ws = w.reshape(-1).index_select(0, order).to(ys.dtype).unsqueeze(-1)
        ys = ys * ws if needs_grad(ys) else ys.mul_(ws)
        return ys.new_zeros(n, ys.shape[-1]).index_add_(0, tok, ys)

    def step(self, x: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """One token per row: x [batch, hidden] -> y [batch, hidden] (stateless).

        Traced (torch.export, torch.compile, a compiled stream) it runs every expert on every row and weights
        them by a dense gate that is zero outside the top-k: the same sum, with static shapes (the sparse
        dispatch of :meth:`forward` has data-dependent ones). Eager, it dispatches sparsely."""
        if not (torch.compiler.is_compiling() or torch.compiler.is_exporting()):
            return self.forward(x.unsqueeze(1)).squeeze(1), state
        probs, idx, w = self.route(x)
        gate = torch.zeros_like(probs).scatter(-1, idx, w)  # [batch, experts]
        inp = x if self.latent_in is None else self.latent_in(x)
        ys = torch.stack([expert(inp) for expert in self.experts], 1)  # [batch, experts, width]
        y = (ys * gate.to(ys.dtype).unsqueeze(-1)).sum(1)
        if self.latent_out is not None:
            y = self.latent_out(y)
        return (y if self.shared is None else y + self._shared(x)), state

    def _shared(self, x: torch.Tensor) -> torch.Tensor:
        """The shared expert on x [N, hidden], gated by ``sigmoid(shared_gate(x))`` when it has a gate."""
        y = self.shared(x)
        return y if self.shared_gate is None else torch.sigmoid(self.shared_gate(x)) * y

    def _balance_loss(self, probs: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        counts = torch.zeros(self.n_experts, device=probs.device, dtype=probs.dtype)
        counts.scatter_add_(0, idx.reshape(-1), torch.ones_like(idx.reshape(-1), dtype=probs.dtype))
        f = counts / idx.numel()  # fraction of assignments per expert (no gradient: a count)
        p_mean = probs.mean(0)  # carries the gradient to the router
        return self.aux_weight * self.n_experts * (f * p_mean).sum()
