"""Each behavioural check passes nn.GroupNorm and catches the fault it exists for."""

import pytest

from numguard import behaviour
from numguard.candidates import resolve
from numguard.cases import Case, Distribution, normal

CASE = Case((3, 16, 5, 6), 4, dist=normal(1.0, 2.0), seed=5)


def kernel(name):
    return resolve(f"numguard.kernels:{name}")


@pytest.mark.parametrize("check", [
    lambda c: behaviour.check_layout(c, CASE, "cpu", strict=True),
    lambda c: behaviour.check_batch_independence(c, CASE, "cpu"),
    lambda c: behaviour.check_determinism_and_stale_memory(c, CASE, "cpu"),
    lambda c: behaviour.check_side_effects(c, CASE, "cpu"),
    lambda c: behaviour.check_bad_arguments(c, "cpu"),
    lambda c: behaviour.check_invariances(c, CASE, "cpu"),
    lambda c: behaviour.check_finiteness(c, CASE.with_(dtype="float16", dist=Distribution.parse(
        "uniform(low=256,high=65000)")), "cpu"),
], ids=["layout", "batch", "determinism", "side-effects", "bad-arguments", "invariance",
        "finiteness"])
def test_nn_groupnorm_passes_every_check(check):
    result = check(resolve("torch"))
    assert result.passed, result.message()


@pytest.mark.parametrize("name, check, expect", [
    ("ContiguousIndexingGroupNorm",
     lambda c: behaviour.check_layout(c, CASE, "cpu", strict=False), "disagrees"),
    ("FirstSampleStatsGroupNorm",
     lambda c: behaviour.check_batch_independence(c, CASE, "cpu"), "sample 1 of 3"),
    ("NondeterministicGroupNorm",
     lambda c: behaviour.check_determinism_and_stale_memory(c, CASE, "cpu"),
     "a repeated call changed the output"),
    ("StaleScratchGroupNorm",
     lambda c: behaviour.check_determinism_and_stale_memory(c, CASE, "cpu"), "changed the output"),
    ("InPlaceGroupNorm", lambda c: behaviour.check_side_effects(c, CASE, "cpu"),
     "the call modified its input"),
    ("SquaresInHalfGroupNorm", lambda c: behaviour.check_finiteness(
        c, CASE.with_(dtype="float16", dist=Distribution.parse("uniform(low=256,high=65000)")),
        "cpu"), "NaN/Inf outputs where the oracle is finite"),
])
def test_each_check_catches_its_fault(name, check, expect):
    result = check(kernel(name))
    assert not result.passed
    assert expect in result.message()


def test_aiter_like_contiguous_output_is_reported_and_strict_fails():
    from torch import nn

    class ContiguousOutput(nn.GroupNorm):
        def forward(self, x):
            return super().forward(x).contiguous()

    cand = resolve("torch")
    cand.factory = ContiguousOutput
    relaxed = behaviour.check_layout(cand, CASE, "cpu", strict=False)
    assert relaxed.passed and relaxed.layout_preserved is False
    assert "memory format not preserved" in relaxed.notes[-1]
    strict = behaviour.check_layout(cand, CASE, "cpu", strict=True)
    assert "--strict-layout requires the input's memory format" in strict.problem
    # the replay reruns the strict variant, which is what failed
    assert (relaxed.check, strict.check) == ("layout", "layout-strict")
    assert "--check layout-strict --case" in strict.replay()


def test_groups_must_divide_channels_like_nn_groupnorm():
    from torch import nn

    class NoChecks(nn.Module):  # aiter never checks C % G
        def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, device=None,
                     dtype=None):
            super().__init__()
            self.num_groups = num_groups

        def forward(self, x):
            return x * 0

    cand = resolve("torch")
    cand.factory = NoChecks
    result = behaviour.check_bad_arguments(cand, "cpu")
    assert result.problem.startswith("groups do not divide channels: GroupNorm(3, 8)")
    assert "Replay" not in result.message()


def test_large_tensor_cases_are_past_32_bit_indexing():
    import math

    sizes = {n: math.prod(s) for n, (s, _, _) in behaviour.LARGE_CASES.items()}
    assert 2**31 < sizes["above-2^31-elements"] < 2**32 < sizes["above-2^32-elements"]
