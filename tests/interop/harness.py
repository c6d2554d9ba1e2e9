"""The shared round trip every Hugging Face family is tested with (transformers is the reference).

Usage, one test per family (configs come from transformers' own config class, never a hand-written dict)::

    from tests.interop.harness import roundtrip

    def test_mamba(tmp_path):
        cfg = transformers.MambaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, state_size=8)
        r = roundtrip(cfg, tmp_path, family="mamba")   # asserts inside; returns the measured errors

``roundtrip(config, tmp_path, family=None, *, seq=12, prompt=4, float64=True, decode=True, export=True,
noise=0.1, seed=0)``:

1. builds ``AutoModelForCausalLM.from_config(config)`` and adds ``noise * N(0, 1)`` to every floating parameter
   and buffer (so norm weights are not all 1 and a swapped tensor shows), then ``save_pretrained`` to
   ``tmp_path/"hf"``;
2. ``hybriddsl.from_pretrained`` of that folder: logits ``[2, seq, vocab]`` on random ids must match
   transformers' within ``1e-4 * max(1, max |logits|)`` (float32);
3. ``float64``: both models in float64 within ``1e-9 * max(1, max |logits|)``. transformers computes norms,
   routers and RoPE tables in float32 whatever the model's dtype; :func:`float64_reference` runs the reference
   with those casts kept in float64 (documented there), so the bound measures the math, not that rounding;
4. ``decode``: transformers' cached greedy generation (``generate(..., output_logits=True)``) from a ``prompt``
   long prefix to ``seq`` tokens; our ``init_state``/``step`` and ``model.stream()`` over the same tokens must
   give its logits at every generated position (and our parallel logits at every position);
5. ``export``: ``hybriddsl.save_pretrained(ours, tmp_path/"out", family)``, reloaded with
   ``AutoModelForCausalLM.from_pretrained``: same logits again (1e-4 relative, float32).

``written(config) -> dict``: the config.json that ``config.save_pretrained`` writes, for tests of the config
readers alone.

Returns (from ``roundtrip``) a dict of the measured maximum differences (``forward``, ``float64``, ``step``, ``stream``,
``export``) for the test to print or check further. Keep configs tiny (hidden <= 64, 2-4 layers): the whole
round trip then takes a second or two on a 2-core CPU.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch

import hybriddsl

TOL32, TOL64 = 1e-4, 1e-9

# a tiny Llama-family config (GQA: 4 query heads on 2 key/value heads) shared by the Llama-based tests
SMALL_LLAMA = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=40,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
)


def written(config: Any) -> dict[str, Any]:
    """The dict of the ``config.json`` that ``config.save_pretrained`` writes (what a real folder holds)."""
    import tempfile

    from hybriddsl.interop.checkpoint import read_config

    with tempfile.TemporaryDirectory() as d:
        config.save_pretrained(d)
        return read_config(d)


def scale(t: torch.Tensor) -> float:
    return max(1.0, t.abs().max().item())


def perturb(model: torch.nn.Module, noise: float, seed: int) -> None:
    """Add ``noise * N(0, 1)`` to every floating parameter and persistent buffer (deterministic). Buffers that
    are not saved (RecurrentGemma's normalizer, Falcon-H1's mup_vector) are derived from the config on load, so
    they keep their values."""
    g = torch.Generator().manual_seed(seed)
    saved = set(model.state_dict())
    with torch.no_grad():
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            if t.dtype.is_floating_point and "inv_freq" not in name and name in saved:
                t.add_(noise * torch.randn(t.shape, generator=g, dtype=t.dtype))


@contextlib.contextmanager
def float64_reference():
    """Keep float64 tensors float64 where transformers casts to float32 (RMSNorm, routers, softmax dtype,
    RoPE angles). Inside this context, ``x.to(torch.float32)``, ``x.float()`` and ``x.type(torch.float32)``
    of a float64 tensor return it unchanged, integer tensors' ``.float()`` becomes float64, and a
    ``dtype=torch.float32`` argument of softmax becomes float64. Used only around the float64 reference
    forward: a float32 model is untouched."""
    orig_to, orig_float, orig_type = torch.Tensor.to, torch.Tensor.float, torch.Tensor.type
    orig_softmax = torch.nn.functional.softmax

    def to(self, *args, **kw):
        dt = kw.get("dtype", args[0] if args and isinstance(args[0], torch.dtype) else None)
        if dt is torch.float32 and self.dtype == torch.float64:
            return self
        return orig_to(self, *args, **kw)

    def flt(self, *a, **k):
        if self.dtype == torch.float64:
            return self
        if not self.dtype.is_floating_point:
            return orig_to(self, torch.float64)
        return orig_float(self, *a, **k)

    def typ(self, dtype=None, *a, **k):
        if dtype is torch.float32 and self.dtype == torch.float64:
            return self
        return orig_type(self, dtype, *a, **k) if dtype is not None else orig_type(self)

    def softmax(x, dim=None, _stacklevel=3, dtype=None):
        if dtype is torch.float32 and x.dtype == torch.float64:
            dtype = torch.float64
        return orig_softmax(x, dim=dim, dtype=dtype)

    torch.Tensor.to, torch.Tensor.float, torch.Tensor.type = to, flt, typ
    torch.nn.functional.softmax = softmax
    try:
        yield
    finally:
        torch.Tensor.to, torch.Tensor.float, torch.Tensor.type = orig_to, orig_float, orig_type
        torch.nn.functional.softmax = orig_softmax


@contextlib.contextmanager
def float64_rope_init():
    """Make transformers' RoPE init functions compute in float64: inside, ``torch.arange(..., dtype=float32)``
    gives float64 and ``.to(float32)`` of an integer or float64 tensor gives float64."""
    orig_arange, orig_to = torch.arange, torch.Tensor.to

    def arange(*a, **k):
        if k.get("dtype") is torch.float32:
            k["dtype"] = torch.float64
        return orig_arange(*a, **k)

    def to(self, *args, **kw):
        dt = kw.get("dtype", args[0] if args and isinstance(args[0], torch.dtype) else None)
        if dt is torch.float32 and (self.dtype == torch.float64 or not self.dtype.is_floating_point):
            kw = {k: v for k, v in kw.items() if k != "dtype"}
            args = tuple(a for a in args if not isinstance(a, torch.dtype))
            return orig_to(orig_to(self, *args, **kw), torch.float64)
        return orig_to(self, *args, **kw)

    torch.arange, torch.Tensor.to = arange, to
    try:
        yield
    finally:
        torch.arange, torch.Tensor.to = orig_arange, orig_to


def exact_rope_tables(model: torch.nn.Module) -> None:
    """Recompute every rotary ``inv_freq`` buffer of a float64 transformers model in float64 (it was computed in
    float32 and cast): the same formula, ``1 / base^(2i/d)``, or for a scaled ``rope_type`` transformers' own
    init function run in float64 (:func:`float64_rope_init`)."""
    for mod in model.modules():
        inv = getattr(mod, "inv_freq", None)
        if isinstance(inv, torch.Tensor) and hasattr(mod, "config"):
            kind = getattr(mod, "rope_type", "default")
            if isinstance(kind, str) and kind != "default":
                from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

                with float64_rope_init():
                    exact, mod.attention_scaling = ROPE_INIT_FUNCTIONS[kind](mod.config, inv.device)
                assert exact.dtype == torch.float64 and exact.shape == inv.shape
            else:
                d = inv.numel() * 2
                cfg = mod.config
                rp = getattr(cfg, "rope_parameters", None) or {}
                base = rp.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))
                exact = 1.0 / (base ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
            mod.inv_freq = exact
            if hasattr(mod, "original_inv_freq"):
                mod.original_inv_freq = exact


def hf_logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def generate_logits(model, ids: torch.Tensor, prompt: int) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' cached greedy generation from ``ids[:, :prompt]`` to ``ids.shape[1]`` tokens: (tokens
    [B, seq], logits [B, seq - prompt, vocab]) where logits[:, j] predicted token ``prompt + j``."""
    n = ids.shape[1] - prompt
    with torch.no_grad():
        out = model.generate(
            ids[:, :prompt],
            attention_mask=torch.ones_like(ids[:, :prompt]),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            use_cache=True,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=0,
            eos_token_id=None,
        )
    return out.sequences, torch.stack(out.logits, 1)


