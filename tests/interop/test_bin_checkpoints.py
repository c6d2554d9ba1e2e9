"""PyTorch ``.bin`` checkpoints (older Hugging Face folders): ``pytorch_model.bin`` and a sharded
``pytorch_model.bin.index.json``, read with torch.load(weights_only=True, mmap=True); a pickle that would run code
or a broken file is a HybFileError and nothing runs.

transformers 5's ``save_pretrained`` always writes safetensors (``safe_serialization=False`` is ignored), so the
folders are made as transformers 4 wrote them: ``torch.save`` of the state_dict next to ``config.json``."""

from __future__ import annotations

import json
import os

import pytest
import torch
import transformers

import hybriddsl
from hybriddsl.cli import main
from hybriddsl.errors import HybFileError
from tests.interop.harness import SMALL_LLAMA


@pytest.fixture(scope="module")
def hf():
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(transformers.LlamaConfig(**SMALL_LLAMA)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def bin_folder(model, d, shards: int = 1):
    """config.json + pytorch_model.bin (or ``shards`` files and the index), as transformers 4 saved them."""
    d.mkdir()
    model.config.save_pretrained(d)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    if shards == 1:
        torch.save(sd, d / "pytorch_model.bin")
        return d
    names = sorted(sd)
    wmap = {}
    for i in range(shards):
        fname = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
        part = names[i::shards]
        torch.save({k: sd[k] for k in part}, d / fname)
        wmap.update({k: fname for k in part})
    (d / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wmap}))
    return d


def logits(model, ids):
    with torch.no_grad():
        out = model(ids)
    return out if isinstance(out, torch.Tensor) else out.logits


IDS = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("shards", [1, 3])
def test_bin_checkpoint_matches_transformers(hf, tmp_path, shards, monkeypatch):
    d = bin_folder(hf, tmp_path / "bin", shards)
    calls = []
    real = torch.load

    def spy(*a, **k):
        calls.append(k)
        return real(*a, **k)

    monkeypatch.setattr(torch, "load", spy)
    ours = hybriddsl.from_pretrained(d)
    assert len(calls) == shards and all(k.get("weights_only") is True and k.get("mmap") is True for k in calls)
    ref = logits(hf, IDS)
    err = (logits(ours, IDS) - ref).abs().max().item() / max(1.0, ref.abs().max().item())
    assert err <= 1e-4, err


def test_pickle_that_runs_code_is_refused(hf, tmp_path, capsys):
    d = bin_folder(hf, tmp_path / "evil")
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    sd = torch.load(d / "pytorch_model.bin", weights_only=True)
    sd["model.norm.weight"] = Payload()
    torch.save(sd, d / "pytorch_model.bin")
    with pytest.raises(HybFileError, match=r"pytorch_model.bin is refused: .*system"):
        hybriddsl.from_pretrained(d)
    assert main(["convert", str(d), "--from", "hf", "-o", str(tmp_path / "m.pt")]) == 2
    assert "may not run code" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "m.pt").exists()


def test_broken_and_odd_bin_files(hf, tmp_path):
    d = bin_folder(hf, tmp_path / "junk")
    (d / "pytorch_model.bin").write_bytes(b"not a zip file at all" * 4)
    with pytest.raises(HybFileError, match="pytorch_model.bin is not a PyTorch checkpoint"):
        hybriddsl.from_pretrained(d)
    torch.save({"model.norm.weight": torch.ones(32), "step": 3}, d / "pytorch_model.bin")
    with pytest.raises(HybFileError, match="entry 'step' is a int, not a tensor"):
        hybriddsl.from_pretrained(d)
    torch.save([torch.ones(2)], d / "pytorch_model.bin")
    with pytest.raises(HybFileError, match="holds a list, not a dict of tensors"):
        hybriddsl.from_pretrained(d)


def test_bin_index_naming_a_missing_shard(hf, tmp_path):
    d = bin_folder(hf, tmp_path / "sharded", shards=2)
    (d / "pytorch_model-00002-of-00002.bin").unlink()
    with pytest.raises(HybFileError, match="names shard 'pytorch_model-00002-of-00002.bin'.*does not exist"):
        hybriddsl.from_pretrained(d)


def test_bin_missing_tensor_is_named(hf, tmp_path):
    d = bin_folder(hf, tmp_path / "missing")
    sd = torch.load(d / "pytorch_model.bin", weights_only=True)
    del sd["model.layers.1.mlp.down_proj.weight"]
    torch.save(sd, d / "pytorch_model.bin")
    with pytest.raises(HybFileError, match="'model.layers.1.mlp.down_proj.weight' is missing"):
        hybriddsl.from_pretrained(d)
