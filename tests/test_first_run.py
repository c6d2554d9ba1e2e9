"""A newcomer's first ten minutes: every command works, starts fast, and every mistake is exit 2 with a message.

The subprocess tests start fresh interpreters (nothing imported by the test session leaks in): one checks what
``import hybriddsl`` and ``hybdsl --help`` / ``check`` load, one runs the smallest real use of every command
listed by ``hybdsl --help`` in one process (torch is imported once).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import hybriddsl
from hybriddsl.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _python(code: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout
    )


def test_import_help_and_check_do_not_load_torch(tmp_path):
    r = _python(
        f"""
        import sys
        import hybriddsl
        loaded = {{"import": "torch" in sys.modules}}
        from hybriddsl.cli import main
        try:
            main(["--help"])
        except SystemExit:
            pass
        loaded["--help"] = "torch" in sys.modules
        assert main(["check", {str(ROOT / "examples" / "jamba.hyb")!r}]) == 0
        assert main(["layers", "--settings"]) == 0
        loaded["check, layers"] = "torch" in sys.modules
        hybriddsl.compile  # the API loads on first use ...
        loaded["hybriddsl.compile"] = "torch" in sys.modules  # ... and compiling a graph needs no torch either
        print(loaded, file=sys.stderr)
        """,
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip().splitlines()[-1] == str(
        {"import": False, "--help": False, "check, layers": False, "hybriddsl.compile": False}
    )
    assert "examples/jamba.hyb: ok (32 layers)" in r.stdout
    assert "Failed to initialize NumPy" not in r.stderr


def test_version_and_python_dash_m(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "hybriddsl", "--version"], cwd=tmp_path, env=ENV, capture_output=True, text=True
    )
    assert r.returncode == 0 and r.stdout.strip() == f"hybdsl {hybriddsl.__version__}"
    r = subprocess.run(
        [sys.executable, "-m", "hybriddsl", "--help"], cwd=tmp_path, env=ENV, capture_output=True, text=True
    )
    assert r.returncode == 0 and all(c in r.stdout for c in COMMANDS)


def test_declared_dependencies_cover_the_features():
    """What train/compare/bench import at their top level is a core dependency (the README's plain install)."""
    import re

    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)  # tomllib is Python >= 3.11
    core = set(re.findall(r'^\s*"([A-Za-z0-9_.-]+)', block, re.M))
    assert {"torch", "numpy", "tqdm", "lark", "networkx"} <= core
    assert re.search(r'^plot = \["matplotlib', text, re.M)


SMALLEST_USES = """
import json, sys, time
from hybriddsl.cli import main
R = "{root}"
tiny = "hidden = 16\\nD A(window=4, ffn=false)\\n"
open("tiny.hyb", "w").write(tiny)
open("tiny2.hyb", "w").write(tiny.replace("window=4", "window=2"))
open("mega.hyb", "w").write("hidden = 16\\nM-M*-\\n")
runs = {{
    "check": ["check", "tiny.hyb"],
    "compile": ["compile", "tiny.hyb", "-o", "tiny.py"],
    "render": ["render", "tiny.hyb", "-o", "tiny.dot"],
    "bench": ["bench", "tiny.hyb", "--batch", "1", "--seq", "8", "--iters", "1"],
    "layers": ["layers"],
    "train": ["train", "tiny.hyb", "--steps", "2", "--batch", "4", "--eval-every", "1", "--eval-size", "4",
              "--num-kv-pairs", "2", "--seq-len", "8", "-o", "train.json"],
    "compare": ["compare", "tiny.hyb", "tiny2.hyb", "--steps", "1", "--batch", "4", "--eval-every", "1",
                "--eval-size", "4", "--num-kv-pairs", "2", "--seq-lens", "8", "-o", "cmp.csv"]
               + (["--plot", "cmp.png"] if {plot} else []),
    "convert": ["convert", "mega.hyb", "--to", "megatron"],
    "export": ["export", "tiny.hyb", "-o", "tiny.pt2"],
}}
rcs = {{}}
for name, argv in runs.items():
    t0 = time.perf_counter()
    rcs[name] = [main(argv), round(time.perf_counter() - t0, 1)]
print(json.dumps(rcs), file=sys.stderr)
"""


