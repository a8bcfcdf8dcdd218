"""numguard selftest on a small part of the catalogue (the whole one is a benchmark)."""

from pathlib import Path

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
