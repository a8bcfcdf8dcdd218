"""The Z-Image-Turbo VAE: its architecture, deterministic synthetic weights, decode.

Z-Image-Turbo's VAE is diffusers' ``AutoencoderKL`` with the FLUX.1 configuration.
Real weights are loaded only from a local folder or an offline Hugging Face cache
(``numguard.weights``); without them the embedded default is the same architecture
with synthetic weights made by ``synthetic_state_dict``, which depends on nothing
but integer arithmetic (a SplitMix64 stream per tensor), so it does not change
between library versions. Their hash is recorded in ``SYNTHETIC_WEIGHTS_SHA256``
and checked on every build: weights that regenerate differently stop the golden
comparison with ``SyntheticWeightsChanged`` instead of showing up as a PSNR drop.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import torch

log = logging.getLogger(__name__)

SCALING_FACTOR = 0.3611
SHIFT_FACTOR = 0.1159
LATENT_CHANNELS = 16
DOWNSCALE = 8

VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=LATENT_CHANNELS,
    block_out_channels=[128, 256, 512, 512],
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    layers_per_block=2,
    norm_num_groups=32,
    act_fn="silu",
    sample_size=1024,
    scaling_factor=SCALING_FACTOR,
    shift_factor=SHIFT_FACTOR,
    use_quant_conv=False,
    use_post_quant_conv=False,
    mid_block_add_attention=True,
    force_upcast=True,
)

# sha256 (``state_dict_sha256``) of the synthetic weights per weights seed, as
# generated with diffusers 0.42.1; every committed golden was made with these.
SYNTHETIC_WEIGHTS_SHA256 = {
    0: "22acddf32d568879d865a5c5641434858c512d172c253835613c192f88b2c42c",
}


class SyntheticWeightsChanged(RuntimeError):
    """The synthetic weights regenerated to a hash other than the recorded one."""


_GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def splitmix64(state: int, n: int) -> np.ndarray:
    """The first ``n`` outputs of Vigna's SplitMix64 generator seeded with ``state``."""
    with np.errstate(over="ignore"):
        z = np.uint64(state) + _GOLDEN_GAMMA * np.arange(1, n + 1, dtype=np.uint64)
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


