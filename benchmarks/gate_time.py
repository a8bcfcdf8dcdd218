"""Print how long the gate tier's property checks take for a candidate.

The gate tier is meant to stay within 60 s on a 2-core CPU machine; this prints the
figure instead of asserting it (a timed test would flake with machine load).

    python benchmarks/gate_time.py [--impl torch] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", default="torch")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "tests" / "property"), "-q",
           "-p", "no:cacheprovider", "--tier=gate", f"--impl={args.impl}"]
    times = []
    for i in range(args.repeat):
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "?"
        print(f"run {i + 1}: {times[-1]:.1f} s  ({last})")
    print(f"gate tier property checks for {args.impl}: median {statistics.median(times):.1f} s, "
          f"min {min(times):.1f} s over {args.repeat} runs")


if __name__ == "__main__":
    main()
