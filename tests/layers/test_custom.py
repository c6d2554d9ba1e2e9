"""custom: factories by string and by callable, option pass-through, step on the prefix or the user's own step,
and the build-time errors (import, misspelt name, failing factory, wrong output)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hybriddsl.errors import LoweringError
from hybriddsl.layers.custom import SPEC, Custom
from hybriddsl.layers.gru import GRU
from tests.layers.checks import (
    check_causal,
    check_dtypes,
    check_gradcheck,
    check_step_matches_forward,
    check_trains,
)


class CausalConvMix(nn.Module):
    """A user's module with no step: causal depthwise conv over ``size`` taps, then a linear map."""

    def __init__(self, hidden: int, size: int = 3):
        super().__init__()
        self.size = size
        self.conv = nn.Conv1d(hidden, hidden, size, groups=hidden)
        self.proj = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.pad(x.transpose(1, 2), (self.size - 1, 0))
        return self.proj(F.gelu(self.conv(h).transpose(1, 2)))


def make_conv(hidden_size: int, size: int = 3) -> nn.Module:
    return CausalConvMix(hidden_size, size)


BY_NAME = f"{__name__}:make_conv"


def test_string_and_callable_build_the_same_module():
    torch.manual_seed(0)
    a = Custom(8, fn=BY_NAME, size=2)
    torch.manual_seed(0)
    b = Custom(8, fn=make_conv, size=2)
    assert a.inner.conv.kernel_size == (2,) == b.inner.conv.kernel_size  # the option reached the factory
    x = torch.randn(2, 5, 8)
    assert torch.equal(a(x), b(x))
    assert torch.equal(a(x), a.inner(x))  # the wrapper adds nothing


@pytest.mark.parametrize("size", [1, 3], ids=["taps1", "taps3"])
def test_prefix_step_and_shared_checks(size):
    m = Custom(16, fn=BY_NAME, size=size)
    assert set(m.init_state(2)) == {"prefix"}
    check_step_matches_forward(m, 16, seq=12)
    check_causal(Custom(16, fn=BY_NAME, size=size), 16)
    check_gradcheck(Custom(4, fn=BY_NAME, size=size), 4)
    check_dtypes(Custom(16, fn=BY_NAME, size=size), 16)
    assert m.state_bytes(10, 2) == 10 * 16 * 2


def test_uses_the_modules_own_step():
    m = Custom(16, fn="hybriddsl.layers.gru:GRU", size=8)
    assert isinstance(m.inner, GRU) and m.inner.size == 8
    st = m.init_state(2)
    assert set(st) == {"h"}  # the GRU's state, not a prefix
    check_step_matches_forward(m, 16, seq=10)
    assert m.state_bytes(1000) == m.inner.state_bytes(1000) == 8 * 4


def test_trains():
    check_trains(lambda h: Custom(h, fn=make_conv, size=3), hidden=32, steps=100, lr=1e-2)


def _lowering_error(**kw) -> LoweringError:
    with pytest.raises(LoweringError) as info:
        Custom(8, **kw)
    return info.value


def test_import_errors_are_clear():
    e = _lowering_error(fn="no_such_pkg_xyz.mod:make")
    assert "cannot import module 'no_such_pkg_xyz.mod'" in e.message and "PYTHONPATH" in e.hint
    e = _lowering_error(fn="torch.nn:Lineer")
    assert "'torch.nn' has no attribute 'Lineer'" in e.message and "did you mean 'Linear'" in e.message
    e = _lowering_error(fn="torch.nn.Linear")
    assert "package.module:factory" in e.message
    e = _lowering_error(fn="torch:pi")
    assert "not a callable factory" in e.message
    e = _lowering_error()
    assert "fn is required" in e.message


def test_bad_modules_are_clear():
    e = _lowering_error(fn="torch.nn:Linear")  # Linear(8) lacks out_features
    assert "raised TypeError" in e.message and "'torch.nn:Linear'(hidden_size=8)" in e.message
    e = _lowering_error(fn=lambda h: nn.Linear(h, h + 1))
    assert "maps [2, 3, 8] to [2, 3, 9]" in e.message
    e = _lowering_error(fn=lambda h: nn.GRU(h, h, batch_first=True))
    assert "returned a tuple, not one tensor" in e.message
    e = _lowering_error(fn=lambda h: 3)
    assert "returned a int, not a torch.nn.Module" in e.message
    e = _lowering_error(fn=lambda h: nn.Linear(2 * h, h))
    assert "fails on an input of shape [2, 3, 8]" in e.message
    e = _lowering_error(fn=make_conv, width=4)  # an option the factory does not take
    assert "width=4" in e.message and "unexpected keyword" in e.message


def test_shape_check_leaves_batchnorm_statistics_alone():
    class BN(nn.Module):
        def __init__(self, h):
            super().__init__()
            self.bn = nn.BatchNorm1d(h)

        def forward(self, x):
            return self.bn(x.transpose(1, 2)).transpose(1, 2)

    m = Custom(8, fn=BN)
    assert m.inner.training and int(m.inner.bn.num_batches_tracked) == 0


def test_spec_validate():
    assert SPEC.validate(SPEC.complete({}), 8) == 'custom needs fn = "package.module:factory"'
    assert (
        SPEC.validate(SPEC.complete({"fn": "not a target"}), 8)
        == "fn must look like 'package.module:factory', got 'not a target'"
    )
    assert SPEC.validate(SPEC.complete({"fn": "a.b:c"}), 8) is None
    assert SPEC.validate(SPEC.complete({"fn": make_conv}), 8) is None
    assert SPEC.option("fn").check(3) == "option 'fn' takes a name or string, got 3"
