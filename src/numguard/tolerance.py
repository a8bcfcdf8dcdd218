"""The one tolerance policy of numguard.

A candidate GroupNorm passes an element when its error against the float64 oracle
is within

    allowed_i = K_TORCH * torch_err[n, g] + floor_i

where ``torch_err[n, g]`` is the worst error of ``nn.GroupNorm`` itself in the same
situation (dtype, device, memory layout, parameter dtype, autocast) against the
oracle inside the element's group, and ``floor_i`` is a
rounding floor that scales with how well-conditioned the element is:

    floor_i = C_STAT * u_acc * (|x_i| + |mean|) * rstd * |w_c|
            + C_OUT  * u_out * (|y_i| + |b_c|)

The first term is what an fp32 statistics pass may legitimately lose: the mean of a
group is only known to about ``u_acc * |mean|``, and the kernel multiplies that by
``rstd``. On a constant group of 1001.3 with eps 1e-5 this allows about 0.15, since
one ulp of the mean (6e-5) times rstd (316) is already 2e-2; a correct fp32 kernel
really does differ from nn.GroupNorm by about 1e-2 there. The second term is the
rounding of the output itself in the output dtype (and of the affine step).

The ratio form follows FlashAttention's test gate (error <= 2x the error of the
plain framework implementation + a rounding floor); the floor makes it safe when
nn.GroupNorm happens to be exact.

Every constant below was measured by ``benchmarks/calibrate_tolerance.py`` with
PyTorch 2.13.0 on the CPU; the numbers are quoted beside each constant.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Measured by benchmarks/calibrate_tolerance.py (65 cases: 5 shapes, fp32/fp16/bf16,
# mean offsets 0..1e4 at std 1), worst error/allowed ratio with the constants below:
#   correct kernels   torch-compile 0.37, chunked Welford (tree merge) 0.20,
#                     two-pass fp32 0.20, float64-cast-back 0.17  (all must stay < 1)
#   faulty kernels    one-pass variance 2.96 at mean 10, 25 at mean 100;
#                     Bessel variance 2.6 at mean 1e4, 1.3e4 at mean 0;
#                     channels_last CPU path 34 at mean 10, 7e5 at mean 1e3
# so the correct kernels keep a margin of 2.7x and every fault is caught by 2.6x or
# more somewhere in the sweep.

# Candidate error may be up to twice nn.GroupNorm's own error in the same group:
# FlashAttention's factor, so a kernel must be about as good as PyTorch's.
K_TORCH = 2.0

# Multiplier of the statistics term, in units of u_acc * (|x| + |mean|) * rstd * |w|.
# 16 keeps the correct kernels at or below 0.37 of the allowance while one-pass
# variance at mean 10 still exceeds it 2.96x. With 8, a Welford kernel that merges
# its chunks sequentially (error growing with group size) reached 0.82.
C_STAT = 16.0

# Multiplier of the output-rounding term, in units of u_out * (|y| + |b|): two ulps
# of the output (half an ulp per rounding, and the normalise and affine steps add
# up to three more roundings in fp32). At mean 0, where this term dominates, the
# worst correct kernel (torch-compile) reaches 0.27.
C_OUT = 4.0

_UNIT_ROUNDOFF = {
    torch.float64: 2.0**-53,
    torch.float32: 2.0**-24,
    torch.float16: 2.0**-11,
    torch.bfloat16: 2.0**-8,
}


@dataclass(frozen=True)
class DtypeTolerance:
    """Unit roundoffs that apply to one input/output dtype."""

    u_acc: float  # accumulation precision a correct kernel uses for the statistics
    u_out: float  # rounding of the output dtype


def dtype_tolerance(dtype: torch.dtype) -> DtypeTolerance:
    """Look up the roundoffs for ``dtype``; half types accumulate in fp32."""
    if dtype not in _UNIT_ROUNDOFF:
        supported = ", ".join(str(d) for d in _UNIT_ROUNDOFF)
        raise ValueError(f"dtype {dtype} has no tolerance entry; supported: {supported}")
    u_acc = _UNIT_ROUNDOFF[torch.float64 if dtype == torch.float64 else torch.float32]
    return DtypeTolerance(u_acc=u_acc, u_out=_UNIT_ROUNDOFF[dtype])


def rounding_floor(
    x: torch.Tensor,
    y: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Per-element rounding floor (float64, shape of ``x``); see the module doc.

    ``x`` and ``y`` are float64 CPU tensors (input values and oracle output),
    ``mean`` and ``rstd`` the oracle's (N, G) statistics.
    """
    tol = dtype_tolerance(dtype)
    N, C = x.shape[:2]
    G = mean.shape[1]
    per_channel = (1, C) + (1,) * (x.dim() - 2)
    xg = x.reshape(N, G, -1).abs()
    conditioning = ((xg + mean.abs().unsqueeze(-1)) * rstd.unsqueeze(-1)).reshape(
        x.shape
    )
    w = _abs_param(weight, C, 1.0).reshape(per_channel)
    b = _abs_param(bias, C, 0.0).reshape(per_channel)
    stat_term = C_STAT * tol.u_acc * conditioning * w
    out_term = C_OUT * tol.u_out * (y.abs() + b)
    return stat_term + out_term


