"""DDP and FSDP2 on the gloo backend (2 CPU processes): gradients equal one process on the same global batch.

The model has a shared block (one attention used after layers 1 and 3), tied FFNs and the tied LM head: each
of those parameters gets gradient from several uses, which data parallelism must sum once and average once.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from hybriddsl.workbench.distributed import spawn

SRC = "hidden = 16\nG(heads=2) F A(heads=2, ffn=false) F\nshared A(heads=2, ffn=false)@1,3\ntie F\n"
VOCAB, B, T = 16, 4, 8


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    x = torch.randint(0, VOCAB, (B, T), generator=g)
    y = torch.randint(0, VOCAB, (B, T), generator=g)
    # uneven scored positions: rank 0's half keeps far fewer targets than rank 1's, so a per-rank mean
    # averaged over ranks would differ from the global mean
    y[0, 1:] = -100
    y[1, ::2] = -100
    return x, y


def _model():
    from hybriddsl import api

    torch.manual_seed(0)
    return api.parse_and_build(SRC, vocab=VOCAB, output="logits", tie_embeddings=True, dtype=torch.float64)


def _grads(model) -> dict[str, torch.Tensor]:
    out = {}
    for n, p in model.named_parameters():
        g = p.grad
        out[n] = (g.full_tensor() if hasattr(g, "full_tensor") else g).detach().clone()
    return out


def _rank_job() -> dict:
    """Runs in each of the 2 processes: DDP gradients, FSDP2 gradients, 3 DDP training steps."""
    import torch.distributed as dist

    from hybriddsl.workbench import TrainConfig, make_task, train
    from hybriddsl.workbench.distributed import wrap
    from hybriddsl.workbench.train import local_loss

    warnings.filterwarnings("ignore", message=".*returned a view tensor.*")
    rank, world = dist.get_rank(), dist.get_world_size()
    x, y = _batch()
    lb = B // world
    sl = slice(rank * lb, (rank + 1) * lb)
    out = {}
    for mode in ("ddp", "fsdp"):
        model = _model()
        net = wrap(model, mode)
        local_loss(net, x[sl], y[sl], world)[0].backward()
        out[mode] = _grads(model)
    task = make_task("mqar", seq_len=16, num_kv_pairs=2, vocab=16)
    cfg = TrainConfig(steps=3, batch=4, eval_every=0, eval_size=4, progress=False, parallel="ddp")
    model = _model().float()
    res = train(model, task, cfg)
    out["trained"] = {n: p.detach().clone() for n, p in model.state_dict().items()}
    out["loss"] = res.final_loss
    return out


@pytest.fixture(scope="module")
def ranks():
    return spawn(_rank_job, 2)


@pytest.fixture(scope="module")
def single():
    from hybriddsl.workbench.train import local_loss

    model = _model()
    x, y = _batch()
    local_loss(model, x, y)[0].backward()
    return _grads(model)


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_gradients_equal_one_process_on_the_global_batch(ranks, single, mode):
    # FSDP2 runs on CPU with gloo in this torch; a weight used several times stays in the root unit
    for rank in ranks:
        got = rank[mode]
        assert set(got) == set(single)
        for name, ref in single.items():
            torch.testing.assert_close(got[name], ref, rtol=1e-10, atol=1e-12, msg=f"{mode} {name}")
    tied = [n for n in single if "shared" in n or "ffn" in n]
    assert tied and any(single[n].abs().sum() > 0 for n in tied)


def test_ddp_training_steps_match_one_process(ranks):
    from hybriddsl.workbench import TrainConfig, make_task, train

    task = make_task("mqar", seq_len=16, num_kv_pairs=2, vocab=16)
    model = _model().float()
    res = train(model, task, TrainConfig(steps=3, batch=4, eval_every=0, eval_size=4, progress=False))
    ref = model.state_dict()
    for rank in ranks:
        assert rank["loss"] == pytest.approx(res.final_loss, rel=1e-5)
        for name, p in rank["trained"].items():
            torch.testing.assert_close(p, ref[name], rtol=1e-5, atol=1e-6, msg=name)
