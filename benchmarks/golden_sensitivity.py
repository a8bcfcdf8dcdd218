"""Print how far correct and faulty decodes land from the reference decode, in dB.

The same measurement as ``numguard calibrate`` (numguard/calibrate.py), whose
figures stand behind the golden thresholds in ``numguard/tolerance.py``: the
synthetic Z-Image-Turbo VAE decodes one seed with nn.GroupNorm (the reference),
then with correct alternatives (other GroupNorm kernels, another layout, one
thread) and with one GroupNorm's output scaled by 1 + fault, layer by layer.

    python benchmarks/golden_sensitivity.py [--resolution 256] [--dtype float32]
"""

from __future__ import annotations

import argparse

from numguard.calibrate import calibrate, render
from numguard.golden import GoldenCase


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--dtype", default="float32",
                        choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-compile", action="store_true",
                        help="leave torch-compile out (it compiles slowly)")
    args = parser.parse_args()
    case = GoldenCase(args.resolution, args.dtype, args.seed)
    print(render(calibrate(case, args.device, compile_kernel=not args.no_compile)))


if __name__ == "__main__":
    main()
