"""End to end: ``numguard verify`` and friends as a user runs them."""

import json
import os
import re
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
    # each golden's figures are labelled with its case
    assert re.search(r"golden PSNR / SSIM +decode-r\d+-float32-s0 (inf|[\d.]+) dB", out), out
    assert re.search(r"report: .*summary\.md, .*summary\.json, .*junit\.xml, "
                     r".*golden/index\.html$", out.rstrip()), out


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
    assert f"# {pinned}[large-mean-30] (FAILED)" in replays
    assert f"# {pinned}[large-mean-1e4] (stress finding, reported, not gating)" in replays
    # a behaviour check's replay reruns that check, not the accuracy check
    assert "--check invariance --case" in replays


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


@pytest.mark.parametrize("option, make, message", [
    ("--weights", lambda p: p / "absent", "no such folder"),
    ("--weights", lambda p: p, "holds neither vae/config.json nor config.json"),
    ("--weights", lambda p: _write(p / "vae" / "config.json", "{trunc"), "not readable JSON"),
    ("--golden-dir", lambda p: p / "absent", "no such folder"),
    ("--report", lambda p: _write(p / "afile", ""), "is a file, not a folder"),
])
def test_unusable_paths_are_usage_errors_before_anything_runs(tmp_path, capsys, option,
                                                              make, message):
    path = make(tmp_path)
    if option == "--weights" and path.name == "config.json":
        path = tmp_path
    argv = ["verify", "--impl", "torch", option, str(path)]
    if option != "--report":
        argv += ["--report", str(tmp_path / "report")]
    assert main(argv) == EXIT_USAGE
    assert message in capsys.readouterr().err
    assert not (tmp_path / "report").exists(), "refused before the run started"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


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


INVARIANCE_CASE = ("shape=1x2x1x2 groups=2 dtype=float32 eps=1e-05 affine=0 "
                   "layout=contiguous dist=normal(mean=0,std=2) seed=0")


def test_replay_line_reruns_the_check_that_failed(capsys):
    from numguard import behaviour
    from numguard.candidates import resolve
    from numguard.cases import Case

    # PyTorch's channels-last CPU kernel fails the shift by 1024 on this case (the
    # README's verify table), while the case alone, unshifted, is accurate
    case = Case.parse(INVARIANCE_CASE)
    result = behaviour.check_invariances(resolve("torch-channels-last"), case, "cpu")
    assert not result.passed
    replay = result.message().splitlines()[-1]
    assert replay == ("Replay: numguard check --impl torch-channels-last "
                      f"--check invariance --case '{INVARIANCE_CASE}'")
    argv = ["check", "--impl", "torch-channels-last", "--case", INVARIANCE_CASE]
    assert main(argv) == EXIT_PASSED
    assert main(argv + ["--check", "invariance"]) == EXIT_FAILED
    assert "input shifted by 1024" in capsys.readouterr().out
    assert main(argv + ["--check", "invariance", "--impl", "torch"]) == EXIT_PASSED


def test_replay_line_names_the_device_and_strictness():
    from numguard.behaviour import CHECKS
    from numguard.compare import Comparison
    from numguard.cases import Case

    case = Case.parse(INVARIANCE_CASE)
    line = Comparison(case=case, impl="aiter", check="batch-independence",
                      device="cuda").replay()
    assert line.startswith("numguard check --impl aiter --device cuda --check "
                           "batch-independence --case ")
    assert {"accuracy", "layout", "layout-strict", "invariance"} <= set(CHECKS)


def test_check_rejects_unknown_checks_and_impossible_cases(capsys):
    base = ["check", "--impl", "torch", "--case"]
    assert main(base + [INVARIANCE_CASE, "--check", "speed"]) == EXIT_USAGE
    assert "not one of: accuracy" in capsys.readouterr().err
    bad = INVARIANCE_CASE.replace("shape=1x2x1x2 groups=2", "shape=2x4x3x3 groups=3")
    assert main(base + [bad]) == EXIT_USAGE
    assert "3 groups do not divide 4 channels" in capsys.readouterr().err


def test_update_golden_writes_once_and_refuses_to_overwrite(tmp_path, capsys):
    args = ["update-golden", "--resolution", "64", "--golden-dir", str(tmp_path)]
    assert main(args) == EXIT_PASSED
    written = tmp_path / "zimage-synthetic" / "cpu" / "decode-r64-float32-s0.npy"
    before = written.read_bytes()
    assert main(args) == EXIT_USAGE
    assert "already exists; pass --force" in capsys.readouterr().err
    assert written.read_bytes() == before
    assert main(args + ["--force"]) == EXIT_PASSED
