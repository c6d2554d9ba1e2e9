"""Interop: Megatron-LM hybrid patterns and Hugging Face configs <-> .hyb (hybriddsl.interop, hybdsl convert).

The HF configs below are written by transformers' own config classes (save_pretrained); more families' configs
are tested in tests/interop/test_configs.py and tests/interop/test_configs_hybrid.py. Expected layer layouts are
derived from each family's documented rule (e.g. Jamba: attention where ``i % attn_layer_period ==
attn_layer_offset``), not from the converter's output.
"""

from __future__ import annotations

import json

import pytest
import transformers

from hybriddsl import api
from hybriddsl.cli import main
from hybriddsl.errors import HybError
from hybriddsl.interop import ConvertError, from_hf, from_megatron, to_hf, to_megatron
from tests.interop.harness import written

NEMOTRON_TYPE = {"M": "linear_attention", "*": "full_attention", "-": "mlp", "E": "moe"}

# Jamba and Nemotron-H: written by transformers' own config classes (save_pretrained), as real files are
JAMBA = written(
    transformers.JambaConfig(
        vocab_size=96,
        tie_word_embeddings=False,
        hidden_size=64,
        intermediate_size=224,
        num_hidden_layers=8,
        num_attention_heads=4,
        num_key_value_heads=2,
        attn_layer_period=4,
        attn_layer_offset=2,
        expert_layer_period=2,
        expert_layer_offset=1,
        num_experts=4,
        num_experts_per_tok=2,
        mamba_d_state=8,
    )
)
NEMOTRON_PATTERN = "M-M*-M-M"
NEMOTRON_H = written(
    transformers.NemotronHConfig(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=128,
        layers_block_type=[NEMOTRON_TYPE[c] for c in NEMOTRON_PATTERN],
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        ssm_state_size=16,
        mamba_num_heads=4,
        mamba_head_dim=32,
        n_groups=1,
    )
)


def mixers(src: str) -> list[tuple[str, str, int]]:
    """(kind, role, stack position) of every mixer use of the compiled model."""
    g = api.compile(src)
    return [(g[n]["kind"], g[n]["role"], g[n]["layer"]) for n in g.mixers()]


# ------------------------------------------------------------------------------------------------ Megatron
MEGATRON_KIND = {"M": "mamba2", "*": "attention", "-": "ffn", "E": "moe"}


@pytest.mark.parametrize("pattern", ["M-M*-", "M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M-", "MMMM", "M*-E*-", "*-*-"])
def test_megatron_round_trip(pattern):
    text = from_megatron(pattern, hidden=64)
    got = mixers(text)
    assert [k for k, _, _ in got] == [MEGATRON_KIND[c] for c in pattern]  # one residual layer per letter
    assert all(role == "main" for _, role, _ in got)  # '*' has ffn=false: '-' letters are the MLPs
    assert to_megatron(text) == pattern


def test_megatron_mamba_option_and_settings():
    text = from_megatron("M*-", mamba="mamba", hidden=48, **{"attention.heads": 3})
    g = api.compile(text)
    assert g.settings["hidden"] == 48
    assert [g[n]["kind"] for n in g.mixers()] == ["mamba", "attention", "ffn"]
    assert g[g.mixers()[1]]["opts"]["heads"] == 3
    assert to_megatron(text) == "M*-"
    with pytest.raises(ConvertError, match="mamba or mamba2"):
        from_megatron("M", mamba="mamba3")


def test_to_megatron_companions_count_as_letters():
    # attention with its default FFN sub-block is Megatron's "*-"; mamba (Mamba-1) is still an 'M'
    assert to_megatron("hidden=32; M A M2") == "M*-M"


@pytest.mark.parametrize(
    "src, reason",
    [
        ("hidden=32; M GLA", "no letter for 'gla'"),
        ("hidden=32; M M; shared A(ffn=false)@1", "shared block"),
        ("hidden=32; [A | M](mix=gate)", "no letter for 'parallel'"),
        ("hidden=32; M M; tie M", "tie"),
    ],
    ids=["gla", "shared", "parallel", "tie"],
)
def test_to_megatron_rejects_what_it_cannot_say(src, reason):
    with pytest.raises(ConvertError, match=reason):
        to_megatron(src)


def test_megatron_bad_letter_has_a_position():
    with pytest.raises(ConvertError) as e:
        from_megatron("M-Q*")
    assert e.value.span.column == 3 and "'Q'" in str(e.value)


# ------------------------------------------------------------------------------------------------ HF
def test_jamba_layout_follows_period_and_offset():
    text = from_hf(JAMBA)
    got = [k for k, _, _ in mixers(text)]
    want = []
    for i in range(JAMBA["num_hidden_layers"]):
        want.append("attention" if i % 4 == 2 else "mamba")
        want.append("moe" if i % 2 == 1 else "ffn")
    assert got == want
    g = api.compile(text)
    (moe,) = {n for n in g.mixers() if g[n]["kind"] == "moe" and g[n]["layer"] == 4}
    assert g[moe]["opts"]["experts"] == 4 and g[moe]["opts"]["top_k"] == 2 and g[moe]["opts"]["act"] == "swiglu"
    assert g.settings["vocab"] == 96 and g.settings["norm"] == "rmsnorm"


