"""Print how far correct and faulty decodes land from the reference decode, in dB.

The figures behind the golden thresholds in ``numguard/tolerance.py``: the synthetic
Z-Image-Turbo VAE decodes seed 0 at 256x256 in fp32 with nn.GroupNorm (reference),
then with correct alternatives (other GroupNorm kernels, another layout, one
thread) and with one GroupNorm's output scaled by 1.001 (a fault the gate must
catch).

    python benchmarks/golden_sensitivity.py [--resolution 256]
"""

from __future__ import annotations

import argparse
import copy

import torch

from numguard.candidates import resolve
from numguard.golden import image_metrics, synthetic_vae
from numguard.swap import swap_groupnorm
from numguard.zimage import decode, seeded_latents

ALTERNATIVES = [
    "torch-channels-last",
    "torch-compile",
    "numguard.kernels:Float64GroupNorm",
    "numguard.kernels:TwoPassGroupNorm",
]


def report(label: str, reference, image) -> None:
    m = image_metrics(reference, image)
    print(f"{label:55s} PSNR {m.psnr_db:7.2f} dB  SSIM {m.ssim:.7f}  max {m.max_abs:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=256)
    args = parser.parse_args()
    vae, _ = synthetic_vae()
    z = seeded_latents(args.resolution, 0)
    reference = decode(vae, z, "cpu", torch.float32)
    print("correct alternatives")
    for spec in ALTERNATIVES:
        swapped = copy.deepcopy(vae)
        swap_groupnorm(swapped, resolve(spec))
        report(spec, reference, decode(swapped, z, "cpu", torch.float32))
    report("channels_last model", reference,
           decode(copy.deepcopy(vae).to(memory_format=torch.channels_last), z, "cpu",
                  torch.float32))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        report("one thread", reference, decode(vae, z, "cpu", torch.float32))
    finally:
        torch.set_num_threads(threads)
    print("faults: one GroupNorm output scaled by 1.001")
    for name, module in vae.decoder.named_modules():
        if isinstance(module, torch.nn.GroupNorm):
            handle = module.register_forward_hook(lambda mod, inp, out: out * 1.001)
            report(f"decoder.{name}", reference, decode(vae, z, "cpu", torch.float32))
            handle.remove()


if __name__ == "__main__":
    main()
