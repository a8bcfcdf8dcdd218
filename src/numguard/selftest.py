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
    """Run the catalogue; return the list of KernelVerdict, one per kernel.

    Every (kernel, seed) pair is its own pytest process, so ``workers`` spread a
    correct kernel's seeds too (torch-compile's take minutes each).
    """
    kinds = [(name, f"numguard.kernels:{name}", True) for name in FAULTY_KERNELS]
    kinds += [(name, f"numguard.kernels:{name}", False) for name in CORRECT_KERNELS]
    kinds += [(spec, spec, False) for spec in extra_correct]
    known = {k[0] for k in kinds}
    # the README's table drops the common "GroupNorm" suffix; accept both spellings
    if kernels is not None:
        kernels = [f"{k}GroupNorm" if f"{k}GroupNorm" in known else k for k in kernels]
    unknown = sorted(set(kernels or ()) - known)
    if unknown:
        raise ValueError(f"no kernel {', '.join(unknown)} in the catalogue; its kernels "
                         f"are: {', '.join(k[0] for k in kinds)}")
    kinds = [k for k in kinds if kernels is None or k[0] in kernels]
    jobs = [(name, spec, seed) for name, spec, faulty in kinds
            for seed in ([None] if faulty else range(seeds))]

    def run(job):
        name, spec, seed = job
        result = run_kernel(tests, spec, tier, seed, stop_first=True)
        log.info("%s%s: %s", name, "" if seed is None else f" seed {seed}",
                 "caught" if result[0] else "passed")
        return result

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(run, jobs))
    verdicts = {name: KernelVerdict(name, faulty, caught=False, runs=0)
                for name, _, faulty in kinds}
    for (name, _, seed), (prop, case, took) in zip(jobs, results):
        verdict = verdicts[name]
        verdict.runs += 1
        verdict.seconds += took
        if prop and not verdict.caught:  # the first seed that failed is reported
            verdict.caught, verdict.caught_by, verdict.case = True, prop, case
            if seed is not None:
                verdict.case += f" (hypothesis seed {seed})"
    return list(verdicts.values())


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
