"""Accuracy of the candidate against the float64 oracle under the tolerance policy."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from numguard.cases import Case, normal
from numguard.compare import run_case
from numguard.pinned import PINNED
from numguard.pytest_plugin import assert_passed


@pytest.mark.parametrize("name", sorted(PINNED))
def test_pinned_case(name, candidate, device, worst_ratio):
    assert_passed(worst_ratio(run_case(candidate, PINNED[name], device)))


@st.composite
def cases(draw) -> Case:
    """A small GroupNorm call: rank 3 to 5, any group count, offset values."""
    rank = draw(st.integers(3, 5), label="rank")
    groups = draw(st.sampled_from([1, 2, 3, 4, 8, 16, 32]), label="groups")
    channels_per_group = draw(st.integers(1, 6), label="channels_per_group")
    batch = draw(st.integers(1, 3), label="batch")
    spatial = draw(
        st.lists(st.integers(1, 9), min_size=rank - 2, max_size=rank - 2), label="spatial"
    )
    if channels_per_group * math.prod(spatial) < 2:
        # nn.GroupNorm rejects one-element groups; that is a bad-argument case
        spatial[-1] = 2
    dtype = draw(st.sampled_from(["float32", "float16", "bfloat16"]), label="dtype")
    std = draw(st.sampled_from([0.01, 1.0, 30.0]), label="std")
    mean_over_std = draw(st.sampled_from([0.0, 3.0, -10.0, 100.0, 1e3]), label="mean/std")
    return Case(
        shape=(batch, groups * channels_per_group, *spatial),
        groups=groups,
        dtype=dtype,
        eps=draw(st.sampled_from([1e-6, 1e-5, 1e-3]), label="eps"),
        affine=draw(st.booleans(), label="affine"),
        dist=normal(mean_over_std * std, std),
        seed=draw(st.integers(0, 2**16), label="seed"),
    )


@given(case=cases())
def test_accuracy_matches_oracle(case, candidate, device, worst_ratio):
    assert_passed(worst_ratio(run_case(candidate, case, device)))
