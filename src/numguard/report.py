"""Collect check results from a pytest run and write the verify report folder.

The folder holds ``summary.json`` (machine-readable, fixed status vocabulary,
relative artifact paths), ``summary.md`` (for people and CI step summaries) and
``junit.xml`` (written by pytest itself). The summary is written on every outcome,
a failed or unavailable run included.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

# the only statuses a summary may carry
STATUSES = ("passed", "failed", "unavailable", "error")


@dataclass
class CheckResult:
    id: str
    outcome: str  # passed | failed | skipped | reported | error
    duration_s: float = 0.0
    message: str = ""
    metrics: dict = field(default_factory=dict)


class ResultCollector:
    """pytest plugin object that records one CheckResult per test."""

    def __init__(self) -> None:
        self.results: dict[str, CheckResult] = {}

    def pytest_runtest_logreport(self, report) -> None:
        # setup, call and teardown each report; the first skip or failure decides
        result = self.results.setdefault(report.nodeid, CheckResult(report.nodeid, "passed"))
        result.duration_s = round(result.duration_s + report.duration, 3)
        result.metrics.update(dict(report.user_properties))
        if result.outcome != "passed":
            return
        if report.skipped and hasattr(report, "wasxfail"):
            # a stress-domain finding in a tier that reports rather than fails
            result.outcome = "reported"
            result.message = report.wasxfail + "\n" + _crash_text(report)
        elif report.skipped:
            result.outcome, result.message = "skipped", _message(report)
        elif report.failed:
            result.outcome = "failed" if report.when == "call" else "error"
            result.message = _message(report)

    def pytest_collectreport(self, report) -> None:
        if report.failed:
            self.results[report.nodeid or "collection"] = CheckResult(
                id=report.nodeid or "collection", outcome="error", message=_message(report)
            )


def _crash_text(report) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    return crash.message if crash is not None else ""


def _message(report) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    if not report.failed:
        return ""
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return crash.message
    return str(report.longrepr)


@dataclass
class Summary:
    status: str
    candidate: str
    description: str
    device: str
    arch: str
    device_name: str
    tier: str
    versions: dict
    note: str = ""
    reason: str = ""
    counts: dict = field(default_factory=dict)
    worst_error_ratio: float | None = None
    golden: list = field(default_factory=list)
    checks: list = field(default_factory=list)
    artifacts: dict = field(default_factory=dict)

    def fill(self, results: list[CheckResult]) -> None:
        self.checks = [asdict(r) for r in results]
        self.counts = {k: sum(r.outcome == k for r in results)
                       for k in ("passed", "failed", "skipped", "reported", "error")}
        ratios = [r.metrics["error_ratio"] for r in results if "error_ratio" in r.metrics]
        self.worst_error_ratio = max(ratios) if ratios else None
        self.golden = [
            {"id": r.id, "outcome": r.outcome, "psnr_db": r.metrics.get("psnr_db"),
             "ssim": r.metrics.get("ssim")}
            for r in results if "psnr_db" in r.metrics or "golden" in r.id
        ]
        if self.counts["error"]:
            self.status = "error"
        elif self.counts["failed"] or not self.counts["passed"]:
            self.status = "failed"
        else:
            self.status = "passed"


def write_summary(summary: Summary, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    assert summary.status in STATUSES, summary.status
    summary.artifacts.setdefault("markdown", "summary.md")
    data = json.loads(json.dumps(asdict(summary), default=_json_default))
    (folder / "summary.json").write_text(json.dumps(_finite(data), indent=2) + "\n")
    (folder / "summary.md").write_text(render_markdown(summary))


def _json_default(value):
    return str(value)


def _finite(value):
    """JSON has no inf; write it as the string "inf" (PSNR of identical images)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def fmt_ratio(value) -> str:
    return "-" if value is None else f"{value:.3g}"


def fmt_psnr(golden: list) -> str:
    vals = [g for g in golden if g.get("psnr_db") is not None]
    if not vals:
        return "-"
    return ", ".join(f"{_golden_label(g['id'])} {g['psnr_db']:.1f} dB / {g['ssim']:.6f}"
                     for g in vals)


def _golden_label(test_id: str) -> str:
    """``decode-r256-float32-s0`` out of a golden test's id, which names the case."""
    m = re.search(r"(decode|pipeline)-r\d+-\w+?-s\d+", test_id)
    return m.group(0) if m else test_id


def table_rows(summary: Summary) -> list[tuple[str, str]]:
    c = summary.counts
    return [
        ("candidate", f"{summary.candidate} ({summary.description})"),
        ("device", f"{summary.device} ({summary.device_name}), arch {summary.arch}"),
        ("tier", summary.tier),
        ("checks", f"{c.get('passed', 0)} passed, {c.get('failed', 0)} failed, "
                   f"{c.get('skipped', 0)} skipped, {c.get('reported', 0)} stress findings "
                   f"reported, {c.get('error', 0)} errors"),
        ("worst error ratio", f"{fmt_ratio(summary.worst_error_ratio)} (<= 1 passes)"),
        ("golden PSNR / SSIM", fmt_psnr(summary.golden)),
        ("status", summary.status.upper()),
    ]


def render_markdown(summary: Summary) -> str:
    lines = ["# numguard verify", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in table_rows(summary)]
    if summary.reason:
        label = "Unavailable" if summary.status == "unavailable" else "Stopped"
        lines += ["", f"**{label}:** {summary.reason}"]
    if summary.note:
        lines += ["", f"Note: {summary.note}"]
    failed = [c for c in summary.checks if c["outcome"] in ("failed", "error")]
    if failed:
        lines += ["", "## Failed checks", ""]
        for c in failed:
            lines += [f"### `{c['id']}`", "", "```", c["message"].strip(), "```", ""]
    reported = [c for c in summary.checks if c["outcome"] == "reported"]
    if reported:
        lines += ["", "## Stress-domain findings (reported, not gating in this tier)", ""]
        for c in reported:
            lines += [f"### `{c['id']}`", "", "```", c["message"].strip(), "```", ""]
    skipped = [c for c in summary.checks if c["outcome"] == "skipped"]
    if skipped:
        lines += ["", "## Skipped checks", ""]
        lines += [f"- `{c['id']}`: {c['message']}" for c in skipped]
    return "\n".join(lines) + "\n"
