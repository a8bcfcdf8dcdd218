"""numguard selftest on a small part of the catalogue (the whole one is a benchmark)."""

from pathlib import Path

import pytest

from numguard import selftest as selftest_module
from numguard.selftest import KernelVerdict, render_table, selftest

TESTS = Path(__file__).parents[1]


def test_a_fault_is_caught_and_a_correct_kernel_passes():
    verdicts = selftest(TESTS, "gate", seeds=1, workers=2,
                        kernels=["BesselVarianceGroupNorm", "TwoPassGroupNorm"],
                        extra_correct=())
    by_name = {v.kernel: v for v in verdicts}
    bessel, two_pass = by_name["BesselVarianceGroupNorm"], by_name["TwoPassGroupNorm"]
    assert bessel.caught and bessel.caught_by.startswith("test_")
    assert "shape=" in bessel.case
    assert not two_pass.caught and two_pass.ok


def test_table_counts_misses_and_false_alarms():
    verdicts = [KernelVerdict("A", faulty=True, caught=False),
                KernelVerdict("B", faulty=False, caught=True, caught_by="test_x", runs=3)]
    table = render_table(verdicts, "gate")
    assert "| A | faulty | MISSED |" in table
    assert "| B | correct (3 seeds) | FALSE ALARM | test_x |" in table
    assert table.splitlines()[-1] == ("faulty kernels caught: 0/1; false alarms on "
                                      "correct kernels: 1")


def test_every_seed_is_its_own_job_and_the_first_failing_seed_is_reported(monkeypatch):
    calls = []

    def fake_run(tests, spec, tier, seed, stop_first):
        calls.append((spec, seed))
        if spec == "torch-compile" and seed in (3, 7):
            return "test_batch_samples_are_independent", f"shape=1x{seed}", 2.0
        return "", "", 1.0

    monkeypatch.setattr(selftest_module, "run_kernel", fake_run)
    verdicts = selftest(TESTS, "gate", seeds=10, workers=3,
                        kernels=["OnePassVarianceGroupNorm", "torch-compile"])
    assert sorted(c for c in calls if c[0] == "torch-compile") == [
        ("torch-compile", s) for s in range(10)]
    assert ("numguard.kernels:OnePassVarianceGroupNorm", None) in calls
    one_pass, compiled = verdicts
    assert (one_pass.kernel, one_pass.runs, one_pass.caught) == (
        "OnePassVarianceGroupNorm", 1, False)
    assert compiled.runs == 10 and compiled.seconds == 12.0 and not compiled.ok
    assert compiled.case == "shape=1x3 (hypothesis seed 3)"


def test_kernel_names_are_checked_and_the_short_spelling_is_accepted(monkeypatch):
    calls = []
    monkeypatch.setattr(selftest_module, "run_kernel",
                        lambda tests, spec, *a, **k: calls.append(spec) or ("", "", 0.0))
    with pytest.raises(ValueError, match="no kernel OnePassVarience in the catalogue"):
        selftest(TESTS, kernels=["OnePassVarience"], extra_correct=())
    assert calls == [], "nothing runs when a name is wrong"
    (verdict,) = selftest(TESTS, kernels=["OnePassVariance"], extra_correct=())
    assert verdict.kernel == "OnePassVarianceGroupNorm"
    assert calls == ["numguard.kernels:OnePassVarianceGroupNorm"]