def _abs_param(p: torch.Tensor | None, C: int, default: float) -> torch.Tensor:
    if p is None:
        return torch.full((C,), default, dtype=torch.float64)
    return p.detach().to("cpu", torch.float64).abs()


# Golden decode thresholds, keyed by (arch, dtype). Each case is compared twice:
# with its stored golden (the kernel's effect plus drift across torch/diffusers
# versions and machines of one arch) and with a live nn.GroupNorm decode on the same
# device in the same process (the kernel alone). PSNR is on the unclamped decode in
# image scale (0..1), so data_range is 1. Every entry comes from ``numguard
# calibrate`` (numguard/calibrate.py): the live floor is the lowest PSNR of correct
# GroupNorm kernels against nn.GroupNorm, the golden floor also counts correct
# environments (a channels_last model, so other convolution kernels; one thread);
# live thresholds sit 6 dB under their floor, golden thresholds 10 dB, since a
# golden made elsewhere differs by more than one machine shows. In fp32 both must
# fail every decode where one decoder GroupNorm's output is scaled by 1.001.
#
# cpu: synthetic Z-Image-Turbo VAE, 256x256, seed 0, PyTorch 2.13.0, diffusers
# 0.42.1, AMD EPYC (AVX2), 2 threads; half precision with the CPU's float32
# convolution stand-in (numguard.zimage.prepare_vae). PSNR against nn.GroupNorm:
#
#   dtype  4 kernels      channels_last  one      one output     least visible layer
#                         model          thread   x (1 + f)      caught (live/golden)
#   fp32   124.51-128.12  124.46         133.87   78.61-106.19   f=5e-4 / 5e-4
#   fp16    74.09-74.15    74.08          78.71   73.44-84.63    f=0.05 / 0.1
#   bf16    56.03-56.08    56.02          61.27   55.23-66.21    f=0.5 / 1.0
#
# (f = 1e-3 in the fault column, 1e-2 in bf16.)
#
# In half precision any change of rounding anywhere in the decoder (a correct
# kernel's included) carries the decode to the same distance from the reference,
# the dtype's own noise (the fp32 decode is 73.8 dB from fp16's, 55.7 dB from
# bf16's), so these comparisons catch gross errors only; the property tier judges
# half-precision kernels element by element. In bf16 an output scaled by 1.001 is
# the very same tensor (bf16 values are at least 2**-8 apart, relatively).
# SSIM reads 1.0000000 for every fp32 decode above and 0.9999994 or more for the
# faults, so it is a sanity bound: 1 - SSIM of the floor times the margin's factor,
# never above 1 - 1e-4.
GOLDEN_THRESHOLDS_VERSION = 2


@dataclass(frozen=True)
class ImageThreshold:
    """Minimum PSNR (dB) and SSIM for one comparison, and the measurement behind it."""

    psnr_db: float
    ssim: float
    reason: str


@dataclass(frozen=True)
class GoldenThresholds:
    golden: ImageThreshold  # candidate vs the stored golden
    live: ImageThreshold  # candidate vs the live nn.GroupNorm decode


GOLDEN_THRESHOLDS = {
    ("cpu", "float32"): GoldenThresholds(
        golden=ImageThreshold(114.0, 0.9999, "floor 124.46 dB (channels_last model) "
                              "- 10 dB; one output x 1.001: 78.6-106.2 dB"),
        live=ImageThreshold(118.0, 0.9999, "floor 124.51 dB (channels_last GroupNorm) "
                            "- 6 dB; one output x 1.001: 78.6-106.2 dB"),
    ),
    ("cpu", "float16"): GoldenThresholds(
        golden=ImageThreshold(64.0, 0.9999, "floor 74.08 dB (channels_last model) "
                              "- 10 dB; least visible layer x 1.1: 58.9 dB"),
        live=ImageThreshold(68.0, 0.9999, "floor 74.09 dB (channels_last GroupNorm) "
                            "- 6 dB; least visible layer x 1.05: 64.5 dB"),
    ),
    ("cpu", "bfloat16"): GoldenThresholds(
        golden=ImageThreshold(46.0, 0.997166, "floor 56.02 dB (channels_last model) "
                              "- 10 dB; least visible layer x 2: 43.4 dB"),
        live=ImageThreshold(50.0, 0.998874, "floor 56.03 dB (channels_last GroupNorm) "
                            "- 6 dB; least visible layer x 1.5: 47.1 dB"),
    ),
}


def golden_thresholds(arch: str, dtype: str) -> GoldenThresholds:
    """Both comparisons' thresholds for a golden decode; no entry is an error."""
    try:
        return GOLDEN_THRESHOLDS[(arch, dtype)]
    except KeyError:
        known = ", ".join(f"{a}/{d}" for a, d in GOLDEN_THRESHOLDS)
        raise KeyError(
            f"no golden thresholds for arch {arch!r} and dtype {dtype!r} (known: "
            f"{known}); measure them on a {arch} machine with 'numguard calibrate "
            f"--device DEVICE --dtype {dtype}' and add the entry it proposes to "
            f"numguard/tolerance.py"
        ) from None