def roundtrip(
    config: Any,
    tmp_path: Path,
    family: str | None = None,
    *,
    seq: int = 12,
    prompt: int = 4,
    float64: bool = True,
    decode: bool = True,
    export: bool = True,
    noise: float = 0.1,
    seed: int = 0,
) -> dict[str, float]:
    """Import, compare, decode, export and compare again (see the module docstring). Asserts; returns errors."""
    import transformers

    torch.manual_seed(seed)
    hf = transformers.AutoModelForCausalLM.from_config(config).eval()
    perturb(hf, noise, seed)
    src = Path(tmp_path) / "hf"
    hf.save_pretrained(src)
    ours = hybriddsl.from_pretrained(src, family=family)
    vocab = config.vocab_size
    ids = torch.randint(0, vocab, (2, seq), generator=torch.Generator().manual_seed(seed))
    errs: dict[str, float] = {}

    ref = hf_logits(hf, ids)
    with torch.no_grad():
        got = ours(ids)
    assert got.shape == ref.shape == (2, seq, vocab)
    errs["forward"] = (got - ref).abs().max().item() / scale(ref)
    assert errs["forward"] <= TOL32, f"forward logits differ by {errs['forward']:.3g} (relative)"

    if float64:
        ours64 = hybriddsl.from_pretrained(src, family=family, dtype=torch.float64)
        # the grouped-GEMM experts kernel has no float64: the per-expert loop computes the same sum
        hf64 = transformers.AutoModelForCausalLM.from_pretrained(
            src, dtype=torch.float64, experts_implementation="eager"
        )
        hf64 = hf64.to(torch.float64).eval()  # also the parameters transformers keeps in float32 (routers)
        exact_rope_tables(hf64)
        with float64_reference():
            ref64 = hf_logits(hf64, ids)
        with torch.no_grad():
            got64 = ours64(ids)
        assert got64.dtype == torch.float64
        errs["float64"] = (got64 - ref64).abs().max().item() / scale(ref64)
        assert errs["float64"] <= TOL64, f"float64 logits differ by {errs['float64']:.3g} (relative)"

    if decode:
        tokens, gen = generate_logits(hf, ids, prompt)
        with torch.no_grad():
            par = ours(tokens)
            state = ours.init_state(tokens.shape[0])
            steps = []
            for t in range(tokens.shape[1]):
                y, state = ours.step(tokens[:, t], state)
                steps.append(y)
            steps = torch.stack(steps, 1)
            s = ours.stream(batch=tokens.shape[0])
            streamed = torch.stack([s.push(tokens[:, t]).clone() for t in range(tokens.shape[1])], 1)
        want = gen  # logits that predicted tokens prompt .. seq-1, i.e. outputs at positions prompt-1 .. seq-2
        sl = slice(prompt - 1, tokens.shape[1] - 1)
        errs["step"] = (steps[:, sl] - want).abs().max().item() / scale(want)
        errs["stream"] = (streamed[:, sl] - want).abs().max().item() / scale(want)
        errs["step_vs_parallel"] = (steps - par).abs().max().item() / scale(par)
        for k in ("step", "stream", "step_vs_parallel"):
            assert errs[k] <= TOL32, f"{k}: decoding logits differ by {errs[k]:.3g} (relative)"

    if export:
        out = Path(tmp_path) / "out"
        hybriddsl.save_pretrained(ours, out, family=family or config.model_type)
        back = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
        again = hf_logits(back, ids)
        errs["export"] = (again - got).abs().max().item() / scale(got)
        assert errs["export"] <= TOL32, f"exported checkpoint's logits differ by {errs['export']:.3g} (relative)"
        n_ours = sum(p.numel() for p in ours.parameters())
        n_back = sum(p.numel() for p in back.parameters())
        assert n_back == n_ours, f"the exported model has {n_back} parameters, ours {n_ours}"
    return errs
