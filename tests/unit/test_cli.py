"""End to end: ``numguard verify`` and friends as a user runs them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from numguard.cli import EXIT_FAILED, EXIT_PASSED, EXIT_UNAVAILABLE, EXIT_USAGE, main

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
EXAMPLES = ROOT / "examples" / "candidates.py"

RUNS = {
    "torch": ["torch"],
    "channels-last": ["torch-channels-last"],
    "float64": [f"{EXAMPLES}:Float64GroupNorm"],
    "one-pass": [f"{EXAMPLES}:OnePassGroupNorm"],
    "bessel": [f"{EXAMPLES}:BesselGroupNorm"],
    "aiter": ["aiter"],
}


@pytest.fixture(scope="module")
def verify_runs(tmp_path_factory):
    """Every verify run of this module, started together (they are independent)."""
    env = dict(os.environ, PYTHONPATH=str(HERE / "no_rocm_aiter"))
    procs = {}
    for name, (impl,) in RUNS.items():
        report = tmp_path_factory.mktemp(name)
        cmd = [sys.executable, "-m", "numguard", "verify", "--impl", impl,
               "--report", str(report)]
        procs[name] = (report, subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True))
    results = {}
    for name, (report, proc) in procs.items():
        out, _ = proc.communicate(timeout=900)
        results[name] = (proc.returncode, out, report)
    return results


def summary(report: Path) -> dict:
    return json.loads((report / "summary.json").read_text())


@pytest.mark.parametrize("name", ["torch", "float64"])
def test_correct_candidates_pass(verify_runs, name):
    code, out, report = verify_runs[name]
    assert code == EXIT_PASSED, out
    data = summary(report)
    assert data["status"] == "passed" and data["counts"]["failed"] == 0
    assert data["worst_error_ratio"] <= 1 and data["golden"][0]["outcome"] == "passed"
    assert (report / "junit.xml").is_file() and (report / "summary.md").is_file()
    assert "status              PASSED" in out


@pytest.mark.parametrize("name", ["channels-last", "one-pass", "bessel"])
def test_faulty_candidates_fail(verify_runs, name):
    code, out, report = verify_runs[name]
    assert code == EXIT_FAILED, out
    assert summary(report)["status"] == "failed"
    assert "Replay: numguard check --impl" in (report / "summary.md").read_text()


def test_channels_last_report_names_the_large_mean_cases(verify_runs):
    _, out, report = verify_runs["channels-last"]
    md = (report / "summary.md").read_text()
    checks = {c["id"]: c["outcome"] for c in summary(report)["checks"]}
    pinned = "tests/property/test_accuracy.py::test_pinned_case"
    # mean/std 30 is inside the realistic domain: it fails the gate
    assert checks[f"{pinned}[large-mean-30]"] == "failed"
    assert "dist=normal(mean=30,std=1)" in md
    # mean/std 1e4 is a stress case: reported in the gate tier, with its figures
    assert checks[f"{pinned}[large-mean-1e4]"] == "reported"
    assert "Stress-domain findings" in md and "dist=normal(mean=10000,std=1)" in md
    replays = (report / "failures.txt").read_text()
    assert "numguard check --impl torch-channels-last --case 'shape=2x128x64x64" in replays


def test_unavailable_aiter_exits_with_its_code_and_reason(verify_runs):
    code, out, report = verify_runs["aiter"]
    assert code == EXIT_UNAVAILABLE, out
    assert "RuntimeError: aiter stand-in: no ROCm device found" in out
    data = summary(report)
    assert data["status"] == "unavailable" and "RuntimeError" in data["reason"]


def test_junit_carries_the_metrics(verify_runs):
    _, _, report = verify_runs["torch"]
    xml = (report / "junit.xml").read_text()
    assert 'name="error_ratio"' in xml and 'name="psnr_db"' in xml


def test_unknown_candidate_is_a_usage_error(capsys):
    assert main(["verify", "--impl", "cudnn"]) == EXIT_USAGE
    assert "'cudnn' is not a known candidate" in capsys.readouterr().err


def test_bad_device_is_a_usage_error(capsys):
    assert main(["verify", "--impl", "torch", "--device", "tpu:x"]) == EXIT_USAGE


def test_missing_gpu_is_unavailable(tmp_path, capsys):
    if __import__("torch").cuda.is_available():
        pytest.skip("a GPU is present, so cuda is available here")
    code = main(["verify", "--impl", "torch", "--device", "cuda", "--report", str(tmp_path)])
    assert code == EXIT_UNAVAILABLE
    assert summary(tmp_path)["reason"].startswith("--device cuda: torch")


def test_check_replays_a_failure_line(capsys):
    case = ("shape=2x16x4x4 groups=4 dtype=float32 eps=1e-05 affine=1 "
            "layout=contiguous dist=normal(mean=10000,std=1) seed=0")
    spec = "numguard.kernels:OnePassVarianceGroupNorm"
    assert main(["check", "--impl", spec, "--case", case]) == EXIT_FAILED
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == f"Replay: numguard check --impl {spec} --case '{case}'"
    assert main(["check", "--impl", "torch", "--case", case]) == EXIT_PASSED
    assert main(["check", "--impl", "torch", "--case", "shape=2"]) == EXIT_USAGE


def test_update_golden_writes_once_and_refuses_to_overwrite(tmp_path, capsys):
    args = ["update-golden", "--resolution", "64", "--golden-dir", str(tmp_path)]
    assert main(args) == EXIT_PASSED
    written = tmp_path / "zimage-synthetic" / "cpu" / "decode-r64-float32-s0.npy"
    before = written.read_bytes()
    assert main(args) == EXIT_USAGE
    assert "already exists; pass --force" in capsys.readouterr().err
    assert written.read_bytes() == before
    assert main(args + ["--force"]) == EXIT_PASSED
