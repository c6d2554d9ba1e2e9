"""Group rules (several tensors of ours <-> several checkpoint tensors) and zero-copy concatenations at import."""

from __future__ import annotations

import json
import struct

import torch
import transformers
from safetensors.torch import load_file, save_file

import hybriddsl
from hybriddsl.interop.checkpoint import Checkpoint
from hybriddsl.interop.weights import pieces, split0
from tests.interop.harness import SMALL_LLAMA


def offsets(path):
    """name -> absolute byte offset of its data, read from the safetensors header by hand."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    head = json.loads(raw[8 : 8 + n])
    return {k: 8 + n + v["data_offsets"][0] for k, v in head.items() if k != "__metadata__"}


def test_span_is_the_concatenation_when_back_to_back(tmp_path):
    g = torch.Generator().manual_seed(0)
    ts = {"a": torch.randn(3, 4, generator=g), "b": torch.randn(2, 4, generator=g), "c": torch.randn(5).double()}
    save_file(ts, tmp_path / "model.safetensors")
    ck = Checkpoint(tmp_path)
    pos = offsets(tmp_path / "model.safetensors")
    first, second = sorted(("a", "b"), key=pos.get)
    span = ck.span([first, second])
    assert torch.equal(span, torch.cat([ts[first], ts[second]], 0).flatten())
    assert ck.span([second, first]) is None  # not in file order
    assert ck.span(["a", "c"]) is None and ck.span(["c", "b"]) is None  # another dtype


def test_gated_mlp_is_a_view_of_the_file(tmp_path):
    """Llama's gate_proj and up_proj lie back to back: our stacked ``up`` is one view of the map, no copy."""
    cfg = transformers.LlamaConfig(**SMALL_LLAMA)
    torch.manual_seed(0)
    hf = transformers.AutoModelForCausalLM.from_config(cfg)
    hf.save_pretrained(tmp_path)
    ours = hybriddsl.from_pretrained(tmp_path)
    pos = offsets(tmp_path / "model.safetensors")
    up = ours.blocks[[k for k in ours.blocks if hasattr(ours.blocks[k], "up")][0]].up.weight
    embed = ours.embed.weight
    gate = "model.layers.0.mlp.gate_proj.weight"
    assert up.data_ptr() - embed.data_ptr() == pos[gate] - pos["model.embed_tokens.weight"]
    ref = hf.state_dict()
    assert torch.equal(up, torch.cat([ref[gate], ref["model.layers.0.mlp.up_proj.weight"]], 0))


def test_gated_mlp_in_two_shards_is_copied(tmp_path):
    """gate_proj and up_proj in different shards: concatenated (a copy), same logits as the single file."""
    cfg = transformers.LlamaConfig(**SMALL_LLAMA)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path / "one")
    whole = load_file(tmp_path / "one" / "model.safetensors")
    two = tmp_path / "two"
    two.mkdir()
    (two / "config.json").write_text((tmp_path / "one" / "config.json").read_text())
    a = {k: v for k, v in whole.items() if "up_proj" not in k}
    b = {k: v for k, v in whole.items() if "up_proj" in k}
    save_file(a, two / "a.safetensors")
    save_file(b, two / "b.safetensors")
    wmap = {**{k: "a.safetensors" for k in a}, **{k: "b.safetensors" for k in b}}
    (two / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wmap}))
    ids = torch.randint(0, 64, (1, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(hybriddsl.from_pretrained(two)(ids), hybriddsl.from_pretrained(tmp_path / "one")(ids))


def test_pieces_and_split0_invert_each_other():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(12, 3, generator=g)
    inter = pieces(["x", "y"], "t", lambda t: [t[0::2], t[1::2]], lambda ps: torch.stack(ps, 1).reshape(-1, 3))
    x, y = inter.load_all(t)
    assert torch.equal(x, t[0::2]) and x.is_contiguous() and x.data_ptr() != t.data_ptr()
    assert torch.equal(inter.save_all(x, y)[0], t)
    cut = split0(["p", "q", "r"], "t", [2, 4, 6])
    p, q, r = cut.load_all(t)
    assert [p.shape[0], q.shape[0], r.shape[0]] == [2, 4, 6] and q.data_ptr() == t[2:].data_ptr()
    assert torch.equal(cut.save_all(p, q, r)[0], t)
