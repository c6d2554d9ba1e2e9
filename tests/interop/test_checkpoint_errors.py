"""Bad Hugging Face folders: every mistake is a HybFileError / ConvertError naming the file and the tensor or
field, the CLI exits 2, and nothing is half-written."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

import hybriddsl
from hybriddsl.cli import main
from hybriddsl.errors import HybError, HybFileError
from hybriddsl.interop import ConvertError


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    cfg = transformers.MambaConfig(vocab_size=32, hidden_size=16, state_size=4, num_hidden_layers=2)
    d = tmp_path_factory.mktemp("mamba") / "hf"
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(d)
    return d


@pytest.fixture
def copy(folder, tmp_path):
    d = tmp_path / "copy"
    shutil.copytree(folder, d)
    return d


def rewrite(d, fn):
    """Rewrite model.safetensors through ``fn(dict) -> dict``."""
    t = load_file(d / "model.safetensors")
    save_file(fn(t), d / "model.safetensors")


def edit_config(d, **fields):
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(fields)
    (d / "config.json").write_text(json.dumps(cfg))


def test_folder_without_config(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(HybFileError, match="has no config.json"):
        hybriddsl.from_pretrained(tmp_path / "empty")
    assert main(["convert", str(tmp_path / "empty"), "--from", "hf", "-o", str(tmp_path / "m.pt")]) == 2
    assert "config.json" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()


def test_unknown_model_type_suggests_nearest(copy):
    edit_config(copy, model_type="mamba3")
    with pytest.raises(ConvertError, match="did you mean 'mamba"):
        hybriddsl.from_pretrained(copy)


def test_missing_tensor_is_named(copy):
    rewrite(copy, lambda t: {k: v for k, v in t.items() if k != "backbone.layers.1.mixer.A_log"})
    with pytest.raises(HybFileError, match=r"'backbone\.layers\.1\.mixer\.A_log' is missing") as e:
        hybriddsl.from_pretrained(copy)
    assert "model.safetensors" in str(e.value)


def test_extra_tensor_is_named(copy):
    rewrite(copy, lambda t: {**t, "backbone.layers.2.mixer.D": torch.ones(32)})
    with pytest.raises(HybFileError, match=r"'backbone\.layers\.2\.mixer\.D' is not part of the model"):
        hybriddsl.from_pretrained(copy)


def test_tied_checkpoint_that_stores_the_head_too(copy):
    rewrite(copy, lambda t: {**t, "lm_head.weight": t["backbone.embeddings.weight"].clone()})
    m = hybriddsl.from_pretrained(copy)
    assert m.head.weight is m.embed.weight


def test_wrong_shape_is_named(copy):
    rewrite(copy, lambda t: {**t, "backbone.layers.0.mixer.D": torch.ones(31)})
    with pytest.raises(
        HybFileError, match=r"model\.safetensors: file error: tensor 'backbone\.layers\.0\.mixer\.D' has shape \[31\]"
    ):
        hybriddsl.from_pretrained(copy)


def test_wrong_dtype_is_named(copy):
    rewrite(copy, lambda t: {**t, "backbone.layers.0.mixer.D": torch.ones(32, dtype=torch.int32)})
    with pytest.raises(HybFileError, match=r"'backbone\.layers\.0\.mixer\.D' has dtype int32"):
        hybriddsl.from_pretrained(copy)


def test_shard_index_naming_a_missing_file(folder, copy):
    t = load_file(copy / "model.safetensors")
    names = sorted(t)
    half = len(names) // 2
    save_file({k: t[k] for k in names[:half]}, copy / "model-00001-of-00002.safetensors")
    save_file({k: t[k] for k in names[half:]}, copy / "model-00002-of-00002.safetensors")
    (copy / "model.safetensors").unlink()
    wmap = {k: f"model-0000{1 if i < half else 2}-of-00002.safetensors" for i, k in enumerate(names)}
    (copy / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wmap}))
    # the sharded folder loads and equals the single-file one
    ids = torch.randint(0, 32, (1, 5))
    with torch.no_grad():
        assert torch.equal(hybriddsl.from_pretrained(folder)(ids), hybriddsl.from_pretrained(copy)(ids))
    (copy / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(HybFileError, match="model-00002-of-00002.safetensors.*does not exist"):
        hybriddsl.from_pretrained(copy)


@pytest.mark.parametrize("nan", ["NaN", '{"__float__": "NaN"}'])
def test_nan_field_is_named(copy, nan):
    text = (copy / "config.json").read_text().replace('"layer_norm_epsilon": 1e-05', f'"layer_norm_epsilon": {nan}')
    (copy / "config.json").write_text(text)
    with pytest.raises(HybFileError, match="config.json: file error: field 'layer_norm_epsilon' is NaN"):
        hybriddsl.from_pretrained(copy)


def test_bad_json_has_line_and_column(copy, capsys):
    (copy / "config.json").write_text('{\n  "model_type": "mamba",\n  oops\n}')
    assert main(["convert", str(copy), "--from", "hf"]) == 2
    assert "config.json:3:3" in capsys.readouterr().err


def test_cli_round_trip_and_failed_export_writes_nothing(folder, tmp_path, capsys):
    pt, out = tmp_path / "m.pt", tmp_path / "out"
    assert main(["convert", str(folder), "--from", "hf", "-o", str(pt)]) == 0
    assert main(["convert", str(pt), "--to", "hf-mamba", "-o", str(out)]) == 0
    back = transformers.AutoModelForCausalLM.from_pretrained(out)
    ids = torch.randint(0, 32, (1, 6))
    with torch.no_grad():
        assert torch.allclose(back(ids).logits, hybriddsl.load(pt)(ids), atol=1e-5)
    # a family that cannot say the model: an error naming the layer, exit 2, no folder contents
    bad = tmp_path / "bad"
    assert main(["convert", str(pt), "--to", "hf-mamba2", "-o", str(bad)]) == 2
    assert "layer 1 (mamba)" in capsys.readouterr().err
    assert not bad.exists() or not any(bad.iterdir())
    # .hyb text from a folder still works
    hyb = tmp_path / "m.hyb"
    assert main(["convert", str(folder), "--from", "hf", "-o", str(hyb)]) == 0
    assert hybriddsl.compile(hyb).totals["params"] == sum(p.numel() for p in back.parameters())


def test_save_pretrained_needs_vocab(tmp_path):
    m = hybriddsl.parse_and_build("hidden = 16\nnorm = rmsnorm\nM M")
    with pytest.raises(HybError, match="vocab"):
        hybriddsl.save_pretrained(m, tmp_path / "x", family="mamba")
    assert not (tmp_path / "x").exists()


def test_weights_are_copy_on_write_views_and_dtype_casts(copy):
    before = (copy / "model.safetensors").read_bytes()
    m = hybriddsl.from_pretrained(copy)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)  # an optimizer step writes in place: the file must not change
    del m
    assert (copy / "model.safetensors").read_bytes() == before
    m16 = hybriddsl.from_pretrained(copy, dtype="bfloat16")
    assert {p.dtype for p in m16.parameters()} == {torch.bfloat16}
    assert m16.head.weight is m16.embed.weight  # tied again after the load
    with pytest.raises(ConvertError, match="dtype must be one of"):
        hybriddsl.from_pretrained(copy, dtype="float8")
