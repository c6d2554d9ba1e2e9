"""Streaming (hybriddsl.streaming): push frame by frame == the parallel forward at every position, for every
layer kind and mixed models; reset(i) of one row == a fresh stream for that row while the others go on;
snapshot/restore and torch.save round trips; the state stays in place (same data_ptrs) frame after frame."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hybriddsl import HybOptionError, StreamError, parse_and_build

SMALL = {"hidden": 32, "heads": 4, "mamba.state": 4, "embed_dim": 12}


class CausalConvMix(nn.Module):
    """A user module with no step (custom recomputes it on the prefix): causal depthwise conv + linear."""

    def __init__(self, hidden: int):
        super().__init__()
        self.conv = nn.Conv1d(hidden, hidden, 3, groups=hidden)
        self.proj = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.conv(F.pad(x.transpose(1, 2), (2, 0))).transpose(1, 2)))


class Ema(nn.Module):
    """A user module with its own state: h_t = a h_{t-1} + (1 - a) W x_t (forward by a loop)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.w = nn.Linear(hidden, hidden)
        self.a = nn.Parameter(torch.rand(hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, st = [], self.init_state(x.shape[0], x.device, x.dtype)
        for t in range(x.shape[1]):
            y, st = self.step(x[:, t], st)
            h.append(y)
        return torch.stack(h, 1)

    def init_state(self, batch, device=None, dtype=None):
        return {"h": torch.zeros(batch, self.a.shape[0], device=device, dtype=dtype)}

    def step(self, x, state):
        a = torch.sigmoid(self.a)
        h = a * state["h"] + (1 - a) * self.w(x)
        return h, {"h": h}


def make_conv(hidden_size: int) -> nn.Module:
    return CausalConvMix(hidden_size)


def make_ema(hidden_size: int) -> nn.Module:
    return Ema(hidden_size)


KINDS = {
    "mamba": "M",
    "mamba2": "M2(head_dim=16)",
    "attention-full": "A(ffn=false)",
    "attention-rope-gqa": "A(kv_heads=2, rope=true, qk_norm=true)",
    "attention-W3": "A(window=3)",
    "gla": "GLA",
    "rwkv": "R(head_size=16)",
    "delta_net": "D",
    "gated_delta_net": "GD",
    "griffin": "L",
    "gru": "GRU",
    "ffn": "FFN",
    "kan": "K",
    "moe": "E(experts=4)",
    "custom-prefix": f'custom(fn="{__name__}:make_conv")',
    "custom-step": f'custom(fn="{__name__}:make_ema")',
    "parallel": "[M | A(window=4, ffn=false)](mix=gate)",
}

MIXED = {
    "edifice-like-W4": "M M A(window=4) M M A(window=4)",
    "every-kind": "M M2(head_dim=16) A(window=5) GLA R(head_size=16) D GD L GRU K E(experts=4) [M | A](mix=concat)",
    "post-norm-sinusoidal": "pre_norm = false\npos = sinusoidal\nM A(window=3, rope=true) GLA",
    "vocab-logits": "vocab = 13\nM A(window=4) FFN",
}


def build(src: str, batch_frames: tuple[int, int] = (2, 11)):
    torch.manual_seed(0)
    vocab = "vocab" in src
    settings = {k: v for k, v in SMALL.items() if not (vocab and k == "embed_dim")}
    trusted = "custom(" in src  # this file's own factories (tests/test_security.py covers the refusal)
    model = parse_and_build(src, **settings, output="logits" if vocab else "sequence", trust_custom=trusted).eval()
    b, t = batch_frames
    x = torch.randint(0, 13, (b, t)) if vocab else torch.randn(b, t, SMALL["embed_dim"])
    return model, x


def stream_all(stream, x: torch.Tensor) -> torch.Tensor:
    return torch.stack([stream.push(x[:, t]) for t in range(x.shape[1])], 1)


@pytest.mark.parametrize("src", list(KINDS.values()) + list(MIXED.values()), ids=list(KINDS) + list(MIXED))
def test_stream_equals_parallel_forward_at_every_position(src):
    model, x = build(src)  # 11 frames: longer than every window above
    with torch.no_grad():
        full = model(x)
    got = stream_all(model.stream(batch=2), x)
    torch.testing.assert_close(got, full, rtol=1e-4, atol=1e-4)


def test_output_last_answers_every_frame_like_a_window_rerun():
    """output=last (Edifice): push t == forward over the frames so far, last position (window 4 < 9 frames)."""
    torch.manual_seed(0)
    model = parse_and_build("M A(window=4) M", **SMALL).eval()
    x = torch.randn(1, 9, SMALL["embed_dim"])
    s = model.stream()
    for t in range(9):
        with torch.no_grad():
            want = model(x[:, : t + 1])
        torch.testing.assert_close(s.push(x[:, t]), want, rtol=1e-4, atol=1e-4)


RESET = {
    "W3-rope-sinusoidal": "pos = sinusoidal\nM A(window=3, rope=true) GLA L",
    "full-attention-rope": "A(rope=true, ffn=false) D GRU",
    "custom-step-rwkv": f'custom(fn="{__name__}:make_ema") R(head_size=16) M2(head_dim=16)',
}


@pytest.mark.parametrize("src", list(RESET.values()), ids=list(RESET))
def test_reset_one_row_equals_a_fresh_stream_while_the_others_continue(src):
    model, x = build(src, (3, 13))
    s = model.stream(batch=3)
    first = stream_all(s, x[:, :6])
    s.reset(1)
    rest = stream_all(s, x[:, 6:])
    with torch.no_grad():
        full = model(x)
        fresh = model(x[1:2, 6:])
    got = torch.cat([first, rest], 1)
    torch.testing.assert_close(got[[0, 2]], full[[0, 2]], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(rest[1:2], fresh, rtol=1e-4, atol=1e-4)
    s.reset()  # every row: the stream starts over
    torch.testing.assert_close(stream_all(s, x[:, :4]), full[:, :4], rtol=1e-4, atol=1e-4)


def test_reset_row_refused_for_a_prefix_recomputing_custom_layer():
    model, _ = build(KINDS["custom-prefix"])
    with pytest.raises(StreamError, match="prefix"):
        model.stream(batch=2).reset(0)


def test_snapshot_restore_and_torch_save_round_trip():
    model, x = build(MIXED["edifice-like-W4"], (2, 12))
    s = model.stream(batch=2)
    stream_all(s, x[:, :5])
    snap = s.snapshot()
    ahead = stream_all(s, x[:, 5:])
    s.restore(snap)  # rollback
    torch.testing.assert_close(stream_all(s, x[:, 5:]), ahead, rtol=0, atol=0)
    buf = io.BytesIO()
    torch.save(snap, buf)
    buf.seek(0)
    other = model.stream(batch=2)
    other.restore(torch.load(buf))
    assert other.frames == 5
    torch.testing.assert_close(stream_all(other, x[:, 5:]), ahead, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(ahead, model(x)[:, 5:], rtol=1e-4, atol=1e-4)


def test_snapshot_of_a_growing_cache_restores():
    model, x = build("A(ffn=false) M", (1, 8))
    s = model.stream()
    stream_all(s, x[:, :3])
    snap = s.snapshot()
    ahead = stream_all(s, x[:, 3:])
    s.restore(snap)
    torch.testing.assert_close(stream_all(s, x[:, 3:]), ahead, rtol=0, atol=0)


def test_state_is_updated_in_place():
    """Fixed-shape state: the same tensors (data_ptrs) after many frames, and they do change."""
    model, x = build(MIXED["every-kind"].replace("[M | A]", "[M | A(window=2)]"), (2, 11))
    s = model.stream(batch=2)
    ptrs = s.data_ptrs()
    before = [t.clone() for t in (d[k] for d, k, _ in s._slots)]
    stream_all(s, x)
    assert s.data_ptrs() == ptrs
    after = [d[k] for d, k, _ in s._slots]
    assert sum(not torch.equal(a, b) for a, b in zip(before, after)) >= len(after) - 1


def test_bad_input_is_a_hyb_error():
    model, x = build("M")
    s = model.stream(batch=2)
    with pytest.raises(StreamError) as e:
        s.push(torch.randn(3, SMALL["embed_dim"]))
    assert not isinstance(e.value, HybOptionError) and str(e.value).startswith("stream error: push takes")
    with pytest.raises(StreamError, match="embed_dim"):
        s.push(torch.randn(3, SMALL["embed_dim"]))
    with pytest.raises(StreamError, match="reset row"):
        s.reset(2)
    with pytest.raises(StreamError, match="snapshot"):
        s.restore({"state": {}})
    with pytest.raises(StreamError, match="eval"):
        model.train().stream()
    model.eval()
    with pytest.raises(StreamError, match="grow"):
        build("A(ffn=false)")[0].stream(compile=True)
    if not torch.cuda.is_available():  # a CPU model cannot be captured
        with pytest.raises(HybOptionError, match="CUDA"):
            model.stream(cuda_graph=True)


def test_aot_compiled_stream_for_every_kind():
    """compile=True (AOTInductor): one compiled step for a model mixing every kind == the parallel forward at
    every position, on non-contiguous frames, with the state updated in place; reset/snapshot/restore work on
    it; weights loaded in place afterwards are used (the compiled code reads the model's own tensors)."""
    src = MIXED["every-kind"].replace("[M | A]", "[M | A(window=2)]") + f' custom(fn="{__name__}:make_ema")'
    model, x = build(src, (2, 9))
    s = model.stream(batch=2, compile=True)
    assert s.compile == "aot"
    ptrs = s.data_ptrs()
    with torch.no_grad():
        full = model(x)
    torch.testing.assert_close(stream_all(s, x), full, rtol=1e-4, atol=1e-4)  # x[:, t] is not contiguous
    assert s.data_ptrs() == ptrs

    snap = s.snapshot()
    ahead = stream_all(s, x[:, :3])
    s.restore(snap)
    torch.testing.assert_close(stream_all(s, x[:, :3]), ahead, rtol=0, atol=0)

    s.reset(1)  # row 1 restarts on new frames, row 0 goes on
    fresh = x[1:, :4].flip(1).contiguous()
    got = stream_all(s, torch.cat([x[:1, 3:7], fresh]))
    with torch.no_grad():
        torch.testing.assert_close(got[1:], model(fresh), rtol=1e-4, atol=1e-4)

    other, _ = build(src)
    for p in other.parameters():  # new weights, copied into the model's own tensors
        p.data.add_(0.1 * torch.randn_like(p))
    model.load_state_dict(other.state_dict())
    s.reset()
    with torch.no_grad():
        want = other(x)
    torch.testing.assert_close(stream_all(s, x), want, rtol=1e-4, atol=1e-4)


def test_aot_compiled_stream_of_a_token_model_with_post_norm_and_positions():
    """The plan's other steps compiled too: token embedding, sinusoidal positions, post-norm, RoPE, logits."""
    model, x = build("vocab = 13\npre_norm = false\npos = sinusoidal\nM A(window=3, rope=true) GLA", (2, 7))
    s = model.stream(batch=2, compile=True)
    with torch.no_grad():
        full = model(x)
    torch.testing.assert_close(stream_all(s, x), full, rtol=1e-4, atol=1e-4)


def test_eager_stream_sees_weights_loaded_in_place():
    """The eager fast paths cache what they derive from weights (Mamba's A = -exp(A_log)) only as long as the
    weights are unchanged: after load_state_dict the stream gives the new model's outputs."""
    model, x = build("M A(window=3) M", (2, 6))
    s = model.stream(batch=2)
    stream_all(s, x)
    other, _ = build("M A(window=3) M")
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.1 * torch.randn_like(p))
        want = other(x)
    model.load_state_dict(other.state_dict())
    s.reset()
    torch.testing.assert_close(stream_all(s, x), want, rtol=1e-4, atol=1e-4)


def test_compile_setting_is_checked():
    model, _ = build("M")
    with pytest.raises(HybOptionError, match="compile takes"):
        model.stream(compile="fast")


def test_dynamo_compiled_stream_matches_eager():
    """torch.compile of the step (state written back in place) == the parallel forward."""
    model, x = build("M A(window=3)", (1, 6))
    s = model.stream(compile="dynamo")
    ptrs = s.data_ptrs()
    with torch.no_grad():
        full = model(x)
    torch.testing.assert_close(stream_all(s, x), full, rtol=1e-4, atol=1e-4)
    assert s.data_ptrs() == ptrs


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_stream_matches_forward():
    torch.manual_seed(0)
    model = parse_and_build(MIXED["edifice-like-W4"], **SMALL, output="sequence", device="cuda").eval()
    x = torch.randn(2, 10, SMALL["embed_dim"], device="cuda")
    s = model.stream(batch=2, cuda_graph=True)
    with torch.no_grad():
        full = model(x)
    torch.testing.assert_close(stream_all(s, x), full, rtol=1e-3, atol=1e-3)
    ptrs, before = s.data_ptrs(), torch.cuda.memory_allocated()
    for t in range(200):
        s.push(x[:, t % 10])
    assert s.data_ptrs() == ptrs and torch.cuda.memory_allocated() == before  # nothing new per frame


def test_cli_bench_stream_prints_the_table_and_rejects_bad_input(tmp_path, capsys):
    from hybriddsl.cli import main

    f = tmp_path / "s.hyb"
    f.write_text("hidden = 32, embed_dim = 8, heads = 4, seq_len = 6\nM A(window=6)\n")
    base = ["bench", str(f), "--stream", "--device", "cpu", "--batch", "2", "--frames", "20", "--threads", "1"]
    assert main(base) == 0
    out = capsys.readouterr().out
    assert "| 1 | 1 | stream |" in out and "| 1 | 1 | rerun-6 |" in out and "| 1 | 2 | stream |" in out
    assert "| 1 | 1 | matvec-floor |" in out
    assert main([*base[:-1], "one"]) == 2 and "--threads" in capsys.readouterr().err
