"""Print how close correct and faulty GroupNorm kernels come to the tolerance gate.

For each kernel, the worst error/allowed ratio over a sweep of shapes, dtypes and
mean offsets (ratio <= 1 passes). Correct kernels should sit well below 1, faulty
ones well above. These figures are the measured reasons quoted in
``numguard/tolerance.py``.

    python benchmarks/calibrate_tolerance.py
"""

from __future__ import annotations

import itertools
import time

from numguard.candidates import resolve
from numguard.cases import Case, normal
from numguard.compare import run_case

CORRECT = [
    "torch-compile",
    "numguard.kernels:Float64GroupNorm",
    "numguard.kernels:TwoPassGroupNorm",
    "numguard.kernels:ChunkedWelfordGroupNorm",
]
FAULTY = [
    "torch-channels-last",
    "numguard.kernels:OnePassVarianceGroupNorm",
    "numguard.kernels:BesselVarianceGroupNorm",
]
SHAPES = [((2, 128, 64, 64), 32), ((2, 64, 4, 4), 32), ((1, 512, 32, 32), 32),
          ((3, 48, 17), 16), ((1, 64, 3, 5, 7), 8)]
MEANS = [0.0, 10.0, 100.0, 1e3, 1e4]
DTYPES = ["float32", "float16", "bfloat16"]


def sweep():
    for (shape, groups), mean, dtype in itertools.product(SHAPES, MEANS, DTYPES):
        if dtype != "float32" and mean > 1e3:
            continue  # beyond the half types' useful range for std 1
        yield Case(shape=shape, groups=groups, dtype=dtype, dist=normal(mean, 1.0))


def main() -> None:
    cases = list(sweep())
    print(f"{len(cases)} cases; worst error/allowed ratio per mean offset (std 1)")
    print(f"{'kernel':42s}" + "".join(f"{'mean=' + format(m, 'g'):>11s}" for m in MEANS))
    for spec in CORRECT + FAULTY:
        cand = resolve(spec)
        start = time.perf_counter()
        results = [run_case(cand, c) for c in cases]
        took = time.perf_counter() - start
        row = []
        for mean in MEANS:
            at_mean = [r.error_ratio for r in results if dict(r.case.dist.args)["mean"] == mean]
            row.append(f"{max(at_mean):11.3g}")
        print(f"{spec.rpartition(':')[2]:42s}" + "".join(row) + f"   {took:.1f} s")


if __name__ == "__main__":
    main()
