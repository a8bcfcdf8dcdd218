"""A golden case end to end: both comparisons, the faults they catch, the refusals.

Most cases decode at 64x64 into a temporary store (about 2 s a decode); one runs
the gate case itself (256x256) against the committed golden.
"""

import json

import numpy as np
import pytest
import torch
from torch import nn

from numguard import golden, tolerance, zimage
from numguard.candidates import Candidate, resolve
from numguard.decode_faults import LargeGroupScaledGroupNorm, scale
from numguard.golden import (GoldenCase, default_golden_root, make_golden,
                             run_golden_case)

SMALL = GoldenCase(resolution=64, dtype="float32", seed=0)


def large_group_fault(name: str, factor: float, threshold: int = 2**14) -> Candidate:
    """A candidate whose groups above ``threshold`` elements come out times ``factor``.

    At 64x64 only decoder.up_blocks.3.resnets.0.norm1 (8 x 64 x 64 = 32768 elements
    per group) is above 2**14; the swap's 8x8 preflight probe never is.
    """

    class Faulty(nn.GroupNorm):
        def forward(self, x):
            y = super().forward(x)
            large = x.shape[1:].numel() // self.num_groups > threshold
            return scale(y, factor) if large else y

    return Candidate(name, f"GroupNorm x {factor} above {threshold} elements", Faulty)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("goldens")
    make_golden(root, SMALL, "cpu", "test")
    return root


def test_the_baseline_matches_its_golden_in_both_comparisons(store):
    result = run_golden_case(resolve("torch"), SMALL, "cpu", store)
    assert result.passed, result.message()
    assert result.drift.metrics.psnr_db == result.kernel.metrics.psnr_db == float("inf")
    assert (result.golden_arch, result.golden_source) == ("cpu", "own arch")
    expected = tolerance.GOLDEN_THRESHOLDS[("cpu", "float32")]
    assert result.drift.threshold is expected.golden
    assert result.kernel.threshold is expected.live


def test_one_decode_per_case_and_candidate(store, monkeypatch):
    case = GoldenCase(resolution=64, dtype="float32", seed=7)
    decodes = []
    original = golden._decode_vae
    monkeypatch.setattr(golden, "_decode_vae", lambda *a: decodes.append(a[0].spec)
                        or original(*a))
    fault = large_group_fault("fault-7", 1.001)
    for _ in range(2):
        run_golden_case(resolve("torch"), case, "cpu", store)
        run_golden_case(fault, case, "cpu", store)
    assert decodes == ["torch", "fault-7"], "the torch decode is the live reference"


def test_a_groupnorm_off_by_0_1_percent_fails_both_comparisons(store):
    result = run_golden_case(large_group_fault("fault-64", 1.001), SMALL, "cpu", store)
    thresholds = tolerance.golden_thresholds("cpu", "float32")
    assert not result.passed
    assert result.kernel.metrics.psnr_db < thresholds.live.psnr_db
    assert result.drift.metrics.psnr_db < thresholds.golden.psnr_db
    assert result.kernel.metrics.ssim > 0.9999, "SSIM alone would not see it"
    lines = result.message().splitlines()
    assert lines[0].endswith(": FAILED")
    comparisons = [line for line in lines if line.startswith("vs ")]
    assert len(comparisons) == 2 and all(c.endswith(": FAILED") for c in comparisons)


def test_the_gate_fails_a_candidate_off_by_0_1_percent_in_one_layer():
    case = GoldenCase(resolution=256, dtype="float32", seed=0)
    cand = Candidate("large-group-scaled", "decode fault", LargeGroupScaledGroupNorm)
    result = run_golden_case(cand, case, "cpu", default_golden_root())
    assert result.golden_arch == "cpu" and not result.golden_error
    assert not result.drift.passed and not result.kernel.passed, result.message()


def test_nan_in_the_decode_is_named(store):
    cand = large_group_fault("nan-64", float("nan"))
    result = run_golden_case(cand, SMALL, "cpu", store)
    assert not result.passed
    headline = "NaN or Inf in the decode with 'nan-64': "
    assert any(p.startswith(headline) for p in result.problems)
    assert not result.golden_replaceable, "--update-golden never stores a NaN decode"
    assert result.kernel.metrics.nan_count > 0


def test_a_missing_golden_fails_and_says_how_to_make_it(tmp_path):
    result = run_golden_case(resolve("torch"), SMALL, "cpu", tmp_path)
    assert not result.passed and result.drift is None
    assert result.kernel.passed, "the live comparison still runs"
    # the store is not the default one, so the fix names it
    assert (f"numguard update-golden --model zimage-synthetic --golden-dir {tmp_path} "
            f"--device") in result.golden_error
    assert result.golden_replaceable
    result.replay_options = f" --golden-dir {tmp_path}"
    assert ("Replay: python -m pytest tests/golden -k zimage-synthetic-decode-r64-float32-s0"
            f" --impl torch --device cpu --golden-dir {tmp_path}") in result.message()


