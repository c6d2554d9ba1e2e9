"""The training workbench: task generators (checked by independent decoders), training, compare, CLI errors."""

from __future__ import annotations

import csv
import json

import pytest
import torch

import hybriddsl
from hybriddsl.cli import main
from hybriddsl.errors import HybError, HybFileError, HybNameError, HybOptionError
from hybriddsl.workbench import TrainConfig, build_for_task, make_task, train
from hybriddsl.workbench.tasks import IGNORE, MQAR, InductionHeads, SelectiveCopy, TextLM
from hybriddsl.workbench.train import local_loss

TINY = "hidden = 32\nA(ffn=false, heads=2) D(heads=2)\n"


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------ task generators
@pytest.mark.parametrize(("n", "t", "v"), [(1, 4, 4), (4, 24, 16), (8, 64, 128), (16, 64, 64)], ids=lambda x: str(x))
def test_mqar_answers_recoverable_from_context(n, t, v):
    task = MQAR(num_kv_pairs=n, seq_len=t, vocab=v)
    x, y = task.batch(32, gen(n))
    assert x.shape == y.shape == (32, t) and x.dtype == y.dtype == torch.int64
    for row_x, row_y in zip(x.tolist(), y.tolist()):
        # independent decoding: read the key -> value table from the prefix, answer each scored query with it
        table = {}
        for i in range(n):
            k, val = row_x[2 * i], row_x[2 * i + 1]
            assert 1 <= k < v // 2 <= val < v
            assert k not in table  # keys distinct: the answer is unambiguous
            table[k] = val
        scored = [i for i, tgt in enumerate(row_y) if tgt != IGNORE]
        assert len(scored) == n and all(i >= 2 * n for i in scored)
        assert sorted(row_x[i] for i in scored) == sorted(table)  # every key queried exactly once
        for i in scored:
            assert row_y[i] == table[row_x[i]]
            assert row_x[i + 1] == row_y[i]  # the value follows its query (Zoology layout)
        rest = set(range(2 * n, t)) - set(scored) - {i + 1 for i in scored}
        assert all(row_x[i] == 0 for i in rest)  # pad elsewhere


@pytest.mark.parametrize(("n", "t", "v"), [(1, 2, 3), (4, 20, 8), (8, 64, 16)], ids=lambda x: str(x))
def test_selective_copy_targets_are_the_data_tokens_in_order(n, t, v):
    x, y = SelectiveCopy(num_tokens=n, seq_len=t, vocab=v).batch(32, gen(1))
    for row_x, row_y in zip(x.tolist(), y.tolist()):
        data = [tok for tok in row_x[: t - n] if tok != 0]  # the non-noise tokens of the context, in order
        assert len(data) == n and all(2 <= tok < v for tok in data)
        assert row_x[t - n :] == [1] * n
        assert row_y[: t - n] == [IGNORE] * (t - n) and row_y[t - n :] == data


@pytest.mark.parametrize(("t", "v"), [(4, 4), (64, 32)], ids=lambda x: str(x))
def test_induction_target_follows_the_earlier_special_token(t, v):
    x, y = InductionHeads(seq_len=t, vocab=v).batch(64, gen(2))
    for row_x, row_y in zip(x.tolist(), y.tolist()):
        specials = [i for i, tok in enumerate(row_x) if tok == 1]
        assert len(specials) == 2 and specials[1] == t - 1
        assert row_y[:-1] == [IGNORE] * (t - 1) and row_y[-1] == row_x[specials[0] + 1] >= 2


def test_text_windows_are_next_bytes_of_the_file(tmp_path):
    text = ("the quick brown fox jumps over the lazy dog. " * 20).encode()
    f = tmp_path / "t.txt"
    f.write_bytes(text)
    task = TextLM(f, seq_len=16)
    assert task.vocab == 256
    for x, y in (task.batch(8, gen(3)), task.eval_batch(8, gen(3))):
        for row_x, row_y in zip(x.tolist(), y.tolist()):
            assert row_x[1:] == row_y[:-1]
            assert bytes(row_x + row_y[-1:]) in text
    with pytest.raises(HybFileError, match="too short"):
        TextLM(f, seq_len=len(text))
    with pytest.raises(HybFileError, match="no such"):
        TextLM(tmp_path / "missing.txt")


def test_same_seed_same_batches_and_options_checked():
    for name in ("mqar", "selective_copy", "induction"):
        task = make_task(name, seq_len=32)
        a, b = task.batch(4, gen(5)), task.batch(4, gen(5))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(HybNameError, match="did you mean 'mqar'"):
        make_task("mqr")
    with pytest.raises(HybOptionError, match="too short"):
        make_task("mqar", seq_len=16, num_kv_pairs=8)
    with pytest.raises(HybOptionError, match="no option num_tokens"):
        make_task("mqar", num_tokens=3)


# ------------------------------------------------------------------------------------------ training
def test_train_reduces_loss_on_a_tiny_run():
    task = make_task("mqar", seq_len=16, num_kv_pairs=2, vocab=16)
    cfg = TrainConfig(steps=40, batch=32, lr=1e-2, eval_every=20, eval_size=64, progress=False)
    res = train(TINY, task, cfg)
    first, last = res.history[0]["loss"], sum(h["loss"] for h in res.history[-5:]) / 5
    assert last < 0.5 * first
    assert [s for s, _ in res.evals()] == [20, 40] and 0.0 <= res.final_accuracy <= 1.0
    assert res.params == sum(p.numel() for p in build_for_task(TINY, task).parameters())


