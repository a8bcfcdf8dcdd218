"""run_case and the failure message."""

import math

import pytest
import torch
from torch import nn

from numguard.candidates import resolve
from numguard.cases import Case, normal
from numguard.compare import Comparison, _error, run_case

CASE = Case((2, 16, 6, 6), 4, dist=normal(100.0, 1.0), seed=3)


def with_factory(factory):
    cand = resolve("torch")
    cand.spec, cand.factory = "test-kernel", factory
    return cand


def test_torch_passes_itself():
    result = run_case(resolve("torch"), CASE)
    assert result.passed and result.error_ratio <= 1 / 2  # same error, allowed 2x + floor


def test_failure_message_has_every_figure_and_the_replay_line():
    result = run_case(resolve("numguard.kernels:BesselVarianceGroupNorm"), CASE)
    text = result.message()
    assert text.splitlines()[0] == (
        "GroupNorm candidate 'numguard.kernels:BesselVarianceGroupNorm' disagrees with "
        "the float64 oracle."
    )
    assert f"Mismatched elements: {result.mismatched} / {CASE.channels * 72}" in text
    assert "Greatest error/allowed ratio" in text and "rounding floor" in text
    assert "nn.GroupNorm's own greatest error" in text
    assert text.splitlines()[-1] == (
        "Replay: numguard check --impl numguard.kernels:BesselVarianceGroupNorm "
        f"--case '{CASE.spec()}'"
    )
    worst = result.worst_index
    assert len(worst) == 4 and result.worst_error > result.worst_allowed


class Raising(nn.GroupNorm):
    def forward(self, x):
        raise RuntimeError("kernel launch failed")


class WrongShape(nn.GroupNorm):
    def forward(self, x):
        return super().forward(x)[:, :-1]


class WrongDtype(nn.GroupNorm):
    def forward(self, x):
        return super().forward(x).double()


class NaNAtOne(nn.GroupNorm):
    def forward(self, x):
        y = super().forward(x).clone()
        y.view(-1)[5] = float("nan")
        return y


class AcceptsAnything(nn.Module):
    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, device=None, dtype=None):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_channels)) if affine else None

    def forward(self, x):
        return torch.zeros_like(x)


@pytest.mark.parametrize(
    "factory, problem",
    [
        (Raising, "raised RuntimeError: kernel launch failed"),
        (WrongShape, "output shape (2, 15, 6, 6), expected (2, 16, 6, 6)"),
        (WrongDtype, "output dtype torch.float64, expected torch.float32 (the input's)"),
    ],
)
def test_structural_failures(factory, problem):
    result = run_case(with_factory(factory), CASE)
    assert not result.passed and result.problem == problem
    assert result.message().startswith(f"GroupNorm candidate 'test-kernel' failed: {problem}")


def test_nan_in_output_is_a_disagreement():
    result = run_case(with_factory(NaNAtOne), CASE)
    assert not result.passed
    assert result.mismatched == 1 and result.nonfinite_disagreements == 1
    assert "NaN/Inf disagreements with the oracle: 1" in result.message()


def test_invalid_input_must_be_rejected_like_torch():
    bad = Case((1, 4, 1), 4)  # one value per group: nn.GroupNorm raises
    assert run_case(resolve("torch"), bad).passed
    result = run_case(with_factory(AcceptsAnything), bad)
    assert "returned a result where nn.GroupNorm raises ValueError" in result.problem


def test_error_treats_agreeing_non_finite_values_as_exact():
    got = torch.tensor([math.inf, math.nan, 1.0, math.nan], dtype=torch.float64)
    expected = torch.tensor([1e6, math.nan, 1.0, 2.0], dtype=torch.float64)
    err = _error(got, expected, torch.float16)  # 1e6 overflows fp16 to inf
    assert err.tolist() == [0.0, 0.0, 0.0, math.inf]


def test_empty_batch_passes_with_no_elements():
    result = run_case(resolve("torch"), Case((0, 8, 3), 4))
    assert result.passed and result.numel == 0


def test_percent_and_passed_reflect_mismatches():
    c = Comparison(case=CASE, impl="x", numel=200, mismatched=3)
    assert not c.passed and c.percent == pytest.approx(1.5)
