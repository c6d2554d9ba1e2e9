"""bf16 against float32 for every layer kind, by relative error (not only finiteness): the same layer with its
weights rounded to bf16, run once in bfloat16 and once in float32 on the same bf16-rounded input; the output, the
input gradient and all parameter gradients (one random cotangent) must agree within bf16's expected error. A layer
that lost a float32 upcast (a norm, a decay, a state kept in bf16 across time) moves these errors up by ~10x."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from hybriddsl.kernels.testing import rel_rmse
from hybriddsl.layers.attention import Attention
from hybriddsl.layers.delta_net import DeltaNet
from hybriddsl.layers.ffn import FFN
from hybriddsl.layers.gated_delta_net import GatedDeltaNet
from hybriddsl.layers.gla import GLA
from hybriddsl.layers.griffin import GriffinBlock
from hybriddsl.layers.gru import GRU
from hybriddsl.layers.kan import KAN
from hybriddsl.layers.mamba import Mamba
from hybriddsl.layers.mamba2 import Mamba2
from hybriddsl.layers.moe import MoE
from hybriddsl.layers.rwkv import RWKV6ChannelMix, RWKV6TimeMix

H = 32
LAYERS = {
    "attention": lambda: Attention(H, heads=4, rope=True, qk_norm=True),
    "attention-window": lambda: Attention(H, heads=4, kv_heads=2, window=16),
    "mamba": lambda: Mamba(H),
    "mamba2": lambda: Mamba2(H, state=16, head_dim=16, chunk=16),
    "gla": lambda: GLA(H, heads=2, chunk=16),
    "rwkv-time": lambda: RWKV6TimeMix(H, head_size=16, chunk=16),
    "rwkv-channel": lambda: RWKV6ChannelMix(H),
    "delta_net": lambda: DeltaNet(H, heads=2, chunk=16),
    "gated_delta_net": lambda: GatedDeltaNet(H, heads=2, chunk=16),
    "griffin": lambda: GriffinBlock(H),
    "gru": lambda: GRU(H),
    "ffn": lambda: FFN(H),
    "kan": lambda: KAN(H),
    "moe": lambda: MoE(H),
}
# Relative RMS error bounds of bf16 vs float32 through a whole layer (several rounded intermediates). Measured
# (torch 2.13 CPU): outputs 3.1e-3 (ffn) .. 7.1e-3 (gated_delta_net), gradients 3.3e-3 .. 9.5e-3 (gla dx): the
# bounds are ~3x the worst.
BOUND = {"out": 2e-2, "grad": 3e-2}


def _run(layer: nn.Module, x: torch.Tensor, cot: torch.Tensor, dtype: torch.dtype):
    m = copy.deepcopy(layer).to(dtype)
    xi = x.to(dtype).requires_grad_()
    y = m(xi)
    y = y[0] if isinstance(y, tuple) else y
    assert y.dtype == dtype
    params = [p for p in m.parameters() if p.requires_grad]
    grads = torch.autograd.grad((y.float() * cot).sum(), [xi, *params], allow_unused=True)
    flat = [(g if g is not None else torch.zeros_like(p)).float().flatten() for g, p in zip(grads[1:], params)]
    return y.float(), grads[0].float(), torch.cat(flat)


@pytest.mark.parametrize("kind", list(LAYERS))
def test_bf16_matches_fp32(kind):
    torch.manual_seed(0)
    layer = LAYERS[kind]().train()
    with torch.no_grad():  # weights away from the initialization's zeros and ones, then rounded to bf16
        for p in layer.parameters():
            p.add_(0.02 * torch.randn_like(p))
            p.copy_(p.bfloat16().float())
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 40, H, generator=g).bfloat16().float()
    cot = torch.randn(2, 40, H, generator=g)
    ref = _run(layer, x, cot, torch.float32)
    got = _run(layer, x, cot, torch.bfloat16)
    errs = {name: rel_rmse(r, o) for name, r, o in zip(("out", "dx", "dparams"), ref, got)}
    assert errs["out"] <= BOUND["out"] and max(errs["dx"], errs["dparams"]) <= BOUND["grad"], errs
