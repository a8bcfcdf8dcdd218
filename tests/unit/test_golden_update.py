"""Making goldens: only from the torch baseline, only when asked, then they pass.

These run the golden tier in a subprocess the way a user does, on the gate case
zimage-synthetic-decode-r256-float32-s0 and a temporary golden store.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from numguard import golden
from numguard.cli import EXIT_USAGE, main
from numguard.golden import GoldenCase, load_golden

ROOT = Path(__file__).resolve().parents[2]
CASE = GoldenCase(256, "float32", 0)


def golden_tier(*args):
    env = dict(os.environ, COLUMNS="400")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "tests/golden", "-p", "no:cacheprovider", "-q",
         "-rs", "-k", CASE.id, *args],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)


def test_update_golden_refuses_any_candidate_but_the_baseline(tmp_path):
    run = golden_tier("--update-golden", "--impl", "torch-channels-last",
                      f"--golden-dir={tmp_path}")
    assert run.returncode == pytest.ExitCode.USAGE_ERROR, run.stdout + run.stderr
    assert ("--update-golden writes goldens from the torch baseline only, and this run "
            "has --impl torch-channels-last") in run.stdout + run.stderr
    assert not any(tmp_path.iterdir())


def test_a_missing_golden_is_written_on_request_and_then_passes(tmp_path):
    store, report = tmp_path / "goldens", tmp_path / "report"
    first = golden_tier("--update-golden", f"--golden-dir={store}")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "1 skipped" in first.stdout
    assert re.search(r"--update-golden wrote \S+decode-r256-float32-s0.npy "
                     r"\(was: no golden", first.stdout)
    written = load_golden(store, CASE, "cpu", golden.synthetic_vae()[1])
    assert np.array_equal(written, golden.baseline_decode(CASE, "cpu").image)

    second = golden_tier(f"--golden-dir={store}", f"--golden-report={report}")
    assert second.returncode == 0 and "1 passed" in second.stdout, second.stdout
    page = (report / f"{CASE.id}.html").read_text()
    for kind in ("golden", "candidate", "diff", "live-diff"):
        assert f'src="{CASE.id}-{kind}.png"' in page
        assert (report / f"{CASE.id}-{kind}.png").is_file()
    assert CASE.id in (report / "index.html").read_text()


def test_update_golden_of_real_weights_needs_them(tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    args = ["update-golden", "--model", "zimage-turbo-vae",
            "--golden-dir", str(tmp_path)]
    assert main(args) == EXIT_USAGE
    assert "zimage-turbo-vae needs the real weights: pass --weights PATH" in (
        capsys.readouterr().err)
