"""The float64 oracle against PyTorch's own float64 GroupNorm (an independent code path)."""

import doctest

import pytest
import torch
import torch.nn.functional as F

from numguard import oracle
from numguard.oracle import group_norm_f64


@pytest.mark.parametrize(
    "shape, groups",
    [((2, 6, 3), 2), ((1, 3), 1), ((2, 8, 5, 7), 4), ((1, 12, 2, 3, 4), 12), ((3, 6, 4), 1)],
)
@pytest.mark.parametrize("affine", [False, True])
def test_matches_torch_float64(shape, groups, affine):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * 3 + 7
    w = torch.randn(shape[1], generator=gen, dtype=torch.float64) if affine else None
    b = torch.randn(shape[1], generator=gen, dtype=torch.float64) if affine else None
    expected = F.group_norm(x, groups, w, b, 1e-5)
    torch.testing.assert_close(group_norm_f64(x, groups, w, b, 1e-5).y, expected)


def test_statistics_are_per_sample_and_group():
    x = torch.arange(16, dtype=torch.float32).reshape(2, 4, 2)
    result = group_norm_f64(x, 2, eps=0.0)
    flat = x.double().reshape(2, 2, 4)
    torch.testing.assert_close(result.mean, flat.mean(-1))
    torch.testing.assert_close(result.rstd, flat.var(-1, unbiased=False).rsqrt())


def test_reads_low_precision_values_exactly():
    x = torch.tensor([[[1.0, 2.0, 4.0, 8.0]]], dtype=torch.bfloat16)
    expected = F.group_norm(x.double(), 1, eps=1e-5)
    torch.testing.assert_close(group_norm_f64(x, 1, eps=1e-5).y, expected)


def test_empty_batch_gives_empty_output():
    assert group_norm_f64(torch.empty(0, 4, 3), 2).y.shape == (0, 4, 3)


@pytest.mark.parametrize(
    "x, groups, match",
    [
        (torch.zeros(4), 1, r"at least 2 dims .* shape \(4,\)"),
        (torch.zeros(1, 7, 3), 2, r"num_groups=2 .* C=7"),
        (torch.zeros(1, 4, 3), 0, r"num_groups=0"),
    ],
)
def test_rejects_malformed_calls(x, groups, match):
    with pytest.raises(ValueError, match=match):
        group_norm_f64(x, groups)


def test_rejects_wrong_parameter_shape():
    with pytest.raises(ValueError, match=r"weight must have shape \(4,\), got \(3,\)"):
        group_norm_f64(torch.zeros(1, 4, 2), 2, weight=torch.ones(3))


def test_docstring_example_runs():
    assert doctest.testmod(oracle).failed == 0