def test_missing_thresholds_fail_but_still_measure(store, monkeypatch):
    monkeypatch.setattr(tolerance, "GOLDEN_THRESHOLDS", {})
    result = run_golden_case(resolve("torch"), SMALL, "cpu", store)
    assert not result.passed
    assert "no golden thresholds for arch 'cpu' and dtype 'float32'" in (
        result.problems[0])
    assert result.kernel.metrics.psnr_db == float("inf")
    assert "(no threshold)" in result.message()


def test_an_explicit_fallback_is_named_in_the_result(store, monkeypatch):
    import numguard.device

    monkeypatch.setattr(numguard.device, "device_arch", lambda device: "gfx950")
    cpu = tolerance.GOLDEN_THRESHOLDS[("cpu", "float32")]
    monkeypatch.setattr(tolerance, "GOLDEN_THRESHOLDS", {("gfx950", "float32"): cpu})
    result = run_golden_case(resolve("torch"), SMALL, "cpu", store)
    assert "no golden decode-r64-float32-s0 for arch gfx950" in result.golden_error
    monkeypatch.setattr(golden, "ARCH_FALLBACK", {"gfx950": ("cpu",)})
    result = run_golden_case(resolve("torch"), SMALL, "cpu", store)
    assert result.passed and result.golden_arch == "cpu"
    assert "vs the golden (cpu, fallback: gfx950 has no golden for this case and " \
           "ARCH_FALLBACK['gfx950'] = ('cpu',))" in result.message()


def test_half_precision_on_the_cpu_runs_its_groupnorm_natively():
    vae, _ = golden.synthetic_vae()
    vae, convolutions = zimage.prepare_vae(vae, "cpu", torch.bfloat16)
    assert convolutions == "float32 accumulation rounded to bfloat16"
    assert vae.decoder.conv_in.weight.dtype == torch.float32
    assert vae.decoder.conv_norm_out.weight.dtype == torch.bfloat16
    z = torch.randn(1, 128, 8, 8, dtype=torch.bfloat16)
    assert vae.decoder.conv_out(z).dtype == torch.bfloat16


def test_a_bf16_decode_stays_near_the_fp32_decode():
    bf16 = golden.decode_case(resolve("torch"), GoldenCase(64, "bfloat16"), "cpu")
    fp32 = golden.decode_case(resolve("torch"), SMALL, "cpu")
    m = golden.image_metrics(fp32.image, bf16.image)
    # measured: 55.3 dB at 64x64 (the native bf16 CPU decode: 55.3 dB as well)
    assert 45 < m.psnr_db < 70 and bf16.convolutions.endswith("bfloat16")


def test_regenerated_weights_with_another_hash_stop_the_comparison(store, monkeypatch):
    regenerated = zimage.SYNTHETIC_WEIGHTS_SHA256[0][:16]
    monkeypatch.setattr(zimage, "SYNTHETIC_WEIGHTS_SHA256", {0: "0" * 64})
    monkeypatch.setattr(golden, "_VAE_CACHE", {})
    monkeypatch.setattr(golden, "_DECODES", {})
    with pytest.raises(zimage.SyntheticWeightsChanged,
                       match=rf"regenerated to sha256 {regenerated}\.\.\., but "
                             r"0000000000000000\.\.\. is recorded.*stops here"):
        run_golden_case(resolve("torch"), SMALL, "cpu", store)


def test_the_recorded_hash_is_the_one_every_committed_golden_was_made_with():
    store = default_golden_root() / golden.SYNTHETIC_MODEL
    manifests = sorted(store.glob("*/manifest.json"))
    assert manifests
    recorded = zimage.SYNTHETIC_WEIGHTS_SHA256[0]
    for path in manifests:
        for name, entry in json.loads(path.read_text())["cases"].items():
            assert entry["weights_sha256"] == recorded, (path, name)


def test_every_committed_golden_is_valid():
    root = default_golden_root()
    checked = 0
    for path in sorted((root / golden.SYNTHETIC_MODEL).glob("*/manifest.json")):
        for entry in json.loads(path.read_text())["cases"].values():
            case = GoldenCase(entry["resolution"], entry["dtype"], entry["seed"])
            image = golden.load_golden(root, case, path.parent.name,
                                       entry["weights_sha256"], entry["convolutions"])
            assert np.isfinite(image).all()
            checked += 1
    assert checked >= 3
