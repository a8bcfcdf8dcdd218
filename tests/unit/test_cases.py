"""Case specs round-trip and inputs are reproducible."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from numguard.cases import Case, Distribution, apply_layout, normal


@st.composite
def any_case(draw):
    rank = draw(st.integers(2, 5))
    shape = tuple(draw(st.lists(st.integers(0, 40), min_size=rank, max_size=rank)))
    dist = draw(st.sampled_from([
        normal(draw(st.floats(-1e4, 1e4)), draw(st.floats(1e-3, 1e3))),
        Distribution.parse("constant(value=1001.3)"),
        Distribution.parse("uniform(low=-2,high=0.5)"),
        Distribution.parse("outliers(mean=1,std=2,scale=500,every=97)"),
    ]))
    return Case(
        shape=shape, groups=draw(st.integers(1, 32)),
        dtype=draw(st.sampled_from(["float32", "float16", "bfloat16"])),
        eps=draw(st.sampled_from([1e-6, 1e-5, 0.5])), affine=draw(st.booleans()),
        layout=draw(st.sampled_from(["contiguous", "channels_last", "strided"])),
        dist=dist, seed=draw(st.integers(0, 2**31)),
    )


@given(case=any_case())
def test_spec_round_trips(case):
    parsed = Case.parse(case.spec())
    assert parsed.spec() == case.spec()
    assert parsed.shape == case.shape and parsed.groups == case.groups


def test_inputs_are_reproducible_and_seed_dependent():
    case = Case((2, 8, 3, 3), 4, dtype="bfloat16", dist=normal(5, 2), seed=7)
    a, b = case.make_inputs(), case.make_inputs()
    for left, right in zip(a, b):
        assert torch.equal(left, right)
    other = case.with_(seed=8).make_inputs()[0]
    assert not torch.equal(a[0], other)
    assert a[0].dtype == torch.bfloat16 and a[1].shape == (8,)


def test_outliers_and_constant_distributions():
    x = Distribution.parse("outliers(mean=0,std=1,scale=1000,every=10)").sample(
        (100,), torch.Generator().manual_seed(0)
    )
    assert (x == 1000).sum() == 10
    c = Distribution.parse("constant(value=3)").sample((4,), torch.Generator())
    assert torch.equal(c, torch.full((4,), 3.0, dtype=torch.float64))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("shape", [(2, 6, 5), (2, 6, 4, 5), (1, 6, 2, 3, 4)])
def test_layouts_keep_values(layout, shape):
    x = torch.randn(shape)
    y = apply_layout(x, layout)
    assert torch.equal(y, x)
    if layout == "strided":
        assert not y.is_contiguous()
    if layout == "channels_last":
        assert y.stride(1) == 1


@pytest.mark.parametrize(
    "text, match",
    [
        ("shape=2x4 groups=2 colour=red", "unknown fields"),
        ("groups=2", "lacks the field"),
        ("shape=2x4 groups=2 dtype=int8", "dtype 'int8'"),
        ("shape=2x4 groups=2 dist=poisson(lam=1)", "is not one of"),
        ("shape=2x4 groups=2 dist=normal(mean=1)", "needs exactly the arguments"),
        ("shape=2x4 groups=2 layout=nhwc", "layout 'nhwc'"),
    ],
)
def test_parse_errors_name_the_problem(text, match):
    with pytest.raises(ValueError, match=match):
        Case.parse(text)