def test_loss_adds_the_moe_aux_loss():
    task = make_task("induction", seq_len=8, vocab=8)
    torch.manual_seed(0)
    model = build_for_task("hidden = 16\nA(ffn=false, heads=2) E(experts=4, top_k=1, aux_weight=0.5)", task)
    x, y = task.batch(4, gen())
    loss, logits, _, _ = local_loss(model, x, y)
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE)
    aux = model.aux_loss()
    assert float(aux.detach()) > 0.0
    torch.testing.assert_close(loss, ce + aux)


def test_cli_train_writes_results_and_a_loadable_model(tmp_path, capsys):
    src = tmp_path / "m.hyb"
    src.write_text(TINY)
    out, pt = tmp_path / "r.json", tmp_path / "m.pt"
    args = ["train", str(src), "--task", "selective_copy", "--seq-len", "12", "--num-tokens", "3"]
    rc = main(
        args + ["--steps", "3", "--batch", "4", "--eval-size", "8", "--no-progress", "-o", str(out), "--save", str(pt)]
    )
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["task"] == "selective_copy" and len(data["history"]) == 3
    assert data["task_options"] == {"num_tokens": 3, "seq_len": 12, "vocab": 16}
    assert "accuracy" in capsys.readouterr().out
    model = hybriddsl.load(pt)
    assert model.vocab == 16 and model.output_mode == "logits"


def test_cli_compare_writes_csv_json_and_png(tmp_path):
    from PIL import Image

    files = []
    for name, text in (("a", TINY), ("b", "hidden = 32\nA(ffn=false, heads=2)*2\n")):
        files.append(tmp_path / f"{name}.hyb")
        files[-1].write_text(text)
    common = ["--task", "induction", "--steps", "4", "--batch", "4", "--eval-every", "2", "--eval-size", "8"]
    rc = main(
        [
            "compare",
            *map(str, files),
            *common,
            "--seq-lens",
            "8,16",
            "--no-progress",
            "-o",
            str(tmp_path / "r.csv"),
            "--plot",
            str(tmp_path / "p.png"),
        ]
    )
    assert rc == 0
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert len(rows) == 2 * 2 * 4  # files x lengths x steps
    assert {(r["model"], r["seq_len"]) for r in rows} == {(str(f), n) for f in files for n in ("8", "16")}
    assert all(0.0 <= float(r["final_accuracy"]) <= 1.0 for r in rows)
    assert [r["eval_acc"] != "" for r in rows[:4]] == [False, True, False, True]
    with Image.open(tmp_path / "p.png") as im:
        assert im.format == "PNG" and im.size[0] > 100
    rc = main(
        [
            "compare",
            str(files[0]),
            *common,
            "--no-progress",
            "-o",
            str(tmp_path / "r.json"),
            "--plot",
            str(tmp_path / "q.png"),
        ]
    )
    assert rc == 0
    (run,) = json.loads((tmp_path / "r.json").read_text())
    assert run["task_options"]["seq_len"] == 64 and len(run["history"]) == 4
    Image.open(tmp_path / "q.png").verify()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.hyb", "b.hyb", "p.png", "q.png", "r.csv", "r.json"]


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "{f}", "--task", "mqr"],
        ["train", "{f}", "--task", "text", "--text", "{d}/missing.txt"],
        ["train", "{f}", "--task", "text", "--text", "{d}/short.txt"],
        ["train", "{f}", "--task", "text"],
        ["train", "{f}", "--seq-len", "16", "--num-kv-pairs", "8"],
        ["train", "{f}", "--steps", "0"],
        ["train", "{f}", "--lr", "-1"],
        ["train", "{f}", "-o", "{d}/r.txt"],
        ["train", "{f}", "--save", "{d}/nofolder/m.pt"],
        ["train", "{d}/missing.hyb"],
        ["train", "{f}", "--set", "hidden=31"],
        ["compare", "{f}", "--seq-lens", "64,x"],
        ["compare", "{f}", "--plot", "{d}/p.svg"],
        ["compare", "{f}", "{d}/missing.hyb"],
    ],
    ids=[
        "task",
        "text-missing",
        "text-short",
        "text-none",
        "seq-len",
        "steps",
        "lr",
        "out-suffix",
        "save-folder",
        "hyb-missing",
        "bad-set",
        "seq-lens",
        "plot-suffix",
        "compare-missing",
    ],
)
def test_cli_bad_input_exits_2_without_traceback(argv, tmp_path, capsys):
    f = tmp_path / "m.hyb"
    f.write_text(TINY)
    (tmp_path / "short.txt").write_text("too short")
    rc = main([a.format(f=f, d=tmp_path) for a in argv] + ["--steps", "1"] * ("--steps" not in argv))
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and "internal error" not in err and "error" in err


def test_workbench_errors_are_hyb_errors():
    with pytest.raises(HybError):
        TrainConfig(steps=0).check()
