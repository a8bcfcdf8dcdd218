"""Accuracy of the candidate against the float64 oracle under the tolerance policy."""

from __future__ import annotations

import pytest
from hypothesis import example, given

from numguard.cases import Case, normal
from numguard.compare import run_case
from numguard.pinned import PINNED
from numguard.pytest_plugin import assert_passed
from numguard.strategies import mixed_dtype_cases, realistic_cases, stress_cases


def _pinned_params():
    for name, pinned in sorted(PINNED.items()):
        marks = [pytest.mark.stress] if pinned.domain == "stress" else []
        if pinned.tier == "full":
            marks.append(pytest.mark.full)
        yield pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", list(_pinned_params()))
def test_pinned_case(name, candidate, device, worst_ratio):
    assert_passed(worst_ratio(run_case(candidate, PINNED[name].case, device)))


@given(case=realistic_cases())
@example(case=Case((1, 256, 5, 7), 32, dist=normal(1.0, 2.0)))  # F-19: H*W % 4 != 0
@example(case=Case((3, 12, 1, 1, 2), 6, dtype="bfloat16"))      # spatial sizes of 1
def test_realistic_domain(case, candidate, device, worst_ratio):
    assert_passed(worst_ratio(run_case(candidate, case, device)))


@pytest.mark.stress
@given(case=stress_cases())
def test_stress_domain(case, candidate, device, worst_ratio):
    assert_passed(worst_ratio(run_case(candidate, case, device)))


@given(case=mixed_dtype_cases())
def test_mixed_parameter_dtypes_and_autocast(case, candidate, device, worst_ratio):
    """Match nn.GroupNorm's answer in the same situation, or refuse with an error."""
    assert_passed(worst_ratio(run_case(candidate, case, device)))
