"""Print what the Z-Image-Turbo VAE decoder feeds its GroupNorms: the realistic domain.

For every GroupNorm call of one decode: the worst |mean|/std over its groups, the
range of group std, and the largest |x|. These figures bound the property suite's
realistic domain (numguard/strategies.py). Without real weights the synthetic
decoder is measured; pass --weights to measure the real one.

    python benchmarks/groupnorm_inputs.py [--resolution 256] [--weights PATH]
"""

from __future__ import annotations

import argparse

import torch

from numguard.golden import synthetic_vae
from numguard.zimage import decode, seeded_latents


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--weights", default=None, help="folder holding the VAE (vae/)")
    args = parser.parse_args()
    if args.weights:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(args.weights, subfolder="vae",
                                            local_files_only=True).eval()
    else:
        vae, _ = synthetic_vae()
    rows = []

    def hook(name):
        def record(module, inputs):
            x = inputs[0].detach().double()
            xg = x.reshape(x.shape[0], module.num_groups, -1)
            mean, std = xg.mean(-1), xg.std(-1, unbiased=False)
            rows.append((name, tuple(x.shape), float((mean.abs() / std).max()),
                         float(std.min()), float(std.max()), float(x.abs().max())))
        return record

    for name, module in vae.decoder.named_modules():
        if isinstance(module, torch.nn.GroupNorm):
            module.register_forward_pre_hook(hook(name))
    decode(vae, seeded_latents(args.resolution, 0), "cpu", torch.float32)
    print(f"{'layer':42s} {'shape':22s} {'|mean|/std':>10s} {'std min':>9s} "
          f"{'std max':>9s} {'max|x|':>9s}")
    for name, shape, ratio, smin, smax, xmax in rows:
        print(f"{name:42s} {str(shape):22s} {ratio:10.3g} {smin:9.3g} {smax:9.3g} {xmax:9.3g}")
    print(f"worst |mean|/std {max(r[2] for r in rows):.3g}; std from "
          f"{min(r[3] for r in rows):.3g} to {max(r[4] for r in rows):.3g}; "
          f"max |x| {max(r[5] for r in rows):.3g}")


if __name__ == "__main__":
    main()
