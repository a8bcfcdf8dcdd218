"""Seeded Z-Image-Turbo VAE decodes with the candidate swapped in, against goldens."""

from __future__ import annotations

import pytest

from numguard.golden import GoldenCase, run_golden_case
from numguard.pytest_plugin import assert_passed

GATE_CASES = [GoldenCase(resolution=256, dtype="float32", seed=0)]


@pytest.mark.parametrize("case", GATE_CASES, ids=lambda c: c.name)
def test_golden_decode(case, candidate, device, golden_root, record_property):
    result = run_golden_case(candidate, case, device, golden_root)
    if result.metrics is not None:
        record_property("psnr_db", result.metrics.psnr_db)
        record_property("ssim", result.metrics.ssim)
    assert_passed(result)
