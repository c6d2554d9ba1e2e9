"""Checks every layer kind must pass, shared by the per-kind test files.

Each takes a module built by the kind's factory and asserts behaviour against an independent definition:
step-by-step against the parallel forward, float64 gradcheck, bf16 finiteness, and learning a small task.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from hybriddsl.kernels.dispatch import backend
from hybriddsl.kernels.testing import TOLERANCE, assert_close


def run_steps(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Feed x [batch, seq, hidden] one token at a time through layer.step; returns [batch, seq, hidden]."""
    state = layer.init_state(x.shape[0], device=x.device, dtype=x.dtype)
    ys = []
    for t in range(x.shape[1]):
        y, state = layer.step(x[:, t], state)
        ys.append(y)
    return torch.stack(ys, 1)


def check_step_matches_forward(layer: nn.Module, hidden: int, seq: int = 37, batch: int = 2, atol: float = 1e-4):
    """step() over a sequence equals forward() on it (fp32, eval mode)."""
    torch.manual_seed(0)
    layer = layer.float().eval()
    x = torch.randn(batch, seq, hidden)
    with torch.no_grad():
        full = layer(x)
        steps = run_steps(layer, x)
    assert full.shape == (batch, seq, hidden)
    err = (full - steps).abs().max().item()
    assert err <= atol, f"step vs forward max error {err:.2e} > {atol:.0e}"


def check_causal(layer: nn.Module, hidden: int, seq: int = 16):
    """Changing a later token does not change earlier outputs."""
    torch.manual_seed(1)
    layer = layer.float().eval()
    x = torch.randn(1, seq, hidden)
    x2 = x.clone()
    x2[:, seq // 2 :] += torch.randn_like(x2[:, seq // 2 :])
    with torch.no_grad():
        a, b = layer(x), layer(x2)
    assert torch.allclose(a[:, : seq // 2], b[:, : seq // 2], atol=1e-5)


def check_gradcheck(layer: nn.Module, hidden: int, seq: int = 5, batch: int = 1):
    """torch.autograd.gradcheck of the input and every parameter in float64 at a tiny shape."""
    layer = layer.double().eval()
    params = [p for p in layer.parameters() if p.requires_grad]
    x = torch.randn(batch, seq, hidden, dtype=torch.float64, requires_grad=True)

    # gradcheck through parameters: use torch.func.functional_call for a clean functional form
    names = [n for n, p in layer.named_parameters() if p.requires_grad]

    def fc(x, *ps):
        return torch.func.functional_call(layer, dict(zip(names, ps)), (x,))

    inputs = (x, *[p.detach().clone().requires_grad_(True) for p in params])
    assert torch.autograd.gradcheck(fc, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, fast_mode=True)


def check_dtypes(layer: nn.Module, hidden: int, seq: int = 24):
    """Forward and backward run in fp32 and bf16, giving finite values and gradients for every parameter."""
    for dtype in (torch.float32, torch.bfloat16):
        m = layer.to(dtype).train()
        x = torch.randn(2, seq, hidden, dtype=dtype, requires_grad=True)
        y = m(x)
        assert y.dtype == dtype and y.shape == x.shape
        y.backward(torch.randn_like(y))  # a random cotangent: a norm-like loss of ~1 would hide gradient scale
        assert torch.isfinite(y).all()
        assert torch.isfinite(x.grad).all()
        for n, p in m.named_parameters():
            if p.requires_grad:
                assert p.grad is not None, f"no gradient reaches {n} ({dtype})"
                assert torch.isfinite(p.grad).all(), f"non-finite gradient in {n} ({dtype})"
        m.zero_grad()
    layer.float()


def check_trains(
    make_layer: Callable[[int], nn.Module],
    hidden: int = 32,
    vocab: int = 8,
    seq: int = 16,
    steps: int = 200,
    lr: float = 3e-3,
    ratio: float = 0.5,
):
    """A tiny model (embedding, one residual block of the layer, head) learns a task that needs memory.

    Task: predict the token seen ``lag`` = 2 positions ago. The starting loss is about log(vocab); the layer
    must bring it below ``ratio`` times that within ``steps`` Adam steps on CPU.
    """
    torch.manual_seed(0)
    lag = 2
    emb, layer, norm, head = (
        nn.Embedding(vocab, hidden),
        make_layer(hidden),
        nn.LayerNorm(hidden),
        nn.Linear(hidden, vocab),
    )
    params = [*emb.parameters(), *layer.parameters(), *norm.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    losses = []
    for _ in range(steps):
        tok = torch.randint(0, vocab, (16, seq))
        h = emb(tok)
        h = h + layer(norm(h))
        logits = head(h)[:, lag:]
        loss = nn.functional.cross_entropy(logits.reshape(-1, vocab), tok[:, :-lag].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    start = sum(losses[:5]) / 5
    end = sum(losses[-10:]) / 10
    assert end < ratio * start, f"loss {start:.3f} -> {end:.3f} did not fall below {ratio} x start"


def randomize(m: nn.Module, std: float = 0.3, keep: tuple[str, ...] = ()) -> nn.Module:
    """Move every parameter (but those named in ``keep``) off its initial value, so that a reference written from
    the raw weights is compared on weights where a mistake shows (norm weights away from 1, biases from 0)."""
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n not in keep:
                p.add_(torch.randn_like(p) * std)
    return m


def grads_vs_reference(
    m: nn.Module, reference: Callable[[nn.Module, torch.Tensor], torch.Tensor], x: torch.Tensor
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(got, ref): gradients of the input "x" and every parameter, through the layer's forward and through
    ``reference(m, x)`` (a float64 loop), for the same random weighting of the outputs."""
    x = x.detach().requires_grad_(True)
    w = torch.randn(x.shape[:-1] + (m(x).shape[-1],), dtype=x.dtype)
    m.zero_grad()
    (m(x) * w).sum().backward()
    got = {"x": x.grad.clone(), **{n: p.grad.clone() for n, p in m.named_parameters()}}
    m.zero_grad()
    x.grad = None
    out = reference(m, x)
    out = out[0] if isinstance(out, tuple) else out
    (out * w.double()).sum().backward()
    ref = {"x": x.grad.clone(), **{n: p.grad.clone() for n, p in m.named_parameters()}}
    return got, ref


def check_triton_path(m: nn.Module, hidden: int, seq: int = 21) -> None:
    """The layer's forward and backward through the Triton kernels (CPU interpreter here, the GPU on CUDA)
    equal those through the PyTorch path: the layer hands the kernels tensors they accept."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    m = m.to(dev)
    x = torch.randn(2, seq, hidden, device=dev, requires_grad=True)
    runs = []
    ct = torch.randn(2, seq, hidden, device=dev)  # one random cotangent for both paths
    for name in ("reference", "triton"):
        m.zero_grad()
        x.grad = None
        with backend(name):
            y = m(x)
            y.backward(ct)
        runs.append(
            {"out": y.detach(), "x.grad": x.grad.clone(), **{n: p.grad.clone() for n, p in m.named_parameters()}}
        )
    for key, ref in runs[0].items():
        ratio = TOLERANCE[torch.float32]["out" if key == "out" else "grad"]
        assert_close(key, ref, runs[1][key], ratio)
