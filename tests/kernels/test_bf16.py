"""bf16 evidence on CPU: every family's PyTorch path (what runs on CPU, and the reference the GPU kernels are held
to) in bfloat16 against the same path in float32 on the same bf16-rounded inputs, by relative RMS error of the
outputs and of every input gradient under a random cotangent, at issue 5's bf16 bounds. (Triton's bf16 is not
checked in the interpreter: its bf16 tl.dot is wrong; see tests/kernels/test_gla.py.)"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hybriddsl.kernels.add_norm import add_norm_torch
from hybriddsl.kernels.delta_rule import delta_rule_torch
from hybriddsl.kernels.gla import gla_torch
from hybriddsl.kernels.linear_scan import linear_scan_torch
from hybriddsl.kernels.selective_scan import selective_scan_torch
from hybriddsl.kernels.testing import TOLERANCE, assert_close
from tests.kernels.helpers import grads_of, random_loss


def _inputs(family: str):
    """(function, [inputs]) with inputs already rounded to bf16 (float32 tensors), parameters kept float32."""
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)
    b16 = lambda x: x.bfloat16().float()
    B, T, H, K, V, D = 2, 75, 2, 16, 16, 24
    if family == "selective_scan":
        A = -torch.exp(r(D, 8) * 0.5)
        ins = [b16(r(B, T, D)), b16(r(B, T, D) * 0.5 - 1), A, b16(r(B, T, 8)), b16(r(B, T, 8)), r(D), b16(r(B, T, D))]
        return lambda u, dl, A, Bm, C, Dk, z: selective_scan_torch(u, dl, A, Bm, C, Dk, z, None, True)[0], ins, 2
    if family == "gla":
        ins = [b16(r(B, T, H, K)), b16(r(B, T, H, K)), b16(r(B, T, H, V)), b16(F.logsigmoid(r(B, T, H, K) + 2) / 4)]
        return lambda q, k, v, gk: gla_torch(q, k, v, gk)[0], ins, 4
    if family == "delta_rule":
        q, k = (b16(F.normalize(r(B, T, H, K), dim=-1)) for _ in range(2))
        ins = [q, k, b16(r(B, T, H, V)), b16(torch.sigmoid(r(B, T, H))), b16(F.logsigmoid(r(B, T, H) + 3))]
        return lambda q, k, v, beta, gd: delta_rule_torch(q, k, v, beta, gd)[0], ins, 5
    if family == "linear_scan":
        ins = [b16(torch.sigmoid(r(B, T, D) + 2)), b16(r(B, T, D))]
        return lambda a, b: linear_scan_torch(a, b)[0], ins, 2
    ins = [b16(r(B, T, 64) * 3), b16(r(B, T, 64)), b16(1 + 0.1 * r(64))]
    return lambda x, res, w: add_norm_torch(x, res, w, None, 1e-5, "rms", False)[0], ins, 3


@pytest.mark.parametrize("family", ["selective_scan", "gla", "delta_rule", "linear_scan", "add_norm"])
def test_bf16_pytorch_path_matches_fp32(family):
    fn, ins, n_bf16 = _inputs(family)
    runs = {}
    for dtype in (torch.float32, torch.bfloat16):
        # the leading n_bf16 inputs are activations (cast); the rest are float32 parameters, as in the layers
        leaves = [(x.to(dtype) if i < n_bf16 else x).requires_grad_() for i, x in enumerate(ins)]
        leaves = [x.detach().requires_grad_() for x in leaves]
        out = fn(*leaves)
        if dtype == torch.bfloat16:
            assert out.dtype == torch.bfloat16
        runs[dtype] = (out, *grads_of(random_loss([out], seed=1), leaves))
    tol = TOLERANCE[torch.bfloat16]
    ref, got = runs[torch.float32], runs[torch.bfloat16]
    assert_close("out", ref[0], got[0].float(), tol["out"] * 2)  # the bf16 output itself is rounded: 2x the bound
    for i, (r, g) in enumerate(zip(ref[1:], got[1:])):
        assert_close(f"grad {i}", r, g.float(), tol["grad"])
