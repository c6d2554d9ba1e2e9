"""The plan (one description that the interpreter runs and codegen prints) and the graph's one visitor."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from hybriddsl import IRError, compile, parse_and_build
from hybriddsl.codegen import generate
from hybriddsl.ir import Op
from hybriddsl.passes import PIPELINE, count, fuse_add_norm, infer_shapes
from hybriddsl.plan import build

SMALL = {"hidden": 32, "heads": 4, "mamba.state": 4}


def test_walk_raises_on_an_op_without_a_handler_before_calling_any():
    g = compile("vocab = 13\nM A", **SMALL)
    called = []
    handlers = {op: lambda n, d: called.append(n) for op in Op if op is not Op.HEAD}
    with pytest.raises(IRError, match="no handler for op head"):
        g.walk(handlers)
    assert called == []  # checked up front: no reader sees half a graph
    g.walk({**handlers, Op.HEAD: lambda n, d: called.append(n)})
    assert called == g.order()


def _graphs():
    """Graphs that hold every op between them: the pipeline with and without fusion (plain adds)."""
    src = "vocab = 13\npos = sinusoidal\nM A"
    yield compile(src, **SMALL)
    yield compile(src, passes=[p for p in PIPELINE if p is not fuse_add_norm], **SMALL)


def test_every_reader_handles_every_op():
    from hybriddsl.rendering import to_dot

    seen = set()
    for g in _graphs():
        seen |= {g[n]["op"] for n in g.order()}
        build(g)  # each walks the graph and raises on an op it does not handle
        to_dot(g)
        count(g)
        infer_shapes(g)
        generate(g)
    assert seen == set(Op)


def test_positional_encoding_is_a_node_of_its_own():
    g = compile("pos = sinusoidal\nM A", **SMALL)
    (pe,) = g.nodes(Op.POS_ENC)
    (proj,) = g.nodes(Op.IN_PROJ)
    assert g.preds(pe) == [proj] and g.succs(proj) == [pe]
    assert [st.op for st in build(g).steps][:2] == [Op.IN_PROJ, Op.POS_ENC]
    assert not list(compile("M A", **SMALL).nodes(Op.POS_ENC))


def test_positional_encoding_adds_the_sinusoid_table():
    """Reference: the same model without positions, fed x + PE with PE written from Vaswani et al.'s formula."""
    torch.manual_seed(0)
    with_pe = parse_and_build("pos = sinusoidal\nM A", **SMALL, output="sequence").eval()
    without = parse_and_build("M A", **SMALL, output="sequence").eval()
    without.load_state_dict(with_pe.state_dict())
    T, d = 6, 32
    pe = torch.zeros(T, d)
    for p in range(T):
        for i in range(0, d, 2):
            pe[p, i] = math.sin(p / 10000 ** (i / d))
            pe[p, i + 1] = math.cos(p / 10000 ** (i / d))
    x = torch.randn(2, T, d)
    with torch.no_grad():
        torch.testing.assert_close(with_pe(x), without(x + pe), rtol=1e-5, atol=1e-5)


CODEGEN_SOURCES = [
    "M M A M GLA FFN; shared attn@2,4,6",
    "(M A)*2; tie A",
    "pre_norm = false\nM A FFN",
    "pos = sinusoidal\nvocab = 13\ntie_embeddings = true\nM A",
    "vocab = 13, embed_scale = 2.0, logit_softcap = 5.0, norm = rmsnorm\nM GLA",
    "embed_dim = 12, output = sequence\n[M | A](mix=gate) FFN",
    "pre_norm = false, pos = sinusoidal, output = sequence\nM A",
]


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("src", CODEGEN_SOURCES)
def test_generated_code_computes_what_the_interpreter_computes(src, fused):
    """model.code executed as a module, loaded with the model's weights, gives the interpreter's outputs."""
    from hybriddsl.lower import lower

    passes = PIPELINE if fused else [p for p in PIPELINE if p is not fuse_add_norm]
    torch.manual_seed(0)
    model = lower(compile(src, passes=passes, **SMALL)).eval()
    code = model.code
    assert "_add_norm" not in code and "hybriddsl.lower import _" not in code  # public names only
    namespace: dict = {}
    exec(compile_source(code), namespace)
    generated = namespace["Model"]().eval()
    generated.load_state_dict(model.state_dict())  # same module names: the same checkpoint loads
    x = torch.randint(0, 13, (2, 7)) if "vocab" in src else torch.randn(2, 7, 12 if "embed_dim" in src else 32)
    with torch.no_grad():
        torch.testing.assert_close(generated(x), model(x), rtol=0, atol=0)


def compile_source(code: str):
    import builtins

    return builtins.compile(code, "<model.code>", "exec")


def test_a_step_can_read_the_embedding_output():
    """Register x0 holds the embedding output: a mixer step reading it gets the input (identity in_proj here).
    Reference: the two-block pre-norm recurrence written out."""
    torch.manual_seed(0)
    model = parse_and_build("FFN FFN", **SMALL, output="sequence").eval()
    i = [k for k, st in enumerate(model.plan) if st.op is Op.MIXER][1]
    model.plan[i] = dataclasses.replace(model.plan[i], src="x0")
    b = model.blocks
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        r = x + b["ffn_0"](b["norm_0"](x))
        r = r + b["ffn_1"](x)  # the second block reads x0, not its norm
        torch.testing.assert_close(model(x), b["norm_2"](r))
