"""Export (hybriddsl.export, ``hybdsl export``): the exported step, loaded back with torch.export.load, drives a
stream frame by frame and gives the model's parallel-forward outputs; the exported forward equals the model;
bad input is a HybError (exit status 2)."""

from __future__ import annotations

import json

import pytest
import torch

from hybriddsl import api, parse_and_build
from hybriddsl.cli import main
from hybriddsl.export import META, initial_state, load_step, save_forward, save_step

SRC = "hidden = 32, heads = 4, embed_dim = 12, mamba.state = 4, seq_len = 8\nM A(window=3, rope=true) GLA\n"


# delta_net's step returns its state keys in another order than init_state: the flat state must follow
# init_state's order all the same; moe's sparse dispatch has data-dependent shapes (dense when traced)
SRC_MORE = (
    "hidden = 32, heads = 4, embed_dim = 12, mamba.state = 4\nD GD E(experts=4) M2(head_dim=16) R(head_size=16) L\n"
)


@pytest.mark.parametrize("src", [SRC, SRC_MORE], ids=["mamba-rope-gla", "delta-moe-mamba2-rwkv-griffin"])
def test_exported_step_streams_like_the_model(tmp_path, src):
    torch.manual_seed(0)
    model = parse_and_build(src, output="sequence").eval()
    path = save_step(model, tmp_path / "m.pt2", batch=2)
    ep, meta = load_step(path)
    assert meta["batch"] == 2 and meta["input"]["shape"] == [2, 12] and meta["source"] == src
    step = ep.module()
    x = torch.randn(2, 9, 12)  # longer than the window
    state = initial_state(meta)
    assert [list(t.shape) for t in state] == [s["shape"] for s in meta["state"]]
    outs = []
    with torch.no_grad():
        for t in range(x.shape[1]):
            y, *state = step(x[:, t], *state)
            outs.append(y)
        full = model(x)
    torch.testing.assert_close(torch.stack(outs, 1), full, rtol=1e-4, atol=1e-4)


def test_exported_forward_equals_the_model(tmp_path):
    torch.manual_seed(0)
    model = parse_and_build(SRC).eval()
    ep = torch.export.load(save_forward(model, tmp_path / "f.pt2", batch=2))
    x = torch.randn(2, 8, 12)
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x), model(x), rtol=1e-5, atol=1e-5)


def test_cli_export_with_forward_and_weights(tmp_path, capsys):
    hyb = tmp_path / "m.hyb"
    hyb.write_text(SRC)
    torch.manual_seed(3)
    trained = parse_and_build(SRC).eval()
    api.save(trained, tmp_path / "w.pt")
    out = tmp_path / "m.pt2"
    args = ["export", str(hyb), "-o", str(out), "--forward", "--aot", "--weights", str(tmp_path / "w.pt")]
    assert main(args) == 0
    assert out.is_file() and (tmp_path / "m.forward.pt2").is_file()
    x = torch.randn(1, 8, 12)
    fwd = torch.export.load(tmp_path / "m.forward.pt2").module()
    extra = {META: ""}
    step = torch.export.load(out, extra_files=extra).module()
    meta = json.loads(extra[META])
    state = initial_state(meta)
    with torch.no_grad():
        want = trained(x)  # output = last
        torch.testing.assert_close(fwd(x), want, rtol=1e-5, atol=1e-5)
        for t in range(8):
            y, *state = step(x[:, t], *state)
        torch.testing.assert_close(y, want, rtol=1e-4, atol=1e-4)
        compiled = torch._inductor.aoti_load_package(str(out))  # --aot: the compiled step, same file
        state = initial_state(meta)
        for t in range(8):
            y, *state = compiled(x[:, t].contiguous(), *state)
    torch.testing.assert_close(y, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "args, message",
    [
        (["-o", "m.pt"], "pt2"),
        (["-o", "m.pt2", "--batch", "0"], "at least 1"),
        (["-o", "m.pt2", "--weights", "missing.pt"], "no such weights"),
        (["-o", "nowhere/m.pt2"], "does not exist"),
    ],
    ids=["suffix", "batch0", "weights-missing", "no-folder"],
)
def test_cli_export_bad_input_exits_2(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.hyb").write_text(SRC)
    assert main(["export", "m.hyb", *args]) == 2
    assert message in capsys.readouterr().err


def test_cli_export_refuses_a_growing_kv_cache(tmp_path, capsys):
    (tmp_path / "m.hyb").write_text("hidden = 32, heads = 4, embed_dim = 12\nM A\n")
    assert main(["export", str(tmp_path / "m.hyb"), "-o", str(tmp_path / "m.pt2")]) == 2
    assert "window" in capsys.readouterr().err and not (tmp_path / "m.pt2").exists()
