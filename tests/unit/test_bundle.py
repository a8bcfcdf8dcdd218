"""``numguard bundle`` and ``numguard compare``: what bundles hold, how two compare.

Bundles here are made at 64x64 (decoder shapes 1x512x8x8 to 1x128x64x64, and a
64x64 decode) so the module runs in about a minute; the rule is the same at 256.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from numguard.bundle import (
    MANIFEST,
    STRESS_DIST,
    BundleError,
    abs_error,
    bundle_cases,
    compare_bundles,
    load_bundle,
    tensors_sha256,
)
from numguard.cli import EXIT_FAILED, EXIT_PASSED, EXIT_USAGE, main

SMALL = ["--resolution", "64", "--decode-resolution", "64"]
FLOAT64 = "numguard.kernels:Float64GroupNorm"
MADE = {"torch": "torch", "torch-again": "torch",
        "channels-last": "torch-channels-last", "float64": FLOAT64}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    """One bundle per candidate of MADE, made through the command line."""
    root = tmp_path_factory.mktemp("bundles")
    made = {}
    for name, impl in MADE.items():
        made[name] = root / name
        assert main(["bundle", "--impl", impl, "--out", str(made[name]), *SMALL]) == 0
    return made


def run_compare(a: Path, b: Path, report: Path, *extra: str) -> int:
    return main(["compare", str(a), str(b), "--report", str(report), *extra])


def copy_bundle(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def edit_manifest(folder: Path, change) -> None:
    path = folder / MANIFEST
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_cases_cover_every_decoder_call_once_in_both_variants():
    cases = bundle_cases(64)
    decoder = [c for c in cases if c.variant == "decoder"]
    stress = [c for c in cases if c.variant == "stress"]
    assert len(decoder) == len(stress) == 7
    assert sum(len(c.calls) for c in decoder) == 30
    assert len({c.case.shape for c in decoder}) == 7
    for plain, shifted in zip(decoder, stress, strict=True):
        assert shifted.case == plain.case.with_(dist=STRESS_DIST)


def test_resolution_must_be_a_multiple_of_eight(tmp_path, capsys):
    code = main(["bundle", "--impl", "torch", "--out", str(tmp_path / "b"),
                 "--resolution", "100"])
    assert code == EXIT_USAGE
    err = capsys.readouterr().err
    assert "--resolution 100: must be a positive multiple of 8" in err


def test_manifest_records_machine_versions_seeds_and_input_hashes(bundles):
    manifest = load_bundle(bundles["torch"])
    assert manifest["arch"] == "cpu" and manifest["device"] == "cpu"
    assert manifest["device_name"]
    versions = manifest["versions"]
    assert versions["torch"] == torch.__version__
    assert {"hip", "cuda", "rocm", "aiter", "diffusers"} <= set(versions)
    assert manifest["seeds"]["decode-r64-float32-s0"] == 0
    for name, entry in manifest["cases"].items():
        assert manifest["seeds"][name] is not None
        assert (bundles["torch"] / entry["output"]).is_file(), name
        assert len(entry["input_sha256"]) == 64
    decode = manifest["cases"]["decode-r64-float32-s0"]
    assert decode["swapped"] == 52 and (bundles["torch"] / decode["png"]).is_file()


def test_input_hash_is_of_the_values_drawn_on_the_cpu(bundles):
    manifest = load_bundle(bundles["torch"])
    case = bundle_cases(64)[1]
    assert manifest["cases"][case.name]["input_sha256"] == tensors_sha256(
        *case.case.make_inputs())


def test_same_candidate_compares_clean(bundles, tmp_path, capsys):
    code = run_compare(bundles["torch"], bundles["torch-again"], tmp_path)
    assert code == EXIT_PASSED
    out = capsys.readouterr().out
    assert "CLEAN: 15 of 15 cases within the thresholds" in out
    data = json.loads((tmp_path / "compare.json").read_text())
    assert data["clean"] and all(c["max_abs"] == 0 for c in data["cases"])


def test_two_correct_kernels_compare_clean(bundles, tmp_path):
    result = compare_bundles(bundles["torch"], bundles["float64"])
    groupnorm = [c for c in result.cases if c.kind == "groupnorm"]
    assert result.clean, [c.verdict() for c in result.cases]
    assert max(c.max_abs for c in groupnorm) > 0  # different kernels, different bits


def test_channels_last_drifts_on_the_stress_cases(bundles, tmp_path, capsys):
    code = run_compare(bundles["torch"], bundles["channels-last"], tmp_path)
    assert code == EXIT_FAILED
    out = capsys.readouterr().out
    drifted = {c.name for c in compare_bundles(bundles["torch"],
                                               bundles["channels-last"]).drifted}
    # rank 3 has no channels-last form, so its stress case runs the same kernel
    stress = {c.name for c in bundle_cases(64) if c.variant == "stress"}
    assert drifted == stress - {"mid.attention-0.stress"}
    assert "DRIFT (B off the oracle)" in out
    assert "DRIFT in 6 of 15 cases" in out
    for name in ("compare.md", "compare.html"):
        assert "up3-0.stress" in (tmp_path / name).read_text()


def test_a_wrong_kernel_on_both_sides_agrees_with_itself(bundles, tmp_path):
    """Drift is between the bundles; each side's own error is shown, not gated."""
    twin = copy_bundle(bundles["channels-last"], tmp_path / "twin")
    result = compare_bundles(bundles["channels-last"], twin)
    stress = next(c for c in result.cases if c.name == "up3-0.stress")
    assert result.clean
    assert stress.ratio_a > 1 and stress.verdict() == "agree, A and B off the oracle"


