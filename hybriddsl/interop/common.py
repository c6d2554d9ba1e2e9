"""What every converter shares: a compiled model seen as a list of sublayers, and .hyb text written back.

A converter *to* another convention compiles the .hyb source (so it sees resolved options, companions and shared
blocks exactly as the model has them) and walks :func:`sublayers`. A converter *from* a convention builds a
:class:`HybText` (settings, macros, stack tokens, shared statements, notes) and prints it.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from hybriddsl.errors import HybError, HybOptionError
from hybriddsl.ir import Graph


class ConvertError(HybOptionError):
    """The model cannot be said in the target convention (or the input is not that convention)."""

    kind = "convert error"


_problems: list[str] | None = None  # while collecting (collect_problems): problems found so far


def problem(message: str) -> None:
    """A problem the conversion can go on past: raised at once, or, inside :func:`collect_problems`, kept so
    that every such problem of the model is reported in one error."""
    if _problems is None:
        raise ConvertError(message)
    _problems.append(message)


@contextlib.contextmanager
def collect_problems() -> Iterator[None]:
    """Run a conversion, then raise one ConvertError listing every problem (and the one that stopped it)."""
    global _problems
    outer, _problems = _problems, []
    found = _problems
    try:
        yield
    except ConvertError as e:
        found.append(e.message)
    finally:
        _problems = outer
    found = _merge_layers(found)
    if len(found) == 1:
        raise ConvertError(found[0])
    if found:
        raise ConvertError(f"{len(found)} problems:\n  - " + "\n  - ".join(found))


def _merge_layers(messages: list[str]) -> list[str]:
    """'layer 2 (ffn) X', 'layer 6 (ffn) X' -> 'layer 2 (ffn) X (also layers 6)': one line per problem."""
    out: dict[str, list[str]] = {}
    for m in messages:
        head, _, rest = m.partition(" (")
        num = head.removeprefix("layer ")
        key = rest if head.startswith("layer ") and num.isdigit() else m
        out.setdefault(key, []).append(num if key != m else "")
    lines = []
    for key, nums in out.items():
        if nums == [""]:
            lines.append(key)
        else:
            also = f" (also layer{'s' if len(nums) > 2 else ''} {', '.join(nums[1:])})" if len(nums) > 1 else ""
            lines.append(f"layer {nums[0]} ({key}{also}")
    return lines


@dataclass(frozen=True)
class Sub:
    """One mixer use of a compiled model, in stream order.

    ``pos`` is the 1-based stack position, ``role`` main / companion / shared, ``weights`` the weight group.
    """

    kind: str
    opts: dict[str, Any]
    pos: int
    role: str
    weights: str

    def where(self) -> str:
        what = {"companion": "the sub-block of layer", "shared": "the shared block after layer"}
        return f"{what.get(self.role, 'layer')} {self.pos} ({self.kind})"


def compile_source(src: str | os.PathLike | Graph, **settings: Any) -> Graph:
    """A Graph from source text, a path or an already compiled Graph."""
    if isinstance(src, Graph):
        return src
    from hybriddsl import api

    return api.compile(src, **settings)


def sublayers(graph: Graph) -> list[Sub]:
    """Every mixer use in stream order (shared blocks where they are applied)."""
    return [Sub(d["kind"], d["opts"], d["layer"], d["role"], d["weights"]) for d in (graph[n] for n in graph.mixers())]


def reject_ties(subs: list[Sub], target: str) -> None:
    """Raise when two stack layers share weights (``tie``): no HF or Megatron config can say that."""
    seen: dict[str, Sub] = {}
    for s in subs:
        if s.role == "shared":
            continue
        if s.weights in seen:
            raise ConvertError(
                f"{s.where()} shares weights with {seen[s.weights].where()} ('tie'); {target} has no tied layers"
            )
        seen[s.weights] = s


def ffn_inner(opts: dict[str, Any], hidden: int) -> int:
    """The inner width an ffn layer builds (same rule as layers/ffn.py)."""
    return opts["inner"] or int(math.ceil(hidden * opts["mult"]))


def uniform(subs: list[Sub], keys: tuple[str, ...], target: str) -> dict[str, Any]:
    """The options ``keys`` that all ``subs`` (one kind) agree on; raise when they differ (one config field each)."""
    if not subs:
        return {}
    first = subs[0]
    for s in subs[1:]:
        for k in keys:
            if s.opts.get(k) != first.opts.get(k):
                raise ConvertError(
                    f"{s.where()} has {k}={s.opts.get(k)!r} but {first.where()} has {k}={first.opts.get(k)!r}; "
                    f"{target} has one {first.kind} '{k}' for every layer"
                )
    return {k: first.opts.get(k) for k in keys}


def period_offset(flags: list[bool]) -> tuple[int, int] | None:
    """The smallest (period, offset) with ``flags[i] == (i % period == offset)``, or None when there is none."""
    n = len(flags)
    if not any(flags):
        return None
    for p in range(1, n + 1):
        o = flags.index(True)
        if o < p and all(f == (i % p == o) for i, f in enumerate(flags)):
            return p, o
    return None


def cycle(items: list[Any]) -> list[Any]:
    """The shortest list whose repetition, cut to ``len(items)``, is ``items``."""
    for p in range(1, len(items) + 1):
        if all(items[i] == items[i % p] for i in range(len(items))):
            return items[:p]
    return items


# -------------------------------------------------------------------------------------------- writing .hyb
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
_SAFE_STRING = re.compile(r"^[^\"'\\\x00-\x1f\x7f]*$")  # no quote, backslash or control character


def value(v: Any, what: str = "a value") -> str:
    """A Python value as .hyb text. Only finite numbers, booleans and strings that stay one token (a name, or a
    quoted string with no quote, backslash or control character) are written: a config is untrusted input,
    and anything else raises ConvertError instead of becoming .hyb text."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        text = str(v)
        if len(text) > 30:
            raise ConvertError(f"{what} = {text[:20]}... is not a plausible number ({len(text)} digits)")
        return text
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ConvertError(f"{what} must be a finite number, got {v!r}")
        return repr(v) if v != int(v) else f"{int(v)}.0"  # repr: the shortest text that reads back exactly
    if isinstance(v, str):
        if v.isidentifier() and v.isascii():
            return v
        if len(v) <= 200 and _SAFE_STRING.match(v):
            return f'"{v}"'
        raise ConvertError(f"{what} has a string value that cannot be written safely into .hyb text: {v[:60]!r}")
    raise ConvertError(f"{what} must be a number, true/false or a name, got {type(v).__name__} {str(v)[:60]!r}")


