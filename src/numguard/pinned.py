"""Pinned GroupNorm cases every candidate must pass, each named for what it probes.

The expected output of every case is computed by the float64 oracle at run time;
nothing here is an expected value, only an input recipe. Field-report cases carry
their ``F-nn`` id from the research notes, restated as small inputs.
"""

from __future__ import annotations

from numguard.cases import Case, Distribution, normal

_VAE_SHAPE = (2, 128, 64, 64)


def _named() -> dict[str, Case]:
    const = Distribution.parse("constant(value=1001.3)")
    return {
        # one shape, rising mean at std 1: conditioning mean/std = 0, 1e2, 1e4
        "mean-0": Case(_VAE_SHAPE, 32, dist=normal(0.0, 1.0)),
        "large-mean-1e2": Case(_VAE_SHAPE, 32, dist=normal(100.0, 1.0)),
        "large-mean-1e4": Case(_VAE_SHAPE, 32, dist=normal(1e4, 1.0)),
        # a constant group: var = 0, so rstd = 1/sqrt(eps) amplifies mean rounding
        "constant-group-1001.3": Case((1, 32, 4, 4), 32, affine=False, dist=const),
        # F-01: tiny groups of 4 values around 2000
        "F-01-tiny-groups-offset": Case((2, 8, 2, 2), 8, affine=False, dist=normal(2000, 1)),
        # F-03: channels_last memory format
        "F-03-channels-last": Case((4, 32, 24, 24), 8, layout="channels_last"),
        # F-04: bf16 input, 32 groups
        "F-04-bf16": Case((1, 64, 128, 128), 32, dtype="bfloat16"),
        # F-15: 3 channels per group (not a power of 2)
        "F-15-three-channels-per-group": Case((1, 48, 32, 32), 16),
        # F-19: H*W not a multiple of 4 with per-channel weight and bias
        "F-19-odd-spatial": Case((1, 256, 33, 33), 32),
        # rank 3 and rank 5 (the attention norm and video VAEs)
        "rank3-attention": Case((1, 512, 1024), 32, dist=normal(3.0, 2.0)),
        "rank5-video": Case((1, 64, 3, 8, 8), 32, dist=normal(-5.0, 0.5)),
        "fp16": Case((2, 128, 16, 16), 32, dtype="float16", dist=normal(10.0, 3.0)),
    }


PINNED: dict[str, Case] = _named()
