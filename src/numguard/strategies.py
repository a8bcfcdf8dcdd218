"""Hypothesis strategies for GroupNorm cases: the realistic and the stress domain.

Realistic domain: what VAE decoders feed GroupNorm. Measured on the synthetic
Z-Image-Turbo decoder at 256x256 (benchmarks/groupnorm_inputs.py), groups have
|mean|/std <= 0.78, std 0.29..1.8 and |x| <= 8.8; real VAE activations are known to
run far larger (the SDXL VAE reaches ~6e4 in fp16 at its mid-block), so the domain
is wider than the synthetic measurement: |mean|/std <= 30, std 0.1..100.

Stress domain: beyond that, where kernels break: |mean|/std up to 1e4, fp16 values
from 256 to the fp16 maximum, eps from 1e-12 to 1, constant groups, heavy outliers.
"""

from __future__ import annotations

import math

from hypothesis import strategies as st

from numguard.cases import Case, Distribution, normal

GROUP_COUNTS = [1, 2, 3, 4, 5, 8, 16, 32]
REALISTIC_MEAN_OVER_STD = 30.0
REALISTIC_STD = (0.1, 100.0)


@st.composite
def shapes(draw, min_rank: int = 3, max_rank: int = 5, max_side: int = 9):
    """(shape, groups): rank 3-5, G from 1 to C, groups of at least 2 values."""
    rank = draw(st.integers(min_rank, max_rank), label="rank")
    groups = draw(st.sampled_from(GROUP_COUNTS), label="groups")
    per_group = draw(st.integers(1, 6), label="channels per group")
    batch = draw(st.integers(1, 3), label="batch")
    spatial = draw(st.lists(st.integers(1, max_side), min_size=rank - 2,
                            max_size=rank - 2), label="spatial")
    if per_group * math.prod(spatial) < 2:
        spatial[-1] = 2  # nn.GroupNorm rejects one-value groups (a bad-argument case)
    return (batch, groups * per_group, *spatial), groups


@st.composite
def realistic_cases(draw, dtypes=("float32", "float16", "bfloat16")) -> Case:
    shape, groups = draw(shapes())
    std = 10 ** draw(st.floats(math.log10(REALISTIC_STD[0]), math.log10(REALISTIC_STD[1])),
                     label="log10 std")
    ratio = draw(st.floats(-REALISTIC_MEAN_OVER_STD, REALISTIC_MEAN_OVER_STD), label="mean/std")
    return Case(
        shape=shape, groups=groups,
        dtype=draw(st.sampled_from(dtypes), label="dtype"),
        eps=draw(st.sampled_from([1e-6, 1e-5, 1e-3]), label="eps"),
        affine=draw(st.booleans(), label="affine"),
        dist=normal(_round(ratio * std), _round(std)),
        seed=draw(st.integers(0, 2**16), label="seed"),
    )


@st.composite
def stress_cases(draw) -> Case:
    shape, groups = draw(shapes())
    dtype = draw(st.sampled_from(["float32", "float16", "bfloat16"]), label="dtype")
    kind = draw(st.sampled_from(["offset", "fp16-range", "constant", "outliers"]),
                label="stress kind")
    if kind == "offset":
        ratio = draw(st.sampled_from([1e2, 1e3, 1e4, -1e4]), label="mean/std")
        std = 1.0 if dtype == "float32" else 1e-2  # keeps the mean inside fp16 range
        dist = normal(ratio * std, std)
    elif kind == "fp16-range":
        mean = draw(st.sampled_from([256.0, 4096.0, 3e4]), label="mean")
        dist = normal(mean, mean / 10)
        dtype = "float16"
    elif kind == "constant":
        value = draw(st.sampled_from([0.0, 1001.3, -3.5, 6e4]), label="value")
        dist = Distribution.parse(f"constant(value={value})")
    else:
        scale = draw(st.sampled_from([1e2, 1e3]), label="outlier scale")
        dist = Distribution.parse(f"outliers(mean=0,std=1,scale={scale:g},every=17)")
    return Case(
        shape=shape, groups=groups, dtype=dtype, dist=dist,
        eps=draw(st.sampled_from([1e-12, 1e-6, 1e-5, 1.0]), label="eps"),
        affine=draw(st.booleans(), label="affine"),
        seed=draw(st.integers(0, 2**16), label="seed"),
    )


@st.composite
def mixed_dtype_cases(draw) -> Case:
    """Parameters in another dtype than the input, with or without autocast."""
    shape, groups = draw(shapes())
    dtype, params, autocast = draw(st.sampled_from([
        ("float16", "bfloat16", ""),   # the autocast mix of a video VAE
        ("bfloat16", "float32", ""),
        ("float16", "float32", ""),
        ("float16", "float32", "float16"),
        ("bfloat16", "float32", "bfloat16"),
        ("float32", "float32", "bfloat16"),
    ]), label="input/params/autocast")
    return Case(shape=shape, groups=groups, dtype=dtype, params=params,
                autocast=autocast, affine=True,
                dist=normal(_round(draw(st.floats(-20, 20), label="mean")), 2.0),
                seed=draw(st.integers(0, 2**16), label="seed"))


def _round(v: float) -> float:
    """Three significant digits, so the replay line reproduces the exact case."""
    return float(f"{v:.3g}")
