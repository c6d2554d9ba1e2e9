"""A whole model mixing every recurrent kind, run on the Triton kernels (the CPU interpreter here, float32: its
bf16 tl.dot is wrong, see tests/kernels/test_gla.py) against the same model on the PyTorch paths: outputs,
every parameter's gradient under a random cotangent, and token-by-token steps (with the Triton add+norm between
blocks) against the Triton forward."""

from __future__ import annotations

import pytest
import torch

from hybriddsl.api import parse_and_build
from hybriddsl.kernels import backend
from hybriddsl.kernels.testing import assert_close, rel_rmse

# mamba (selective scan), mamba2 and RWKV-6 and GLA (chunked GLA), DeltaNet and Gated DeltaNet (delta rule),
# Griffin (linear scan), with the fused residual add + norm between blocks (add_norm). chunk = 16 makes T = 20
# cross two chunks. Sizes are small: the interpreter runs every program of every kernel in Python.
SRC = (
    "M(state=4) M2(state=8, head_dim=8, chunk=16) GLA(heads=2, chunk=16) R(head_size=8, chunk=16) "
    "D(heads=2, chunk=16) GD(heads=2, chunk=16) L"
)
HIDDEN, T = 16, 20
DEV = "cuda" if torch.cuda.is_available() else "cpu"  # on a GPU: the compiled kernels (benchmarks/gpu_session.sh)
STEPS = 4  # each step runs the interpreted add+norm kernel per block: a few are enough


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = parse_and_build(SRC, hidden=HIDDEN, dropout=0.0, output="sequence", device=DEV)
    for p in m.parameters():  # away from the initialization's zeros and ones, so every path carries signal
        p.data.add_(0.05 * torch.randn_like(p))
    return m


def _run(model, x, path):
    model.zero_grad()
    with backend(path):
        y = model(x)
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(DEV)
    (y * w).sum().backward()
    return y.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_forward_and_gradients_match_the_pytorch_paths(model):
    x = torch.randn(1, T, HIDDEN, generator=torch.Generator().manual_seed(2)).to(DEV)
    y_ref, g_ref = _run(model, x, "reference")
    y, g = _run(model, x, "triton")
    assert_close("y", y_ref, y, 1e-4)
    assert g.keys() == g_ref.keys() and len(g) > 20
    worst = max(rel_rmse(g_ref[n], g[n]) for n in g_ref if g_ref[n].abs().sum() > 0)
    assert worst <= 2e-3, {n: f"{rel_rmse(g_ref[n], g[n]):.1e}" for n in g_ref}


def test_steps_match_the_triton_forward(model):
    x = torch.randn(1, T, HIDDEN, generator=torch.Generator().manual_seed(3)).to(DEV)
    with torch.no_grad(), backend("triton"):
        y_full = model(x)
        state = model.init_state(1)
        outs = []
        for t in range(STEPS):
            y_t, state = model.step(x[:, t], state)
            outs.append(y_t)
    assert_close("steps", y_full[:, :STEPS], torch.stack(outs, 1), 1e-4)


@pytest.mark.skipif(DEV != "cuda", reason="CUDA graphs need a GPU")
def test_stream_and_cuda_graph_stream_match_the_forward(model):
    """On a GPU: the eager stream and the CUDA-graph stream of the mixed model equal its Triton forward."""
    x = torch.randn(2, T, HIDDEN, generator=torch.Generator().manual_seed(4)).to(DEV)
    model.eval()
    with torch.no_grad(), backend("triton"):
        full = model(x)
        for graph in (False, True):
            s = model.stream(batch=2, cuda_graph=graph)
            got = torch.stack([s.push(x[:, t]) for t in range(T)], 1)
            assert_close(f"stream (cuda_graph={graph})", full, got, 1e-3)
    model.train()
