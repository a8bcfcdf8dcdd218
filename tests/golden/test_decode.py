"""Seeded Z-Image-Turbo decodes with the candidate swapped in, against goldens.

Each case is compared with its stored golden and with a live nn.GroupNorm decode on
the same device (thresholds per arch and dtype in numguard/tolerance.py), and
leaves an HTML page with the images in the --golden-report folder.
"""

from __future__ import annotations

import pytest
import torch

from numguard.device import device_arch
from numguard.golden import (PIPELINE_MODEL, REAL_VAE_MODEL, SYNTHETIC_MODEL,
                             GoldenCase, GoldenResult, make_golden, run_golden_case)
from numguard.golden_report import write_case_page
from numguard.pytest_plugin import assert_passed
from numguard.swap import SwapError
from numguard.weights import PIPELINE_RESOLUTION, PIPELINE_SEED, WeightsError
from numguard.zimage import SyntheticWeightsChanged

DTYPES = ("float32", "bfloat16", "float16")


def cases(model: str, resolutions, seeds=(0,), dtypes=DTYPES, full=False):
    marks = [pytest.mark.full] if full else []
    found = [GoldenCase(resolution, dtype, seed, model)
             for resolution in resolutions for seed in seeds for dtype in dtypes]
    return [pytest.param(case, id=case.id, marks=marks) for case in found]


CASES = [
    *cases(SYNTHETIC_MODEL, [256]),
    *cases(SYNTHETIC_MODEL, [256], seeds=(1,), full=True),
    *cases(SYNTHETIC_MODEL, [512, 1024], full=True),
    *cases(REAL_VAE_MODEL, [256]),
    *cases(REAL_VAE_MODEL, [512, 1024], full=True),
    *cases(PIPELINE_MODEL, [PIPELINE_RESOLUTION], seeds=(PIPELINE_SEED,),
           dtypes=("bfloat16",), full=True),
]


def weights_for(case: GoldenCase, real_weights, device: str):
    """The WeightsSource ``case`` needs, or skip with the reason it is not here."""
    if case.model == SYNTHETIC_MODEL:
        return None
    source, reason = real_weights
    if source is None:
        pytest.skip(reason)
    if case.model == PIPELINE_MODEL and torch.device(device).type == "cpu":
        pytest.skip("the full pipeline runs on a GPU only: its 6B-parameter "
                    "transformer takes 9 steps at 1024x1024, impractical on a CPU")
    return source


@pytest.mark.parametrize("case", CASES)
def test_golden_decode(case, candidate, device, golden_root, golden_report,
                       update_golden, real_weights, golden_replay_options,
                       record_property):
    weights = weights_for(case, real_weights, device)
    try:
        result = run_golden_case(candidate, case, device, golden_root, weights)
    except (SyntheticWeightsChanged, SwapError, WeightsError) as exc:
        stopped = GoldenResult(case, device_arch(device), candidate.spec, device,
                               replay_options=golden_replay_options,
                               problems=[str(exc)])
        page = write_case_page(golden_report, stopped)
        pytest.fail(f"{case.id}: {exc}\nPage: {page}", pytrace=False)
    result.replay_options = golden_replay_options
    page = write_case_page(golden_report, result)
    result.report_page = str(page)
    record_property("report_html", f"{golden_report.name}/{page.name}")
    if result.drift is not None:
        record_property("psnr_db", result.drift.metrics.psnr_db)
        record_property("ssim", result.drift.metrics.ssim)
        record_property("golden_arch", result.golden_arch)
    if result.kernel is not None:
        record_property("live_psnr_db", result.kernel.metrics.psnr_db)
        record_property("live_ssim", result.kernel.metrics.ssim)
    if update_golden and result.golden_replaceable:
        made_by = f"pytest tests/golden --update-golden --impl torch --device {device}"
        path = make_golden(golden_root, case, device, made_by, weights, force=True)
        was = result.golden_error or result.drift.line()
        pytest.skip(f"--update-golden wrote {path} (was: {was}); review it, commit it, "
                    f"and rerun without --update-golden")
    assert_passed(result)
