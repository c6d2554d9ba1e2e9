"""Edifice-compatible API: ``Hybrid`` and ``HybridBuilder`` functions, Python-style names, one implementation.

Every function translates its arguments to .hyb text (``to_hyb`` shows it) and goes through the same compiler
as ``hybdsl``: nothing here builds layers itself. Differences from Edifice, all deliberate:

- the layers are the published models (Edifice's "mamba" is a gated moving average; ours is Mamba-1);
- ``param_count`` is exact (equal to ``sum(p.numel())`` of the built model), not an estimate;
- Griffin layers have separate weights per layer; the GRU starts from zeros, not a random state;
- ``chunked_attention`` / ``memory_efficient_attention`` respect the sliding window.

Two Edifice modules both have ``build``: ``build(embed_dim=..., backbone=..., attention_every=...)`` is
``Hybrid.build``; ``build(pattern, embed_dim=...)`` with a list of layer types is ``HybridBuilder.build``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from hybriddsl import api, registry
from hybriddsl.errors import HybNameError, HybOptionError, suggest

# ------------------------------------------------------------------------------------------------ Hybrid
BACKBONES = ("mamba", "gru", "rwkv", "delta_net", "gated_delta_net", "griffin_lru", "custom")

HYBRID_DEFAULTS: dict[str, Any] = {
    "hidden_size": 256,
    "num_layers": 6,
    "attention_every": 3,
    "backbone": "mamba",
    "state_size": 16,
    "expand_factor": 2,
    "conv_size": 4,
    "num_heads": 4,
    "head_dim": 64,
    "window_size": 60,
    "use_sliding_window": True,
    "qk_layernorm": True,
    "dropout": 0.1,
    "seq_len": None,
    "pre_norm": True,
    "chunked_attention": False,
    "memory_efficient_attention": False,
    "chunk_size": 32,
}


def _atom(x: Any) -> str:
    """':mamba', 'mamba' or a registry alias -> canonical kind name."""
    if not isinstance(x, str):
        raise HybOptionError(f"expected a layer type name, got {x!r}")
    return x.lstrip(":")


_CALLABLES: dict[str, Callable[..., Any]] = {}


def _custom_ref(backbone: Any) -> str:
    """A custom backbone as a .hyb option value ``"pkg.mod:fn"``.

    Accepts Edifice's (module, function) pair, a ``"pkg.mod:fn"`` string, or a callable ``fn(hidden_size, **opts)
    -> nn.Module``. An importable function is named by its module and name (so a saved model can be loaded in
    another process); a lambda or closure is kept in this process's table and named through it.
    """
    if isinstance(backbone, tuple) and len(backbone) == 2:
        return f"{backbone[0]}:{backbone[1]}"
    if isinstance(backbone, str) and ":" in backbone.lstrip(":"):
        return backbone.lstrip(":")
    if callable(backbone):
        qual = getattr(backbone, "__qualname__", "")
        mod = getattr(backbone, "__module__", None)
        if mod and qual and "<" not in qual and mod != "__main__":
            return f"{mod}:{qual}"
        key = f"_user_backbone_{len(_CALLABLES)}"
        _CALLABLES[key] = backbone
        globals()[key] = backbone  # importable as hybriddsl.edifice:<key> for this process
        return f"{__name__}:{key}"
    if isinstance(backbone, str):
        raise HybOptionError(
            "backbone 'custom' needs the function: pass backbone=(module, function), 'pkg.mod:fn' or a callable"
        )
    raise HybOptionError(
        f"a custom backbone is a 'pkg.mod:fn' string, a (module, function) pair or a callable, got {backbone!r}"
    )


def _check_keys(opts: dict[str, Any], allowed: Sequence[str], what: str) -> None:
    for k in opts:
        if k not in allowed:
            raise HybNameError(f"{what} has no option '{k}'" + suggest(k, list(allowed)))


def layer_pattern(**opts: Any) -> list[str]:
    """Edifice ``Hybrid.layer_pattern``: ['mamba', 'mamba', 'attention', ...] (attention every N-th layer)."""
    o = {**HYBRID_DEFAULTS, **opts}
    backbone = _atom(o["backbone"]) if isinstance(o["backbone"], str) else "custom"
    if backbone not in BACKBONES and ":" not in backbone:
        raise HybNameError(
            f"unknown backbone '{backbone}'"
            + suggest(_atom(backbone), list(BACKBONES))
            + f" (known: {', '.join(BACKBONES)})"
        )
    if ":" in backbone:  # "pkg.mod:fn" names a custom backbone
        backbone = "custom"
    n, every = o["num_layers"], o["attention_every"]
    for name in ("num_layers", "attention_every"):
        if isinstance(o[name], bool) or not isinstance(o[name], int) or o[name] < 1:
            raise HybOptionError(f"{name} must be a positive integer, got {o[name]!r}")
    return ["attention" if i % every == 0 else _atom(backbone) for i in range(1, n + 1)]


def hybrid_to_hyb(**opts: Any) -> str:
    """The .hyb text of ``Hybrid.build(**opts)``."""
    _check_keys(opts, ["embed_dim", *HYBRID_DEFAULTS], "Hybrid.build")
    if "embed_dim" not in opts:
        raise HybOptionError("embed_dim is required (the size of each input frame)")
    o = {**HYBRID_DEFAULTS, **opts}
    backbone = o["backbone"]
    kinds = layer_pattern(**opts)
    lines = [
        "# Edifice Hybrid.build",
        f"hidden = {o['hidden_size']}, embed_dim = {o['embed_dim']}",
        f"dropout = {float(o['dropout'])}, pre_norm = {str(bool(o['pre_norm'])).lower()}",
        f"seq_len = {o['seq_len'] or o['window_size']}",
        f"mamba.state = {o['state_size']}, mamba.expand = {o['expand_factor']}, mamba.conv = {o['conv_size']}",
        f"attention.heads = {o['num_heads']}, attention.head_dim = {o['head_dim']}, "
        f"attention.qk_norm = {str(bool(o['qk_layernorm'])).lower()}",
    ]
    if o["use_sliding_window"]:
        lines.append(f"attention.window = {o['window_size']}")
    if o["chunked_attention"] or o["memory_efficient_attention"]:
        lines.append(f"attention.chunk = {o['chunk_size']}")
    if isinstance(backbone, str) and ":" not in _atom(backbone) and _atom(backbone) != "custom":
        words = kinds
    else:  # a user function: Edifice's {module, function} tuple, a "pkg.mod:fn" string or a callable
        ref = _custom_ref(backbone)
        words = [k if k == "attention" else f'custom(fn="{ref}")' for k in kinds]
    lines.append(" ".join(words))
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ HybridBuilder
PATTERNS: dict[str, Callable[[int], list[str]]] = {
    "jamba_like": lambda n: ["mamba" if i % 2 == 0 else "attention" for i in range(n)],
    "zamba_like": lambda n: ["mamba"] * n,
    "mamba_gla": lambda n: ["gla" if i % 3 == 2 else "mamba" for i in range(n)],
    "rwkv_attention": lambda n: ["attention" if i % 3 == 2 else "rwkv" for i in range(n)],
    "full_hybrid": lambda n: [("mamba", "attention", "gla", "rwkv")[i % 4] for i in range(n)],
    "ssm_stack": lambda n: ["mamba"] * n,
}

# Edifice's layer-prefixed options -> (kind, .hyb option)
PREFIXED: dict[str, tuple[str, str]] = {
    "mamba_state_size": ("mamba", "state"),
    "mamba_expand_factor": ("mamba", "expand"),
    "mamba_conv_size": ("mamba", "conv"),
    "attention_num_heads": ("attention", "heads"),
    "attention_head_dim": ("attention", "head_dim"),
    "attention_window_size": ("attention", "window"),
    "attention_qk_layernorm": ("attention", "qk_norm"),
    "attention_ffn": ("attention", "ffn"),
    "gla_num_heads": ("gla", "heads"),
    "rwkv_head_size": ("rwkv", "head_size"),
    "kan_grid_size": ("kan", "grid"),
    "ffn_expand_factor": ("ffn", "mult"),
}
BUILDER_DEFAULTS: dict[str, Any] = {
    "hidden_size": 256,
    "dropout": 0.1,
    "shared_layers": None,
    "mamba_state_size": 16,
    "mamba_expand_factor": 2,
    "attention_num_heads": 4,
    "attention_window_size": 60,
    "gla_num_heads": 4,
    "rwkv_head_size": 64,
    "kan_grid_size": 5,
}


def pattern(name: str, n: int) -> list[str]:
    """Edifice ``HybridBuilder.pattern``: a predefined list of layer types, e.g. pattern('full_hybrid', 6)."""
    key = _atom(name)
    if key not in PATTERNS:
        raise HybNameError(
            f"unknown pattern '{name}'" + suggest(key, list(PATTERNS)) + f" (known: {', '.join(PATTERNS)})"
        )
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise HybOptionError(f"the number of layers must be a positive integer, got {n!r}")
    return PATTERNS[key](n)


def builder_to_hyb(layers: Sequence[str], **opts: Any) -> str:
    """The .hyb text of ``HybridBuilder.build(layers, **opts)``."""
    _check_keys(opts, ["embed_dim", "rwkv_head_size", *BUILDER_DEFAULTS, *PREFIXED], "HybridBuilder.build")
    if "embed_dim" not in opts:
        raise HybOptionError("embed_dim is required (the size of each input frame)")
    if isinstance(layers, str) or not layers:
        raise HybOptionError(f"a pattern is a non-empty list of layer types, got {layers!r}")
    o = {**BUILDER_DEFAULTS, **opts}
    kinds = []
    for x in layers:
        k = _atom(x)
        if registry.canonical(k) is None:
            raise HybNameError(f"unknown layer type '{x}'" + suggest(k, registry.user_names()))
        kinds.append(k)
    lines = [
        "# Edifice HybridBuilder.build",
        f"hidden = {o['hidden_size']}, embed_dim = {o['embed_dim']}",
        f"dropout = {float(o['dropout'])}",
    ]
    used = {registry.canonical(k) for k in kinds} | set(o["shared_layers"] or {})
    for key, (kind, opt) in PREFIXED.items():
        if key in o and (kind in used or key in opts):
            v = o[key]
            lines.append(f"{kind}.{opt} = {str(v).lower() if isinstance(v, bool) else v}")
    lines.append(" ".join(kinds))
    for kind, positions in (o["shared_layers"] or {}).items():
        k = _atom(kind)
        if registry.canonical(k) is None:
            raise HybNameError(f"unknown layer type '{kind}' in shared_layers" + suggest(k, registry.user_names()))
        pos = ",".join(str(int(p)) for p in positions)
        lines.append(f"shared {k}@{pos}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ one entry
def to_hyb(layers: Sequence[str] | None = None, **opts: Any) -> str:
    """The .hyb text that ``build`` with the same arguments compiles."""
    return builder_to_hyb(layers, **opts) if layers is not None else hybrid_to_hyb(**opts)


def build(layers: Sequence[str] | None = None, **opts: Any):
    """Hybrid.build (no ``layers``) or HybridBuilder.build (``layers`` a list of types). Returns an nn.Module
    mapping [batch, seq, embed_dim] -> [batch, hidden_size] (the last position)."""
    # the text is made here from the caller's own arguments: a custom backbone is the caller's code
    return api.parse_and_build(to_hyb(layers, **opts), trust_custom=True)


def build_pattern(name: str, n: int, **opts: Any):
    """HybridBuilder.build_pattern: ``build(pattern(name, n), **opts)``."""
    return build(pattern(name, n), **opts)


def param_count(layers: Sequence[str] | None = None, **opts: Any) -> int:
    """Exact parameter count (Edifice estimates; this equals ``sum(p.numel())`` of the built model)."""
    graph = api.compile(to_hyb(layers, **opts), trust_custom=True)
    if graph.totals.get("unknown"):  # a custom backbone is counted by building it, without memory
        from hybriddsl.lower import lower

        return sum(p.numel() for p in lower(graph, device="meta").parameters())
    return graph.totals["params"]


def output_size(**opts: Any) -> int:
    """Size of the model's output vector: hidden_size."""
    return int(opts.get("hidden_size", HYBRID_DEFAULTS["hidden_size"]))


