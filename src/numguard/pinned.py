"""Pinned GroupNorm cases every candidate must pass, each named for what it probes.

The expected output of every case is computed by the float64 oracle at run time;
nothing here is an expected value, only an input recipe. Field-report cases carry
their ``F-nn`` id from the research notes, restated as small inputs. Each case
belongs to the realistic or the stress domain (see ``numguard.strategies``): the
gate tier fails on realistic cases and reports stress findings; the full tier fails
on both.
"""

from __future__ import annotations

from dataclasses import dataclass

from numguard.cases import Case, Distribution, normal

_VAE_SHAPE = (2, 128, 64, 64)


@dataclass(frozen=True)
class Pinned:
    case: Case
    domain: str  # "realistic" or "stress"
    tier: str = "gate"  # "full": too large for the pre-merge gate


def _dist(text: str) -> Distribution:
    return Distribution.parse(text)


def _cases() -> dict[str, Pinned]:
    R, S = "realistic", "stress"
    return {
        # one VAE-sized shape at rising mean/std: 0, 30 (realistic edge), 1e2, 1e4
        "mean-0": Pinned(Case(_VAE_SHAPE, 32, dist=normal(0.0, 1.0)), R),
        "large-mean-30": Pinned(Case(_VAE_SHAPE, 32, dist=normal(30.0, 1.0)), R),
        "large-mean-1e2": Pinned(Case(_VAE_SHAPE, 32, dist=normal(100.0, 1.0)), S),
        "large-mean-1e4": Pinned(Case(_VAE_SHAPE, 32, dist=normal(1e4, 1.0)), S),
        # var = 0: rstd = 1/sqrt(eps) amplifies the rounding of the mean
        "constant-group-1001.3": Pinned(
            Case((1, 32, 4, 4), 32, affine=False, dist=_dist("constant(value=1001.3)")), S),
        "F-01-tiny-groups-offset": Pinned(
            Case((2, 8, 2, 2), 8, affine=False, dist=normal(2000, 1)), S),
        "F-02-rank5-huge-groups": Pinned(
            Case((1, 32, 256, 256, 72), 4, dist=_dist("uniform(low=0,high=1)")), R, "full"),
        "F-03-channels-last": Pinned(Case((4, 32, 24, 24), 8, layout="channels_last"), R),
        "F-04-bf16": Pinned(Case((1, 64, 128, 128), 32, dtype="bfloat16"), R),
        "F-05-half-statistics": Pinned(
            Case((2, 64, 32, 32), 32, dtype="float16", dist=normal(20.0, 1.0)), R),
        "F-08-fp16-input-bf16-params": Pinned(
            Case((1, 128, 4, 32, 32), 32, dtype="float16", params="bfloat16"), R),
        "F-08-autocast-fp16-fp32-params": Pinned(
            Case((1, 128, 4, 32, 32), 32, dtype="float16", params="float32",
                 autocast="float16"), R),
        "F-11-fp16-near-max": Pinned(
            Case((1, 512, 32, 32), 32, dtype="float16", dist=normal(3e4, 4e3)), S),  # max ~5.4e4 < 65504
        "F-15-three-channels-per-group": Pinned(Case((1, 48, 32, 32), 16), R),
        "F-17-fp16-range-tiny-eps": Pinned(
            Case((1, 64, 16, 16), 32, dtype="float16", eps=1e-12,
                 dist=_dist("uniform(low=60000,high=65000)")), S),
        "F-18-fp16-squares": Pinned(
            Case((1, 64, 16, 16), 32, dtype="float16",
                 dist=_dist("uniform(low=256,high=65000)")), S),
        "F-19-odd-spatial": Pinned(Case((1, 256, 129, 129), 32), R),
        "rank3-attention": Pinned(Case((1, 512, 1024), 32, dist=normal(3.0, 2.0)), R),
        "rank5-video": Pinned(Case((1, 64, 3, 8, 8), 32, dist=normal(-5.0, 0.5)), R),
        "fp16": Pinned(Case((2, 128, 16, 16), 32, dtype="float16", dist=normal(10.0, 3.0)), R),
        "batch-of-4": Pinned(Case((4, 64, 8, 8), 16, dist=normal(2.0, 1.5)), R),
    }


PINNED: dict[str, Pinned] = _cases()


def zimage_decoder_cases(resolution: int = 1024) -> dict[str, Case]:
    """The 30 GroupNorm calls of the Z-Image-Turbo decoder at ``resolution``, batch 1.

    Shapes follow the diffusers Decoder (eps 1e-6, 32 groups): 4 mid-block resnet
    norms and the attention norm (rank 3) at 512 channels and latent size; 6 per
    up block, at 512, 512, 512->256 and 256->128 channels as the block upsamples;
    conv_norm_out last.
    """
    s = resolution // 8
    plan = [("mid.resnet", 512, s, 4), ("mid.attention", 512, s, 1),
            ("up0", 512, s, 6), ("up1", 512, 2 * s, 6),
            ("up2.norm1-0", 512, 4 * s, 1), ("up2", 256, 4 * s, 5),
            ("up3.norm1-0", 256, 8 * s, 1), ("up3", 128, 8 * s, 5),
            ("conv_norm_out", 128, 8 * s, 1)]
    cases = {}
    for name, C, side, count in plan:
        shape = (1, C, side * side) if name == "mid.attention" else (1, C, side, side)
        for i in range(count):
            # the seed varies so repeated shapes still see different values
            cases[f"{name}-{i}"] = Case(shape, 32, eps=1e-6, seed=len(cases),
                                        dist=normal(0.5, 1.0))
    return cases
