"""CI outputs: exit codes, JUnit properties, step summary, progress, tox, workflow."""

from __future__ import annotations

import configparser
import io
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

from numguard.ci import STEP_SUMMARY_VAR, append_step_summary
from numguard.cli import EXIT_INTERNAL, main
from numguard.progress import Progress, progress_enabled

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "rocm-gate.yml"
CPU_ENVS = ("unit", "property", "golden", "verify", "bench", "golden-update")
ROCM_ENVS = ("rocm-gate", "rocm-full", "rocm-bench", "rocm-bundle",
             "rocm-golden-update")


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def junit_properties(path: Path) -> dict[str, dict[str, str]]:
    cases = ET.parse(path).getroot().iter("testcase")
    return {c.get("name"): {p.get("name"): p.get("value") for p in c.iter("property")}
            for c in cases}


def test_each_pinned_check_carries_its_error_ratio_in_junit(tmp_path):
    """The property checks run with verify's JUnit flags (xunit1 keeps properties)."""
    junit = tmp_path / "junit.xml"
    names = ["test_pinned_case[mean-0]", "test_pinned_case[fp16]",
             "test_pinned_case[rank3-attention]"]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         *(f"tests/property/test_accuracy.py::{name}" for name in names),
         f"--junitxml={junit}", "-o", "junit_family=xunit1"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cases = junit_properties(junit)
    assert set(cases) == set(names)
    for name, props in cases.items():
        assert 0 < float(props["error_ratio"]) <= 1, name


def test_verify_appends_its_markdown_summary_to_the_step_summary(tmp_path,
                                                                 monkeypatch):
    from numguard.cli import _finish
    from numguard.report import Summary

    step_summary = tmp_path / "step-summary.md"
    step_summary.write_text("earlier step\n")
    monkeypatch.setenv(STEP_SUMMARY_VAR, str(step_summary))
    summary = Summary(status="unavailable", candidate="aiter", description="aiter",
                      device="cuda", arch="unknown", device_name="none", tier="gate",
                      versions={}, reason="no ROCm device")
    _finish(summary, tmp_path / "report")
    written = (tmp_path / "report" / "summary.md").read_text()
    assert "no ROCm device" in written
    assert step_summary.read_text() == "earlier step\n" + written.rstrip() + "\n\n"


def test_step_summary_is_skipped_without_the_variable(monkeypatch):
    monkeypatch.delenv(STEP_SUMMARY_VAR, raising=False)
    assert append_step_summary("# report") is None


def test_step_summary_appends_after_what_is_there(tmp_path):
    path = tmp_path / "summary.md"
    path.write_text("first\n")
    environ = {STEP_SUMMARY_VAR: str(path)}
    assert append_step_summary("# second", environ=environ) == path
    append_step_summary("# third\n", environ=environ)
    assert path.read_text() == "first\n# second\n\n# third\n\n"


def test_an_unwritable_step_summary_warns_and_never_fails(tmp_path, caplog):
    environ = {STEP_SUMMARY_VAR: str(tmp_path / "missing-folder" / "summary.md")}
    assert append_step_summary("# report", environ=environ) is None
    assert "could not append to GITHUB_STEP_SUMMARY" in caplog.text


def test_a_crash_exits_with_the_internal_error_code(tmp_path, monkeypatch, caplog):
    def crash(*args, **kwargs):
        raise MemoryError("out of device memory")

    monkeypatch.setattr("numguard.bundle.make_bundle", crash)
    code = main(["bundle", "--impl", "torch", "--out", str(tmp_path / "b")])
    assert code == EXIT_INTERNAL
    assert "numguard bundle stopped on an internal error" in caplog.text


def test_progress_shows_on_a_terminal_outside_ci():
    assert progress_enabled(FakeTerminal(), environ={})
    assert not progress_enabled(FakeTerminal(), environ={"CI": "true"})
    assert not progress_enabled(io.StringIO(), environ={})


def test_progress_rewrites_one_line_and_clears_it():
    stream = FakeTerminal()
    with Progress(2, "bundle", stream=stream, enabled=True) as progress:
        progress.step("up1-0")
        progress.step("up1-0.stress")
    text = stream.getvalue()
    last = "[2/2] bundle: up1-0.stress"
    assert "\r[1/2] bundle: up1-0" in text and f"\r{last}" in text
    assert "\n" not in text and text.endswith("\r" + " " * len(last) + "\r")


def test_progress_is_silent_when_disabled():
    stream = FakeTerminal()
    with Progress(1, "bench", stream=stream, enabled=False) as progress:
        progress.step("1x512x32x32")
    assert stream.getvalue() == ""


def tox_config() -> configparser.ConfigParser:
    config = configparser.ConfigParser(interpolation=None)
    config.read(ROOT / "tox.ini")
    return config


def test_tox_default_run_is_the_cpu_set():
    envlist = [e.strip() for e in tox_config()["tox"]["envlist"].split(",")]
    assert envlist == ["lint", "unit", "property", "golden"]


def test_tox_cpu_envs_install_the_cpu_torch_and_rocm_envs_never_do():
    config = tox_config()
    for env in CPU_ENVS:
        deps = config.get(f"testenv:{env}", "deps", fallback=config["testenv"]["deps"])
        assert "torch==2.13.0" in deps.split(), env
    for env in ROCM_ENVS:
        section = config[f"testenv:{env}"]
        assert section["sitepackages"] == "true" and section["deps"].strip() == "", env
        assert "--device cuda" in section["commands"], env


def test_workflow_runs_the_gate_per_arch_and_uploads_the_report():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads "on" as True
    assert {"pull_request", "push"} <= set(triggers)
    job = workflow["jobs"]["gate"]
    assert job["strategy"]["matrix"]["arch"] == ["gfx942", "gfx950"]
    assert job["strategy"]["fail-fast"] is False
    assert job["runs-on"] == ["self-hosted", "${{ matrix.arch }}"]
    runs = [step.get("run", "") for step in job["steps"]]
    assert any('tox/bin/tox" -e rocm-gate' in run for run in runs)
    upload = next(s for s in job["steps"] if "upload-artifact" in s.get("uses", ""))
    assert upload["if"] == "always()" and upload["with"]["path"] == "report/"
    assert "${{ matrix.arch }}" in upload["with"]["name"]
