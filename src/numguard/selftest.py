"""``numguard selftest``: prove the property tiers can fail, and do not cry wolf.

Every faulty kernel of ``numguard.kernels`` must be caught (some property fails);
every correct kernel must pass under several hypothesis seeds. Each kernel runs in
its own pytest process over ``tests/property`` so no state leaks between kernels.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from numguard.kernels import CORRECT_KERNELS, FAULTY_KERNELS

log = logging.getLogger(__name__)


@dataclass
class KernelVerdict:
    kernel: str
    faulty: bool
    caught: bool  # for a correct kernel: flagged (a false alarm)
    caught_by: str = ""
    case: str = ""
    seconds: float = 0.0
    runs: int = 1

    @property
    def ok(self) -> bool:
        return self.caught == self.faulty


def run_kernel(tests: Path, spec: str, tier: str, seed: int | None, stop_first: bool):
    """One pytest process over tests/property; returns (first failure, case, seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", str(tests / "property"), "-q",
               "-p", "no:cacheprovider", f"--impl={spec}", f"--tier={tier}",
               f"--rootdir={tests.parent}", f"--junitxml={junit}"]
        if stop_first:
            cmd.append("-x")
        if seed is not None:
            cmd += ["--hypothesis-profile=seeded", f"--hypothesis-seed={seed}"]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tests.parent, capture_output=True, text=True,
                              env=dict(os.environ, PYTHONHASHSEED="0"))
        took = time.perf_counter() - start
        if proc.returncode not in (0, 1) or not junit.is_file():
            # collection or internal errors say nothing about the kernel
            raise RuntimeError(
                f"pytest could not run the checks for {spec} (exit {proc.returncode}):\n"
                f"{proc.stdout[-2000:]}"
            )
        return (*_first_failure(junit), took)


def _first_failure(junit: Path) -> tuple[str, str]:
    for case in ET.parse(junit).getroot().iter("testcase"):
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        if failure is not None:
            text = (failure.get("message") or "") + "\n" + (failure.text or "")
            line = next((ln.split("Case: ", 1)[1] for ln in text.splitlines()
                         if "Case: " in ln), text.strip().splitlines()[0][:160])
            return case.get("name", "?"), line.strip()
    return "", ""


def selftest(tests: Path, tier: str = "gate", seeds: int = 10, workers: int = 2,
             kernels: list[str] | None = None, extra_correct=("torch-compile",)):
    """Run the catalogue; return the list of KernelVerdict."""
    jobs = []
    for name in FAULTY_KERNELS:
        if kernels is None or name in kernels:
            jobs.append((name, f"numguard.kernels:{name}", True, [None]))
    correct = [(n, f"numguard.kernels:{n}") for n in CORRECT_KERNELS]
    correct += [(spec, spec) for spec in extra_correct]
    for name, spec in correct:
        if kernels is None or name in kernels:
            jobs.append((name, spec, False, list(range(seeds))))

    def run(job):
        name, spec, faulty, seed_list = job
        verdict = KernelVerdict(name, faulty, caught=False, runs=len(seed_list))
        for seed in seed_list:
            prop, case, took = run_kernel(tests, spec, tier, seed, stop_first=True)
            verdict.seconds += took
            if prop:
                verdict.caught, verdict.caught_by, verdict.case = True, prop, case
                if seed is not None:
                    verdict.case += f" (hypothesis seed {seed})"
                break
        log.info("%s: %s", name, "caught" if verdict.caught else "passed")
        return verdict

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(run, jobs))


def render_table(verdicts: list[KernelVerdict], tier: str) -> str:
    lines = [f"numguard selftest, {tier} tier",
             "| kernel | kind | verdict | caught by | minimal input | seconds |",
             "|---|---|---|---|---|---|"]
    for v in verdicts:
        kind = "faulty" if v.faulty else f"correct ({v.runs} seeds)"
        if v.faulty:
            verdict = "caught" if v.caught else "MISSED"
        else:
            verdict = "FALSE ALARM" if v.caught else "passed"
        lines.append(f"| {v.kernel} | {kind} | {verdict} | {v.caught_by or '-'} | "
                     f"{v.case or '-'} | {v.seconds:.1f} |")
    faulty = [v for v in verdicts if v.faulty]
    caught = sum(v.caught for v in faulty)
    alarms = sum(v.caught for v in verdicts if not v.faulty)
    lines.append("")
    lines.append(f"faulty kernels caught: {caught}/{len(faulty)}; "
                 f"false alarms on correct kernels: {alarms}")
    return "\n".join(lines)