def test_bundles_of_other_inputs_are_refused_naming_the_case(bundles, tmp_path, capsys):
    other = copy_bundle(bundles["torch-again"], tmp_path / "other")
    edit_manifest(other, lambda m: m["cases"]["up1-0"].update(input_sha256="0" * 64))
    assert run_compare(bundles["torch"], other, tmp_path / "report") == EXIT_USAGE
    err = capsys.readouterr().err
    assert "case 'up1-0' was made from different inputs" in err


def test_bundles_of_other_resolutions_are_refused(bundles, tmp_path, capsys):
    other = copy_bundle(bundles["torch-again"], tmp_path / "other")

    def drop_a_case(manifest):
        del manifest["cases"]["up3-0"]

    edit_manifest(other, drop_a_case)
    assert run_compare(bundles["torch"], other, tmp_path / "report") == EXIT_USAGE
    assert "only in A: ['up3-0']" in capsys.readouterr().err


def test_a_changed_output_file_is_refused(bundles, tmp_path):
    other = copy_bundle(bundles["torch-again"], tmp_path / "other")
    path = other / "outputs" / "up2-0.safetensors"
    from safetensors.torch import load_file, save_file

    tensor = load_file(path)["output"]
    tensor.view(-1)[0] += 1.0
    save_file({"output": tensor}, path)
    with pytest.raises(BundleError, match="does not match the output_sha256"):
        compare_bundles(bundles["torch"], other)


def test_existing_bundle_needs_force(bundles, tmp_path, capsys):
    target = copy_bundle(bundles["torch"], tmp_path / "b")
    args = ["bundle", "--impl", "torch", "--out", str(target), "--resolution", "8",
            "--decode-resolution", "8"]
    assert main(args) == EXIT_USAGE
    assert "already exists; pass --force" in capsys.readouterr().err
    assert main([*args, "--force"]) == EXIT_PASSED
    assert load_bundle(target)["resolution"] == 8


def test_a_folder_that_is_not_a_bundle_is_never_overwritten(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("keep me")
    code = main(["bundle", "--impl", "torch", "--out", str(tmp_path), *SMALL])
    assert code == EXIT_USAGE and (tmp_path / "notes.txt").read_text() == "keep me"
    assert "is not a numguard bundle" in capsys.readouterr().err


def test_an_arch_without_image_thresholds_fails_until_given_some(bundles, tmp_path):
    gpu = copy_bundle(bundles["torch-again"], tmp_path / "gpu")
    edit_manifest(gpu, lambda m: m.update(arch="gfx942"))
    result = compare_bundles(bundles["torch"], gpu)
    decode = result.cases[-1]
    assert not result.clean
    assert decode.verdict().startswith("ERROR: no image thresholds")
    assert "no golden thresholds for arch 'gfx942'" in result.image_rule
    given = compare_bundles(bundles["torch"], gpu, psnr_min=100.0, ssim_min=0.999)
    assert given.clean and "(--psnr-min/--ssim-min)" in given.image_rule


def test_a_candidate_that_raises_is_recorded_and_fails_the_compare(bundles, tmp_path):
    from numguard.bundle import make_bundle
    from numguard.candidates import Candidate

    def broken(*args, **kwargs):
        raise RuntimeError("no kernel for this shape")

    candidate = Candidate("broken", "always raises", broken)
    manifest = make_bundle(candidate, "cpu", tmp_path / "broken", 64, 64)
    entry = manifest["cases"]["up1-0"]
    assert "output" not in entry
    assert entry["problem"] == (
        "the candidate raised RuntimeError: no kernel for this shape")
    assert "GroupNorm swap for 'broken' failed" in manifest["cases"][
        "decode-r64-float32-s0"]["problem"]
    result = compare_bundles(bundles["torch"], tmp_path / "broken")
    assert not result.clean and len(result.drifted) == 15
    assert result.cases[0].verdict().startswith("ERROR: B: the candidate raised")


def test_abs_error_counts_matching_non_finite_values_as_agreement():
    nan, inf = float("nan"), float("inf")
    got = torch.tensor([1.0, nan, inf, inf, 2.0])
    expected = torch.tensor([1.5, nan, inf, -inf, nan], dtype=torch.float64)
    assert abs_error(got, expected).tolist() == [0.5, 0.0, 0.0, inf, inf]