def test_every_command_smallest_real_use(tmp_path):
    plot = importlib.util.find_spec("matplotlib") is not None
    r = _python(SMALLEST_USES.format(root=ROOT, plot=plot), tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rcs = json.loads(r.stderr.strip().splitlines()[-1])
    assert set(rcs) == set(COMMANDS), "a command listed by hybdsl --help has no smallest use here"
    assert {k: v[0] for k, v in rcs.items()} == dict.fromkeys(COMMANDS, 0), r.stderr[-3000:]
    # what each wrote is what it says
    compile_ok = compile((tmp_path / "tiny.py").read_text(), "tiny.py", "exec")
    assert compile_ok is not None
    assert (tmp_path / "tiny.dot").read_text().startswith("digraph")
    assert json.loads((tmp_path / "train.json").read_text())["task"] == "mqar"
    assert (tmp_path / "cmp.csv").read_text().count("\n") >= 3
    assert (tmp_path / "tiny.pt2").stat().st_size > 0
    assert "\nM-M*-\n" in r.stdout  # convert printed the pattern back
    if plot:
        assert (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"
    assert "tokens/s" in r.stdout and "wrote tiny.py" in r.stdout


# -------------------------------------------------------------------------------- mistakes: exit 2, a message


@pytest.fixture
def hyb(tmp_path):
    def write(text: str, name: str = "m.hyb", encoding: str = "utf-8") -> str:
        p = tmp_path / name
        p.write_text(text, encoding=encoding)
        return str(p)

    return write


def _err(capsys) -> str:
    out = capsys.readouterr()
    assert "internal error" not in out.err and "Traceback" not in out.err
    return out.err


def test_deep_nesting_is_a_positioned_limit_error(hyb, capsys):
    assert main(["check", hyb("(" * 200 + "M" + ")" * 200)]) == 2
    err = _err(capsys)
    assert ":1:65: limit error: bracket nesting" in err and "max_depth" in err
    assert main(["check", hyb("(" * 64 + "M" + ")" * 64)]) == 0  # the limit itself is fine


def test_huge_integer_option(hyb, capsys):
    assert main(["compile", hyb("M(state=99999999999999999999999)")]) == 2
    err = _err(capsys)
    assert "option 'state' is too large" in err and "frame #" not in err


def test_out_of_memory_is_a_user_error(hyb, capsys):
    # 2**20 wide: the first weight alone is terabytes, so the allocation fails at once (nothing is touched)
    big = [hyb("M"), "--set", f"hidden={2**20}", "--steps", "1"]
    assert main(["train", *big]) == 2  # refused by the parameter budget before any allocation
    assert "max_params" in _err(capsys)
    # with the limits raised, the allocation itself fails: still a user error, not an internal one
    assert main(["train", *big, "--max-params", str(10**15), "--limit", f"max_bytes={10**16}"]) == 2
    assert "out of memory" in _err(capsys)


def test_triton_missing(hyb, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "triton" else real(name, *a))
    assert main(["bench", hyb("hidden=16\nM"), "--kernels", "triton", "--seq", "4", "--batch", "1"]) == 2
    assert "--kernels triton needs the 'triton' package" in _err(capsys)


def test_plot_without_matplotlib_fails_before_training(hyb, capsys, monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    csv = tmp_path / "r.csv"
    assert main(["compare", hyb("M"), "--steps", "100", "-o", str(csv), "--plot", str(tmp_path / "p.png")]) == 2
    assert "--plot needs the 'matplotlib' package" in _err(capsys)
    assert not csv.exists()


def test_bom_is_accepted(hyb, capsys):
    assert main(["check", hyb("hidden = 32\nM A\n", encoding="utf-8-sig")]) == 0


def test_duplicated_setting_names_both_places(hyb, capsys):
    assert main(["check", hyb("hidden = 64\nM A\nhidden = 32\n")]) == 2
    err = _err(capsys)
    assert ":3:1: option error: setting 'hidden' is given twice: at line 1, column 1 and here" in err
    assert main(["check", hyb("hidden = 64\nM\n"), "--set", "hidden=32"]) == 0  # --set overrides, no duplicate


def test_space_before_options_hint(hyb, capsys):
    assert main(["check", hyb("A (heads=4)")]) == 2
    assert "hint: options attach to the layer name with no space before '(': write A(...)" in _err(capsys)


def test_set_errors_name_the_flag(hyb, capsys):
    assert main(["check", hyb("M A"), "--set", "heads=x"]) == 2
    err = _err(capsys)
    assert err.startswith("--set heads='x': option error") and "keyword argument" not in err


def test_output_folder_missing_before_the_build(hyb, capsys, tmp_path):
    for cmd, name in (("compile", "m.pt"), ("render", "m.svg"), ("export", "m.pt2")):
        assert main([cmd, hyb("M"), "-o", str(tmp_path / "nope" / name)]) == 2
        assert "folder" in _err(capsys)


def test_tie_lists_only_the_difference(hyb, capsys):
    assert main(["check", hyb("A(heads=4) A(heads=2)\ntie A@1,2\n")]) == 2
    assert "their options differ (heads=4 vs heads=2)" in _err(capsys)


def test_layers_settings_and_one_setting(capsys):
    assert main(["layers", "--settings"]) == 0
    out = capsys.readouterr().out
    from hybriddsl.settings import MODEL_SETTINGS

    assert all(f"  {o.name} " in out for o in MODEL_SETTINGS)
    assert main(["layers", "hidden"]) == 0
    assert "width of the residual stream" in capsys.readouterr().out
    assert main(["layers", "hiden"]) == 2
    assert "did you mean 'hidden'" in _err(capsys)


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    out = capsys.readouterr().out
    assert "(default: 4)" in out and "(default: 256)" in out  # --batch, --seq
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "default 300" in capsys.readouterr().out


def test_hybdsl_kernels_is_honoured_by_bench(hyb, capsys, monkeypatch):
    from hybriddsl.kernels import backend

    with backend("reference"):  # as HYBDSL_KERNELS=reference sets it at import
        assert main(["bench", hyb("hidden=16\nM"), "--batch", "1", "--seq", "4", "--iters", "1"]) == 0
    assert "kernels=reference" in capsys.readouterr().out


def test_convert_reports_every_problem_at_once(capsys):
    assert main(["convert", str(ROOT / "examples" / "jamba.hyb"), "--to", "hf-jamba"]) == 2
    err = _err(capsys)
    assert "7 problems" in err and "RMSNorm" in err and "layer 2 (ffn)" in err and "layer 4 (moe)" in err
    assert "bc_norm=true" in err and "no biases" in err and "norm_topk=false" in err


def test_compare_the_same_file_twice(hyb, capsys):
    f = hyb("M")
    assert main(["compare", f, f, "--steps", "1"]) == 2
    assert "given twice" in _err(capsys)


def test_megatron_letters_round_trip(hyb, capsys):
    assert main(["convert", hyb("M-M*-\n"), "--to", "megatron"]) == 0
    assert capsys.readouterr().out == "M-M*-\n"


def test_export_errors_name_layers(capsys, tmp_path):
    assert main(["export", str(ROOT / "examples" / "recall" / "hybrid.hyb"), "-o", str(tmp_path / "x.pt2")]) == 2
    err = _err(capsys)
    assert "layer 2 (attention) k" in err and "n8" not in err


def test_reprs_are_one_line():
    g = hybriddsl.compile("hidden = 32\nM M A GLA")
    model = hybriddsl.parse_and_build("hidden = 32\nM M A GLA")
    n = sum(p.numel() for p in model.parameters())  # the reference: the module's own parameters
    assert repr(g) == f"<Graph <string>: 4 layers (mamba x2, attention, gla), {n:,} params>"
    r = repr(model)
    assert "\n" not in r and f"{n:,} params" in r and "mamba x2" in r
    assert isinstance(model, torch.nn.Module)