def comment(text: str) -> str:
    """Text for a ``#`` comment: one line (newlines and control characters escaped), so it stays a comment."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in str(text))


def call(name: str, **opts: Any) -> str:
    """``A(heads=8, window=64)``; options that are None are left out."""
    args = ", ".join(f"{k}={value(v, f'{name} option {k}')}" for k, v in opts.items() if v is not None)
    return f"{name}({args})" if args else name


def compress(tokens: list[str], max_period: int = 64) -> str:
    """A stack as short .hyb text: the longest-covering repeated run at each point becomes ``(...)*k``.

    ``M F M F M A F`` x5 then ``M F`` x5 -> ``((M F)*2 M A F)*5 (M F)*5``; one token repeated is ``M2*3``.
    """
    out, i, n = [], 0, len(tokens)
    while i < n:
        best_p, best_k = 1, 1
        for p in range(1, min(max_period, (n - i) // 2) + 1):
            k = 1
            while i + (k + 1) * p <= n and tokens[i + k * p : i + (k + 1) * p] == tokens[i : i + p]:
                k += 1
            if k >= 2 and p * k > best_p * best_k:
                best_p, best_k = p, k
        if best_k == 1:
            out.append(tokens[i])
        else:
            body = compress(tokens[i : i + best_p], max_period)
            out.append(f"{_atom(body) if best_p == 1 else '(' + body + ')'}*{best_k}")
        i += best_p * best_k
    return " ".join(out)


def _atom(tok: str) -> str:
    # '*' and '-' repeated: '**3' would not parse, so bracket Megatron letters
    return f"({tok})" if tok in ("*", "-") else tok


@dataclass
class HybText:
    """A .hyb file under construction."""

    title: str
    settings: list[tuple[str, Any]] = field(default_factory=list)
    blocks: list[tuple[str, str]] = field(default_factory=list)
    stack: list[str] = field(default_factory=list)
    shared: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def set(self, key: str, v: Any) -> None:
        if v is not None:
            self.settings.append((key, v))

    def render(self) -> str:
        lines = [f"# {comment(self.title)}"]
        lines += [f"# note: {comment(n)}" for n in self.notes]
        for k, _ in self.settings:
            if not _KEY.match(k):
                raise ConvertError(f"cannot write a setting named {k[:60]!r} into .hyb text")
        lines += [f"{k} = {value(v, k)}" for k, v in self.settings]
        lines += [f"block {name} = {body}" for name, body in self.blocks]
        lines.append(compress(self.stack))
        lines += self.shared
        return "\n".join(lines) + "\n"


def need(config: dict[str, Any], key: str, family: str) -> Any:
    """config[key], or a ConvertError naming the missing field."""
    if key not in config or config[key] is None:
        raise ConvertError(f"the {family} config has no '{key}'")
    return config[key]


def as_int(v: Any, what: str) -> int:
    """A config field as a whole number in a plausible range (a layer count at most the limit max_mixers):
    a config is untrusted input, and ``num_hidden_layers: 1e18`` must not become a list of 10^18 layers."""
    from hybriddsl import limits

    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not math.isfinite(v)):
        raise ConvertError(f"{what} must be a whole number, got {v!r}")
    if v != int(v):
        raise ConvertError(f"{what} must be a whole number, got {v!r}")
    n = int(v)
    hi = limits.current().max_mixers if "layer" in what and "offset" not in what else 2**40
    if not -(2**40) <= n <= hi:
        raise ConvertError(f"{what} = {v!r} is out of range (at most {hi:,}; see the limit max_mixers)")
    return n


def as_float(v: Any, what: str) -> float:
    """A config field as a finite number."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ConvertError(f"{what} must be a finite number, got {v!r}")
    return float(v)


