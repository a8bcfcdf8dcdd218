"""The tolerance policy: condition-aware floor, dtype table, golden thresholds."""

import pytest
import torch
from torch import nn

from numguard.candidates import resolve
from numguard.cases import Case, Distribution, normal
from numguard.compare import run_case
from numguard.tolerance import (C_OUT, C_STAT, dtype_tolerance, golden_thresholds,
                                rounding_floor)


class ShiftedMeanGroupNorm(nn.GroupNorm):
    """Correct fp32 GroupNorm whose mean is off by one fp32 ulp (a legal rounding)."""

    def forward(self, x):
        xg = x.reshape(x.shape[0], self.num_groups, -1)
        mean = xg.double().mean(-1, keepdim=True).float()  # exact for a constant group
        mean = mean + 2.0**-14  # one fp32 ulp for values in [512, 1024)
        var = (xg - mean).square().mean(-1, keepdim=True)
        return ((xg - mean) * torch.rsqrt(var + self.eps)).reshape(x.shape)


def test_constant_group_rounding_is_not_a_failure():
    # one ulp of a mean of 1001.3 (6.1e-5) times rstd = 1/sqrt(1e-5) is 1.9e-2
    case = Case((1, 32, 4, 4), 32, affine=False, eps=1e-5,
                dist=Distribution.parse("constant(value=1001.3)"))
    cand = resolve("torch")
    cand.factory = ShiftedMeanGroupNorm
    result = run_case(cand, case)
    assert result.max_abs > 1e-2, "the shifted mean must really move the output"
    assert result.passed, result.message()


def test_floor_scales_with_conditioning():
    x = torch.tensor([[[1000.0, 1001.0]]], dtype=torch.float64)
    y = torch.tensor([[[-1.0, 1.0]]], dtype=torch.float64)
    mean, rstd = torch.tensor([[1000.5]]), torch.tensor([[2.0]])
    floor = rounding_floor(x, y, mean, rstd, None, None, torch.float32)
    u = 2.0**-24
    expected = C_STAT * u * (x + 1000.5) * 2.0 + C_OUT * u * 1.0
    torch.testing.assert_close(floor, expected)


def test_half_types_accumulate_in_fp32_but_round_in_their_own_dtype():
    tol = dtype_tolerance(torch.bfloat16)
    assert tol.u_acc == 2.0**-24 and tol.u_out == 2.0**-8
    assert dtype_tolerance(torch.float64).u_acc == 2.0**-53


def test_unknown_dtype_is_an_error():
    with pytest.raises(ValueError, match="torch.int8 has no tolerance entry"):
        dtype_tolerance(torch.int8)


def test_missing_golden_thresholds_say_what_to_do():
    with pytest.raises(KeyError, match="no golden thresholds for arch 'gfx942'"):
        golden_thresholds("gfx942", "float32")


@pytest.mark.parametrize("mean", [100.0, 1e4])
def test_one_pass_variance_fails_where_conditioning_is_poor(mean):
    case = Case((2, 64, 8, 8), 32, dist=normal(mean, 1.0))
    result = run_case(resolve("numguard.kernels:OnePassVarianceGroupNorm"), case)
    assert not result.passed and result.error_ratio > 10