def recommended_defaults() -> dict[str, Any]:
    """Edifice's defaults for real-time sequence processing: a 60-frame window (``seq_len`` = the window)."""
    o = {
        k: v
        for k, v in HYBRID_DEFAULTS.items()
        if k not in ("memory_efficient_attention", "chunked_attention", "chunk_size", "pre_norm")
    }
    return {**o, "seq_len": o["window_size"]}


LEGEND = {
    "mamba": "Mamba",
    "attention": "Attention",
    "gla": "GLA",
    "rwkv": "RWKV",
    "ffn": "FFN",
    "kan": "KAN",
}


def visualize(layers: Sequence[str]) -> str:
    """Edifice's text diagram: ``Layer pattern: M → A → G → R → M → F`` and a legend line."""
    specs = []
    for x in layers:
        k = _atom(x)
        if registry.canonical(k) is None:
            raise HybNameError(f"unknown layer type '{x}'" + suggest(k, registry.user_names()))
        specs.append(registry.get(k))
    seen: dict[str, str] = {}
    for s in specs:
        seen.setdefault(s.letter, LEGEND.get(s.name, s.name))
    legend = ", ".join(f"{letter}={name}" for letter, name in seen.items())
    return f"Layer pattern: {' → '.join(s.letter for s in specs)}\nLegend: {legend}"