def splitmix_uniform(key: str, seed: int, n: int) -> np.ndarray:
    """``n`` float64 values uniform in [-1, 1) from SplitMix64, keyed by name, seed."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    z = splitmix64(int.from_bytes(digest[:8], "little"), n)
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-52 - 1.0


def synthetic_value_scale(name: str, shape: tuple[int, ...]) -> tuple[float, float]:
    """(centre, half-width) of the uniform draw for parameter ``name``.

    Norm scales are 1 +- 0.25 and norm shifts +- 0.25, so every GroupNorm has a
    non-trivial per-channel affine; conv and linear weights follow PyTorch's default
    bound 1/sqrt(fan_in); the decoder's last conv is damped so images land mostly
    inside [-1, 1].
    """
    is_norm = "norm" in name.split(".")[-2] if "." in name else False
    if is_norm:
        return (1.0, 0.25) if name.endswith("weight") else (0.0, 0.25)
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else None
    if fan_in is None:  # conv/linear bias: fan_in unknown here, keep it small
        return 0.0, 0.02
    bound = 1.0 / np.sqrt(fan_in)
    if name.startswith("decoder.conv_out"):
        bound *= 0.5
    return 0.0, bound


def synthetic_state_dict(model: torch.nn.Module,
                         seed: int = 0) -> dict[str, torch.Tensor]:
    """Deterministic float32 weights for every entry of ``model.state_dict()``."""
    out = {}
    for name, ref in model.state_dict().items():
        centre, half = synthetic_value_scale(name, tuple(ref.shape))
        values = centre + half * splitmix_uniform(name, seed, ref.numel())
        out[name] = torch.from_numpy(values.astype(np.float32)).reshape(ref.shape)
    return out


def state_dict_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 over names, shapes and float32 bytes, in key order."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to("cpu", torch.float32).contiguous()
        h.update(f"{name}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def build_vae(seed: int = 0):
    """The Z-Image-Turbo VAE architecture with synthetic weights, float32, CPU, eval.

    Returns ``(vae, weights_sha256)``; raises SyntheticWeightsChanged when the
    weights do not hash to the value recorded for ``seed``.
    """
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(**VAE_CONFIG)
    state = synthetic_state_dict(vae, seed)
    sha = state_dict_sha256(state)
    check_synthetic_sha256(seed, sha)
    vae.load_state_dict(state)
    return vae.eval(), sha


def check_synthetic_sha256(seed: int, sha: str) -> None:
    """Raise SyntheticWeightsChanged unless ``sha`` is the recorded hash of ``seed``."""
    import diffusers

    recorded = SYNTHETIC_WEIGHTS_SHA256.get(seed)
    if recorded is None:
        raise SyntheticWeightsChanged(
            f"no hash is recorded for synthetic weights seed {seed} (recorded: "
            f"{sorted(SYNTHETIC_WEIGHTS_SHA256)}); add it to SYNTHETIC_WEIGHTS_SHA256 "
            f"in numguard/zimage.py before making goldens with it"
        )
    if sha != recorded:
        raise SyntheticWeightsChanged(
            f"the synthetic Z-Image-Turbo weights (seed {seed}) regenerated to sha256 "
            f"{sha[:16]}..., but {recorded[:16]}... is recorded in numguard/zimage.py "
            f"and in the goldens' manifests. The generator or the parameter layout of "
            f"diffusers {diffusers.__version__}'s AutoencoderKL changed, so a golden "
            f"comparison would measure the new weights, not the GroupNorm kernel; it "
            f"stops here. If the change is intended, record the new hash and "
            f"regenerate every golden with 'numguard update-golden --force'."
        )


def seeded_latents(resolution: int, seed: int) -> torch.Tensor:
    """(1, 16, H/8, W/8) float32 standard-normal latents drawn on the CPU."""
    if resolution % DOWNSCALE:
        raise ValueError(f"resolution {resolution} must be a multiple of {DOWNSCALE}")
    side = resolution // DOWNSCALE
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(1, LATENT_CHANNELS, side, side, generator=gen)


HALF_DTYPES = (torch.float16, torch.bfloat16)


def prepare_vae(vae, device: str, dtype: torch.dtype):
    """Move ``vae`` to ``device`` and ``dtype``; return it and how its convolutions run.

    On the CPU, half-precision convolutions are impractically slow: on an AVX2 CPU
    (no AVX512-BF16/FP16) PyTorch 2.13.0 spends 96% of a bf16 decode in
    ``aten::_slow_conv2d_forward``, 35 s at 32x32 and 103 s at 64x64 against 1.6 s
    in fp32. There every ``Conv2d`` computes in float32 on the half-precision
    values and rounds its output to ``dtype``, which is what a GPU's half-precision
    convolution does (fp32 accumulation, rounded output); everything else, the
    GroupNorm under test included, runs natively in ``dtype``. Against the fp32
    decode at 64x64 this stand-in reads 55.35 dB (bf16) and 73.52 dB (fp16) where
    the native CPU decode reads 55.28 and 73.60 dB.

    Returns ``(vae, convolutions)`` with ``convolutions`` either ``"native"`` or a
    description of the stand-in; goldens record it.
    """
    vae = torch.nn.Module.to(vae, device=device, dtype=dtype)  # diffusers' to() warns
    if torch.device(device).type != "cpu" or dtype not in HALF_DTYPES:
        return vae, "native"
    for module in vae.modules():
        if type(module) is torch.nn.Conv2d:
            _float32_convolution(module, dtype)
    return vae, f"float32 accumulation rounded to {str(dtype).removeprefix('torch.')}"


def _float32_convolution(conv: torch.nn.Conv2d, dtype: torch.dtype) -> None:
    conv.float()  # half values are exact in float32
    conv.register_forward_pre_hook(lambda module, args: (args[0].float(),))
    conv.register_forward_hook(lambda module, args, out: out.to(dtype))


def decode(vae, latents: torch.Tensor, device: str, dtype: torch.dtype) -> np.ndarray:
    """Decode as the Z-Image pipeline does; an HxWx3 float32 image in [0, 1] scale.

    The pipeline's own scaling is applied (latents / scaling + shift). The image is
    ``sample / 2 + 0.5`` without clamping, so the comparison sees every difference;
    the PNG for people is clamped and rounded separately.
    """
    z = latents / SCALING_FACTOR + SHIFT_FACTOR
    with torch.no_grad():
        sample = vae.decode(z.to(device=device, dtype=dtype)).sample
    image = sample[0].permute(1, 2, 0).to("cpu", torch.float32) / 2 + 0.5
    return image.numpy()
