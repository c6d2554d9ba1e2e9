"""The hybdsl command and the file-writing API: exit codes, artifacts, atomic writes, rendering."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import hybriddsl
from hybriddsl.cli import main

GOOD = "hidden = 32, heads = 4\nmamba.state = 4\nM A GLA FFN\nshared FFN@2\n"


@pytest.fixture
def hyb(tmp_path: Path) -> Path:
    p = tmp_path / "model.hyb"
    p.write_text(GOOD)
    return p


def test_check_ok_and_bad(hyb, tmp_path, capsys):
    assert main(["check", str(hyb)]) == 0
    assert "ok" in capsys.readouterr().out
    bad = tmp_path / "bad.hyb"
    bad.write_text("M M\nM(stat=3)\n")
    assert main(["check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{bad}:2:3: name error") and "did you mean 'state'" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "args", [["check", "/no/such/file.hyb"], ["compile", "/no/such/file.hyb"], ["render", "/no/such/file.hyb"]]
)
def test_missing_file_is_exit_2(args, capsys):
    assert main(args) == 2
    assert "no such file" in capsys.readouterr().err


def test_compile_prints_table_with_totals(hyb, capsys):
    assert main(["compile", str(hyb)]) == 0
    out = capsys.readouterr().out
    model = hybriddsl.parse_and_build(hyb)
    assert f"parameters      {sum(p.numel() for p in model.parameters()):,}" in out
    for kind in ("mamba", "attention", "gla", "ffn"):
        assert kind in out


def test_compile_dump_ir_shows_every_pass(hyb, capsys):
    assert main(["compile", str(hyb), "--dump-ir"]) == 0
    out = capsys.readouterr().out
    for name in ("expand", "resolve", "insert_shared", "tie", "infer_shapes", "fuse_add_norm", "count"):
        assert f"== after {name} ==" in out


def test_compile_pt_roundtrip_through_load(hyb, tmp_path):
    out = tmp_path / "m.pt"
    assert main(["compile", str(hyb), "-o", str(out), "--seed", "3"]) == 0
    model = hybriddsl.load(out).eval()
    torch.manual_seed(3)
    again = hybriddsl.parse_and_build(hyb).eval()  # same seed -> same weights: an independent rebuild
    x = torch.randn(2, 6, 32)
    torch.testing.assert_close(model(x), again(x))
    # and what save() wrote is what load() reads
    hybriddsl.save(again, tmp_path / "n.pt")
    torch.testing.assert_close(hybriddsl.load(tmp_path / "n.pt").eval()(x), again(x))


@pytest.mark.parametrize(
    "src",
    [
        GOOD,
        "hidden = 32\n[M M | A](mix=concat) FFN",
        "hidden = 32, vocab = 50\nM A A\ntie A",
        "hidden = 32, vocab = 50, embed_scale = 5.65625, logit_scale = 0.5, logit_softcap = 3.0\nM A",
        "hidden = 32, pos = sinusoidal, pre_norm = false, output = sequence, dropout = 0.1\nM A",
    ],
)
def test_compile_py_is_the_same_model(src, tmp_path):
    hyb = tmp_path / "model.hyb"
    hyb.write_text(src)
    out = tmp_path / "m.py"
    assert main(["compile", str(hyb), "-o", str(out)]) == 0
    ns: dict = {}
    exec(compile(out.read_text(), str(out), "exec"), ns)  # noqa: S102
    gen = ns["Model"]().eval()
    model = hybriddsl.parse_and_build(hyb).eval()
    gen.load_state_dict(model.state_dict())  # same module names: weights load unchanged
    s = model.graph.settings
    x = torch.randint(0, 50, (2, 6)) if s["vocab"] else torch.randn(2, 6, 32)
    torch.testing.assert_close(gen(x), model(x))


def test_compile_json_is_node_link(hyb, tmp_path):
    out = tmp_path / "m.json"
    assert main(["compile", str(hyb), "-o", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["format"] == "hybriddsl-ir/1" and data["source"] == GOOD
    ops = [n["op"] for n in data["graph"]["nodes"]]
    assert ops.count("mixer") == 6  # M, A, its FFN, GLA, FFN, shared FFN
    assert len(data["graph"]["edges"]) > len(ops) - 1


def test_bad_output_suffix_and_missing_folder_write_nothing(hyb, tmp_path, capsys):
    assert main(["compile", str(hyb), "-o", str(tmp_path / "m.txt")]) == 2
    assert main(["compile", str(hyb), "-o", str(tmp_path / "nope" / "m.pt")]) == 2
    assert not (tmp_path / "m.txt").exists() and not (tmp_path / "nope").exists()
    assert "Traceback" not in capsys.readouterr().err


def test_failed_write_leaves_no_partial_file(hyb, tmp_path, monkeypatch):
    out = tmp_path / "m.pt"
    out.write_bytes(b"old")

    def boom(obj, f, *a, **k):
        Path(f).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", boom)
    assert main(["compile", str(hyb), "-o", str(out)]) == 2
    assert out.read_bytes() == b"old"  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".m.pt")] == []  # no temp left behind


def test_render_png_is_a_real_image(hyb, tmp_path):
    from PIL import Image

    out = tmp_path / "m.png"
    assert main(["render", str(hyb), "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as im:
        im.verify()
    with Image.open(out) as im:
        assert im.size[0] > 100 and im.size[1] > 100


@pytest.mark.parametrize("suffix", ["svg", "pdf", "dot"])
def test_render_formats(hyb, tmp_path, suffix):
    out = tmp_path / f"m.{suffix}"
    assert main(["render", str(hyb), "-o", str(out)]) == 0
    data = out.read_bytes()
    assert {"svg": b"<svg", "pdf": b"%PDF", "dot": b"digraph"}[suffix] in data[:400]


def test_render_shows_shared_once_fused_and_params(tmp_path):
    out = tmp_path / "m.dot"
    hybriddsl.render("hidden = 32\nM M M; shared A(heads=4, ffn=false)@1,3", out)
    src = out.read_text()
    assert src.count("shared: one set of weights, 2 uses") == 1
    assert src.count("(use 1/2)") == 1 and src.count("(use 2/2)") == 1
    assert "(fused)" in src and "params" in src


def test_render_without_dot_writes_dot_source(hyb, tmp_path, monkeypatch, capsys):
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "dot" else real_which(name))
    out = tmp_path / "m.svg"
    assert main(["render", str(hyb), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "'dot' program was not found" in err and "apt-get install graphviz" in err
    assert not out.exists() and (tmp_path / "m.dot").read_text().startswith("digraph")


def test_render_bad_format(hyb, tmp_path, capsys):
    assert main(["render", str(hyb), "-o", str(tmp_path / "m.gif")]) == 2
    assert ".svg, .png, .pdf, .dot" in capsys.readouterr().err


def test_set_overrides_and_bad_set(hyb, capsys):
    assert main(["check", str(hyb), "--set", "hidden=64"]) == 0
    assert main(["check", str(hyb), "--set", "hidden"]) == 2
    assert main(["check", str(hyb), "--set", "hidden=abc"]) == 2
    err = capsys.readouterr().err
    assert "KEY=VALUE" in err and "integer" in err


def test_bench_runs(hyb, capsys):
    assert main(["bench", str(hyb), "--batch", "1", "--seq", "8", "--iters", "1"]) == 0
    out = capsys.readouterr().out
    assert "forward+backward" in out and "tokens/s" in out


def test_help_for_every_command(capsys):
    from hybriddsl.cli import parser

    sub = next(a for a in parser()._actions if a.dest == "command")
    for name in sub.choices:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
    assert "compile" in capsys.readouterr().out


def test_load_rejects_other_files(tmp_path):
    p = tmp_path / "x.pt"
    torch.save({"a": 1}, p)
    with pytest.raises(hybriddsl.HybFileError, match="not a hybriddsl model"):
        hybriddsl.load(p)
    p.write_bytes(b"garbage")
    with pytest.raises(hybriddsl.HybFileError):
        hybriddsl.load(p)