__all__ = ["ConvertError", "HybError", "HybText", "Sub", "compile_source", "sublayers"]


# -------------------------------------------------------------------------------------------- HF helpers
ACT = {"swiglu": "silu", "geglu": "gelu"}  # our gated FFN activation -> HF hidden_act of a gate*up MLP
ACT_BACK = {"silu": "swiglu", "swish": "swiglu", "gelu": "geglu", "gelu_pytorch_tanh": "geglu", "gelu_new": "geglu"}


def hf_settings(doc: HybText, cfg: dict[str, Any], family: str, eps_key: str = "rms_norm_eps") -> int:
    """Write hidden, vocab, tied embeddings and RMSNorm eps from an HF config; returns hidden_size."""
    hidden = as_int(need(cfg, "hidden_size", family), "hidden_size")
    doc.set("hidden", hidden)
    if cfg.get("vocab_size"):
        doc.set("vocab", as_int(cfg["vocab_size"], "vocab_size"))
        doc.set("tie_embeddings", bool(cfg.get("tie_word_embeddings", False)))
    doc.set("norm", "rmsnorm")
    if cfg.get(eps_key) is not None:
        doc.set("norm_eps", as_float(cfg[eps_key], eps_key))
    return hidden


def hf_base(graph: Graph, model_type: str, arch: str, eps_key: str = "rms_norm_eps") -> dict[str, Any]:
    """The config fields every family has; raises for a model these pre-RMSNorm decoders cannot be."""
    s = graph.settings
    target = f"Hugging Face {model_type}"
    if s["norm"] != "rmsnorm":
        problem(f"{target} uses RMSNorm; the model has norm = {s['norm']} (write 'norm = rmsnorm')")
    if not s["pre_norm"]:
        problem(f"{target} is a pre-norm model; the model has pre_norm = false")
    cfg: dict[str, Any] = {"model_type": model_type, "architectures": [arch], "hidden_size": s["hidden"]}
    if s["vocab"]:
        cfg["vocab_size"] = s["vocab"]
        cfg["tie_word_embeddings"] = bool(s["tie_embeddings"])
    cfg[eps_key] = s["norm_eps"]
    return cfg


def pairs(subs: list[Sub], mixers: tuple[str, ...], target: str) -> list[tuple[Sub, Sub]]:
    """Group a stack into (mixer, MLP) decoder layers: a mixer of ``mixers`` then an ffn or moe."""
    out, i = [], 0
    while i < len(subs):
        m = subs[i]
        if m.role == "shared":
            raise ConvertError(f"{m.where()}: {target} has no shared blocks")
        if m.kind in ("ffn", "moe") and m.kind not in mixers:
            raise ConvertError(
                f"{m.where()} is an MLP after an MLP; every {target} decoder layer is one token mixer and then one MLP"
            )
        if m.kind not in mixers:
            raise ConvertError(
                f"{m.where()}: {target} has no '{m.kind}' layer (its token mixers are {', '.join(mixers)})"
            )
        f = subs[i + 1] if i + 1 < len(subs) else None
        if f is None or f.kind not in ("ffn", "moe") or f.role == "shared":
            raise ConvertError(
                f"{m.where()} must be followed by an FFN or MoE: every {target} decoder layer is a token mixer "
                "and then an MLP"
            )
        out.append((m, f))
        i += 2
    return out


def gated_act(f: Sub, target: str) -> str:
    """HF hidden_act of a gated MLP for our ffn/moe act; raises for a plain (ungated) GELU MLP."""
    act = f.opts["act"]
    if act not in ACT:
        problem(f"{f.where()} is a plain {act} MLP; {target}'s MLP is gated (write act=swiglu or act=geglu)")
        return f"({act})"  # only reached while collecting problems
    return ACT[act]