def test_nemotron_h_layout_is_its_pattern():
    got = [k for k, _, _ in mixers(from_hf(NEMOTRON_H))]
    assert got == [MEGATRON_KIND[c] for c in NEMOTRON_PATTERN]


def test_nemotron_relu2_mlp():
    g = api.compile(from_hf(NEMOTRON_H))
    assert {g[n]["opts"]["act"] for n in g.mixers() if g[n]["kind"] == "ffn"} == {"relu2"}


@pytest.mark.parametrize(
    "src, family, reason",
    [
        ("norm=rmsnorm; hidden=32; M F GLA F", "hf-jamba", "no 'gla' layer"),
        ("norm=rmsnorm; hidden=32; M2 F", "hf-jamba", "no 'mamba2' layer"),
        ("hidden=32; M F", "hf-jamba", "RMSNorm"),
        ("norm=rmsnorm; hidden=32; M F M F A(ffn=false) F A(ffn=false) F", "jamba", "not every k-th"),
        ("norm=rmsnorm; norm_eps=1e-6; hidden=32; M(bc_norm=true) FFN(act=gelu)", "jamba", "gated"),
        ("norm=rmsnorm; hidden=32; M M2", "hf-nemotron-h", "Mamba-2"),
        ("norm=rmsnorm; hidden=32; M2 FFN(act=swiglu)", "hf-nemotron-h", "ungated"),
        ("norm=rmsnorm; hidden=32; M F", "hf-lama", "unknown Hugging Face family .* did you mean .hf-llama."),
    ],
)
def test_to_hf_says_why_it_cannot(src, family, reason):
    with pytest.raises(ConvertError, match=reason):
        to_hf(src, family)


def test_from_hf_unknown_family():
    with pytest.raises(ConvertError, match="model_type 'lama' - did you mean 'llama'"):
        from_hf({"model_type": "lama", "hidden_size": 64})
    with pytest.raises(ConvertError, match="num_hidden_layers"):
        from_hf({"model_type": "jamba", "hidden_size": 64})


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_megatron_both_ways(tmp_path, capsys):
    out = tmp_path / "m.hyb"
    assert (
        main(["convert", "--from", "megatron", "M-M*-", "--mamba", "mamba", "--set", "hidden=48", "-o", str(out)]) == 0
    )
    assert [k for k, _, _ in mixers(out.read_text())] == ["mamba", "ffn", "mamba", "attention", "ffn"]
    capsys.readouterr()
    assert main(["convert", str(out), "--to", "megatron"]) == 0
    assert capsys.readouterr().out == "M-M*-\n"


def test_cli_hf_both_ways(tmp_path, capsys):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(JAMBA))
    hyb = tmp_path / "jamba.hyb"
    assert main(["convert", str(cfg), "--from", "hf", "-o", str(hyb)]) == 0
    assert main(["convert", str(hyb), "--to", "hf-jamba", "-o", str(tmp_path / "back.json")]) == 0
    back = json.loads((tmp_path / "back.json").read_text())
    assert {k: back[k] for k in ("attn_layer_period", "attn_layer_offset", "expert_layer_offset")} == {
        "attn_layer_period": 4,
        "attn_layer_offset": 2,
        "expert_layer_offset": 1,
    }
    capsys.readouterr()
    assert main(["convert", str(cfg), "--from", "hf", "--to", "megatron"]) == 0  # chained through .hyb
    letters = "".join(("*" if i % 4 == 2 else "M") + ("E" if i % 2 == 1 else "-") for i in range(8))
    assert capsys.readouterr().out == letters + "\n"
    assert main(["convert", str(cfg), "--from", "hf", "--set", "moe.top_k=1", "--to", "hf-jamba"]) == 0
    assert json.loads(capsys.readouterr().out)["num_experts_per_tok"] == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["convert", "{f}", "--to", "megatron"], "no letter for 'gla'"),
        (["convert", "{f}", "--to", "hf-jambo"], "did you mean 'hf-jamba'"),
        (["convert", "{f}"], "nothing to convert"),
        (["convert", "--from", "megatron", "M-X"], "not a Megatron hybrid-pattern letter"),
        (["convert", "{j}", "--from", "hf"], "is not JSON"),
        (["convert", "{f}", "--to", "toml"], "choose one of"),
    ],
    ids=["gla", "family", "nothing", "letter", "json", "target"],
)
def test_cli_errors_exit_2_without_traceback(tmp_path, capsys, argv, message):
    f = tmp_path / "g.hyb"
    f.write_text("hidden=32\nM GLA\n")
    j = tmp_path / "bad.json"
    j.write_text("{not json")
    argv = [a.format(f=f, j=j) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_failed_write_leaves_no_file(tmp_path):
    f = tmp_path / "g.hyb"
    f.write_text("hidden=32\nM GLA\n")
    out = tmp_path / "out.txt"
    assert main(["convert", str(f), "--to", "megatron", "-o", str(out)]) == 2
    assert not out.exists()


def test_convert_error_is_a_hyb_error():
    assert issubclass(ConvertError, HybError)
