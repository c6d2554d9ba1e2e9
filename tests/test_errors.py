"""Errors say what happened: runtime failures are not option errors, and an internal error names its pass."""

from __future__ import annotations

import importlib

import pytest

from hybriddsl import HybOptionError, HybRuntimeError, IRError, TrainingError, parse
from hybriddsl.errors import Span
from hybriddsl.passes import pipeline
from hybriddsl.workbench import TrainConfig, make_task, train


def test_span_none_is_a_place_outside_the_text():
    assert str(Span.none("model.pt")) == "model.pt" and Span.none("x").line == 0


def test_a_crash_in_expand_is_reported_as_expand(monkeypatch):
    def broken(prog):
        raise KeyError("boom")

    monkeypatch.setattr(pipeline, "expand", broken)
    with pytest.raises(IRError, match=r"internal error in pass 'expand': KeyError") as e:
        pipeline.run(parse("M"))
    assert isinstance(e.value.__cause__, KeyError)


def test_a_crash_in_a_later_pass_names_it_and_those_before():
    def shaky(g):
        raise ZeroDivisionError("x")

    with pytest.raises(IRError, match=r"internal error in pass 'shaky' \(after expand, resolve\)"):
        pipeline.run(parse("M"), passes=[pipeline.resolve, shaky])


def test_a_diverging_run_is_a_training_error(monkeypatch):
    train_mod = importlib.import_module("hybriddsl.workbench.train")  # the package exports a function `train`

    real = train_mod.local_loss

    def nan_loss(*a, **k):
        loss, *rest = real(*a, **k)
        return loss * float("nan"), *rest

    monkeypatch.setattr(train_mod, "local_loss", nan_loss)
    task = make_task("mqar", seq_len=8, num_kv_pairs=1, vocab=8)
    cfg = TrainConfig(steps=2, batch=4, eval_size=4, progress=False)
    with pytest.raises(TrainingError) as e:
        train("hidden = 16\nGLA(heads=2)", task, cfg)
    assert isinstance(e.value, HybRuntimeError) and not isinstance(e.value, HybOptionError)
    assert str(e.value).startswith("training error: training diverged at step 1") and "<command line>" not in str(
        e.value
    )
