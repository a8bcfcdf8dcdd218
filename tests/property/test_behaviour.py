"""The behaviour contract beyond accuracy, explored by hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from numguard import behaviour
from numguard.cases import Case, normal
from numguard.pytest_plugin import assert_passed
from numguard.strategies import realistic_cases, shapes, stress_cases


@given(case=realistic_cases())
def test_layouts_give_the_same_values(case, candidate, device, request, record_property):
    strict = request.config.getoption("strict_layout")
    result = behaviour.check_layout(candidate, case, device, strict=strict)
    if result.layout_preserved is False:
        record_property("memory_format_preserved", False)
    assert_passed(result)


@given(case=realistic_cases().filter(lambda c: c.shape[0] > 1))
def test_batch_samples_are_independent(case, candidate, device):
    assert_passed(behaviour.check_batch_independence(candidate, case, device))


@given(case=realistic_cases())
def test_deterministic_and_no_stale_memory(case, candidate, device):
    assert_passed(behaviour.check_determinism_and_stale_memory(candidate, case, device))


@given(case=realistic_cases().map(lambda c: c.with_(layout="contiguous")))
def test_no_side_effects(case, candidate, device):
    assert_passed(behaviour.check_side_effects(candidate, case, device))


def test_bad_arguments_fail_like_nn_groupnorm(candidate, device):
    assert_passed(behaviour.check_bad_arguments(candidate, device))


@st.composite
def grid_cases(draw) -> Case:
    shape, groups = draw(shapes())
    return Case(shape=shape, groups=groups, dist=normal(0.0, 2.0),
                eps=draw(st.sampled_from([1e-5, 1e-3]), label="eps"),
                affine=draw(st.booleans(), label="affine"),
                seed=draw(st.integers(0, 2**16), label="seed"))


@given(case=grid_cases())
def test_shift_and_scale_invariance(case, candidate, device):
    assert_passed(behaviour.check_invariances(candidate, case, device))


@given(case=stress_cases())
def test_finite_input_gives_finite_output(case, candidate, device):
    assert_passed(behaviour.check_finiteness(candidate, case, device))
