"""The contract every kernel family's public function keeps (hybriddsl/kernels/checks.py, issue 13):
empty input returns empty results, inputs on two devices raise, chunk sizes the Triton kernels cannot tile raise
on every path, on the PyTorch path and on the Triton one (in the interpreter here) alike."""

from __future__ import annotations

import pytest
import torch

from hybriddsl.kernels import backend
from hybriddsl.kernels.add_norm import add_norm
from hybriddsl.kernels.delta_rule import chunk_delta_rule
from hybriddsl.kernels.gla import chunk_gla
from hybriddsl.kernels.linear_scan import linear_scan
from hybriddsl.kernels.selective_scan import selective_scan

B, H, K, V, DM, N = 2, 3, 4, 5, 6, 7


def _scan_calls(T: int, dev_of: dict[str, str] | None = None, B: int = B):
    """(name, call(**state kw), state shape) of every scan family on inputs with T tokens (batch B); ``dev_of``
    moves the named inputs to another device."""
    dev_of = dev_of or {}
    g = torch.Generator().manual_seed(0)

    def t(name, *shape):
        return torch.rand(*shape, generator=g).to(dev_of.get(name, "cpu"))

    return [
        ("selective_scan", lambda **kw: selective_scan(
            t("u", B, T, DM), t("delta", B, T, DM), -t("A", DM, N), t("B", B, T, N), t("C", B, T, N), t("D", DM),
            initial_state=kw.get("h0"), output_final_state=kw.get("final", False)), (B, DM, N)),
        ("gla", lambda **kw: chunk_gla(
            t("q", B, T, H, K), t("k", B, T, H, K), t("v", B, T, H, V), -t("g", B, T, H, K),
            initial_state=kw.get("h0"), output_final_state=kw.get("final", False)), (B, H, K, V)),
        ("delta_rule", lambda **kw: chunk_delta_rule(
            t("q", B, T, H, K), t("k", B, T, H, K), t("v", B, T, H, V), t("beta", B, T, H), -t("g", B, T, H),
            initial_state=kw.get("h0"), output_final_state=kw.get("final", False)), (B, H, K, V)),
        ("linear_scan", lambda **kw: linear_scan(
            t("a", B, T, DM), t("b", B, T, DM), kw.get("h0"), output_final_state=kw.get("final", False)), (B, DM)),
        ("ssd", lambda **kw: chunk_gla(  # a scalar decay per head: the SSD route
            t("q", B, T, H, K), t("k", B, T, H, K), t("v", B, T, H, V), -t("g", B, T, H),
            initial_state=kw.get("h0"), output_final_state=kw.get("final", False)), (B, H, K, V)),
    ]  # fmt: skip


@pytest.mark.parametrize("path", ["reference", "triton"])
@pytest.mark.parametrize("family", ["selective_scan", "gla", "delta_rule", "linear_scan"])
def test_empty_sequence_returns_empty_output_and_the_initial_state(family, path):
    call, shape = next((c, s) for name, c, s in _scan_calls(0) if name == family)
    with backend(path):
        out, none = call()
        assert out.shape[1] == 0 and out.numel() == 0 and none is None
        _, zeros = call(final=True)
        assert zeros.shape == shape and zeros.dtype == torch.float32 and not zeros.any()
        h0 = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        _, ht = call(h0=h0, final=True)
    assert ht.dtype == torch.float32 and torch.equal(ht, h0.detach().float()) and ht.data_ptr() != h0.data_ptr()
    (ht * 3).sum().backward()  # the state passes through: its gradient reaches the initial state
    assert torch.equal(h0.grad, torch.full(shape, 3.0, dtype=torch.float64))


@pytest.mark.parametrize("family", ["selective_scan", "gla", "delta_rule", "linear_scan", "ssd"])
def test_empty_batch_returns_empty_output_and_state(family):
    """Zero sequences of 5 tokens: an empty output and an empty final state (the chunked paths size their blocks by
    the batch; an empty one divided by zero or could not infer a reshape)."""
    call, shape = next((c, s) for name, c, s in _scan_calls(5, B=0) if name == family)
    out, final = call(final=True)
    assert out.shape[:2] == (0, 5) and out.numel() == 0
    assert final.shape == (0, *shape[1:])


@pytest.mark.parametrize("path", ["reference", "triton"])
def test_add_norm_without_rows(path):
    x = torch.zeros(0, 8)
    with backend(path):
        y, r = add_norm(x, torch.zeros(0, 8), torch.ones(8))
    assert y.shape == r.shape == (0, 8)


@pytest.mark.parametrize("family", ["selective_scan", "gla", "delta_rule", "linear_scan"])
def test_inputs_on_two_devices_raise(family):
    # "meta" stands in for a second device: the check must fire before any computation
    second = {"selective_scan": "B", "gla": "v", "delta_rule": "beta", "linear_scan": "b"}[family]
    call = next(c for name, c, _ in _scan_calls(4, {second: "meta"}) if name == family)
    with pytest.raises(ValueError, match=rf"{second} is on meta but \w+ is on cpu"):
        call()


def test_add_norm_on_two_devices_raises():
    with pytest.raises(ValueError, match="weight is on meta but x is on cpu"):
        add_norm(torch.zeros(2, 8), None, torch.ones(8, device="meta"))


@pytest.mark.parametrize("chunk", [8, 24, 0])
@pytest.mark.parametrize("family", ["gla", "delta_rule"])
def test_chunk_sizes_the_kernels_cannot_tile_raise_on_cpu_too(family, chunk):
    q = torch.rand(1, 4, 2, 8)
    with backend("reference"), pytest.raises(ValueError, match="chunk_size must be a power of two >= 16"):
        if family == "gla":
            chunk_gla(q, q, q, -q, chunk_size=chunk)
        else:
            chunk_delta_rule(q, q, q, q[..., 0], chunk_size=chunk)


def test_gla_chunk_above_the_tile_raises():
    q = torch.rand(1, 4, 2, 8)
    with pytest.raises(ValueError, match="<= 64"):
        chunk_gla(q, q, q, -q, chunk_size=128)
