"""DeltaNet: linear attention with the delta rule (Yang, Wang, Shen, Panda, Kim 2024, "Parallelizing Linear
Transformers with the Delta Rule over Sequence Length", arXiv:2406.06484; Schlag et al. 2021).

Per head, with ``q_t, k_t`` L2-normalized after a short causal conv and SiLU, ``v_t`` after conv and SiLU, and
``beta_t = sigmoid(w_beta . x_t)`` in (0, 1)::

    S_t = (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T    (= S_{t-1} + beta_t k_t (v_t - S_{t-1}^T k_t)^T)
    o_t = K^-1/2 S_t^T q_t
    y_t = W_o [RMSNorm(o_t^1); ...; RMSNorm(o_t^H)]

The memory ``S`` [K, V] is corrected towards ``v_t`` at key ``k_t`` by a step of size ``beta_t`` (one step of
online regression, the delta rule) instead of only accumulating as linear attention does. The forward runs the
chunked delta-rule kernel (:func:`hybriddsl.kernels.delta_rule.chunk_delta_rule`); ``step`` runs
:func:`~hybriddsl.kernels.delta_rule.delta_rule_step`. Layout and defaults follow fla's ``DeltaNet`` layer
(``use_short_conv``, ``qk_activation='silu'``, ``qk_norm='l2'``, ``use_beta``, ``o_norm``, no gate); the
shared parts are in :mod:`hybriddsl.layers.delta_common`.
"""

from __future__ import annotations

from hybriddsl.layers.base import options_from
from hybriddsl.layers.delta_common import DeltaMixer
from hybriddsl.specs.delta_net import FIXED, SPEC


@options_from(SPEC)
class DeltaNet(DeltaMixer):
    """DeltaNet mixer. x: [batch, seq, hidden] -> [batch, seq, hidden].

    ``heads`` heads of width ``head_dim`` (default ``hidden // heads``) for q, k and v; ``conv`` is the width
    of the short convs (0 leaves them out); ``chunk`` the kernel's tile length; ``bias`` adds biases to the
    q/k/v/output projections (fla has none).
    """

    def __init__(
        self,
        hidden_size: int,
        *,
        heads: int,
        head_dim: int | None,
        conv: int,
        chunk: int,
        bias: bool,
    ):
        super().__init__(hidden_size, heads=heads, head_dim=head_dim, conv=conv, chunk=chunk, bias=bias, **FIXED)
