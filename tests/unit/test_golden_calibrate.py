"""numguard calibrate: floors, faults, proposals and the detection sweep agree.

Runs at 32x32 with two fault layers and no torch.compile (about 15 decodes of
0.3 s); the figures quoted in numguard/tolerance.py come from the full run at
256x256.
"""

import json
import math

import pytest
import torch

from numguard import calibrate as cal_mod
from numguard.calibrate import SWEEP, calibrate, proposed_entry, render, to_json
from numguard.cli import EXIT_UNAVAILABLE, main
from numguard.decode_faults import scale
from numguard.golden import GoldenCase


@pytest.fixture(scope="module")
def cal():
    case = GoldenCase(32, "float32", 0)
    return calibrate(case, "cpu", compile_kernel=False, layers=2)


def test_it_measures_every_correct_alternative_and_each_fault(cal):
    assert [m.label for m in cal.kernel] == [
        "channels_last GroupNorm", "float64 GroupNorm", "two-pass GroupNorm"]
    labels = [m.label for m in cal.environment]
    assert labels[:2] == ["the reference again", "channels_last model"]
    assert labels[2:] == (["one thread"] if torch.get_num_threads() > 1 else [])
    assert cal.environment[0].psnr_db == math.inf, "a CPU decode repeats bit for bit"
    assert [m.label for m in cal.faults] == [
        "decoder.up_blocks.0.resnets.0.norm1 x (1 + 0.001)",
        "decoder.up_blocks.0.resnets.0.norm2 x (1 + 0.001)"]
    assert all(math.isfinite(m.psnr_db) for m in cal.kernel + cal.faults)


def test_the_proposals_follow_from_the_floors_and_margins(cal):
    live_floor = min(m.psnr_db for m in cal.kernel)
    golden_floor = min(m.psnr_db for m in cal.kernel + cal.environment)
    assert cal.live.floor.psnr_db == live_floor
    assert cal.golden.floor.psnr_db == golden_floor
    assert cal.live.psnr_db == math.floor(live_floor - 6.0)
    assert cal.golden.psnr_db == math.floor(golden_floor - 10.0)
    assert cal.live.ssim <= 1 - 1e-4 and cal.golden.ssim <= 1 - 1e-4
    worst_fault = max(m.psnr_db for m in cal.faults)
    assert cal.live.catches_all_faults == (worst_fault < cal.live.psnr_db)


def test_the_detection_limit_is_the_first_sweep_step_that_fails(cal):
    for proposal in (cal.live, cal.golden):
        failing = [float(m.label.rpartition("+ ")[2].rstrip(")")) for m in cal.sweep
                   if m.psnr_db < proposal.psnr_db or m.ssim < proposal.ssim]
        assert proposal.detection_limit == (min(failing) if failing else None)
        assert proposal.detection_limit is None or proposal.detection_limit in SWEEP


def test_render_and_json_carry_the_entry_to_paste(cal):
    text = render(cal)
    assert "('cpu', 'float32'): GoldenThresholds(" in text
    assert proposed_entry(cal) in text
    data = json.loads(to_json(cal))
    assert data["live"]["psnr_db"] == cal.live.psnr_db and data["ok"] == cal.ok


def test_bf16_faults_default_to_a_size_bf16_can_carry():
    assert cal_mod.DEFAULT_FAULT["bfloat16"] == 1e-2
    y = torch.linspace(-4, 4, 1001, dtype=torch.bfloat16)
    assert torch.equal(scale(y, 1.001), y), "1.001 rounds back to the same bf16 values"
    assert not torch.equal(scale(y, 1.01), y)


def test_an_unavailable_device_exits_with_its_code(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present, so cuda is available here")
    assert main(["calibrate", "--device", "cuda"]) == EXIT_UNAVAILABLE
    assert "--device cuda" in capsys.readouterr().err
