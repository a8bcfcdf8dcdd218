"""Golden Z-Image-Turbo VAE decodes: the store, the metrics and the comparison.

A golden case is one seeded decode (model, resolution, dtype, seed). The store keeps
it under ``golden_images/<model>/<arch>/`` as

- ``<case>.npy``: the decoded image, float32, unclamped, lossless; this is what the
  comparison reads (an 8-bit PNG cannot resolve the differences that matter:
  rounding alone costs about 59 dB of PSNR, while a GroupNorm output off by 0.1%
  still scores 83 to 106 dB);
- ``<case>.png``: the same image clamped to 8 bits, for people;
- ``manifest.json``: per case the seed, resolution, dtype, weights hash, image
  checksums, versions, device and arch, and the command that made it.

Goldens are per GPU architecture and a run never reads another architecture's.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
SYNTHETIC_MODEL = "zimage-synthetic"


class GoldenError(RuntimeError):
    """A golden is missing, corrupt or does not match its manifest."""


@dataclass(frozen=True)
class GoldenCase:
    resolution: int = 256
    dtype: str = "float32"
    seed: int = 0
    model: str = SYNTHETIC_MODEL

    @property
    def name(self) -> str:
        return f"decode-r{self.resolution}-{self.dtype}-s{self.seed}"


@dataclass
class ImageMetrics:
    psnr_db: float
    ssim: float
    max_abs: float
    nan_count: int


@dataclass
class GoldenResult:
    case: GoldenCase
    arch: str
    metrics: ImageMetrics | None = None
    psnr_min: float = 0.0
    ssim_min: float = 0.0
    problem: str = ""
    images: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        m = self.metrics
        return (
            not self.problem
            and m is not None
            and m.nan_count == 0
            and m.psnr_db >= self.psnr_min
            and m.ssim >= self.ssim_min
        )

    def message(self) -> str:
        head = f"Golden decode {self.case.name} on {self.arch}"
        if self.problem:
            return f"{head}: {self.problem}"
        m = self.metrics
        verdict = "matches" if self.passed else "does not match"
        return (
            f"{head} {verdict} its golden.\n"
            f"PSNR {m.psnr_db:.2f} dB (at least {self.psnr_min:g} dB required), "
            f"SSIM {m.ssim:.7f} (at least {self.ssim_min:g}), "
            f"max pixel difference {m.max_abs:.3g} (image scale 0..1), "
            f"NaN pixels {m.nan_count}"
        )


def default_golden_root() -> Path:
    """``golden_images/`` of the checkout this package lives in, else of the cwd."""
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "golden_images"
        if candidate.is_dir():
            return candidate
    return Path.cwd() / "golden_images"


def image_metrics(golden: np.ndarray, test: np.ndarray) -> ImageMetrics:
    """PSNR and SSIM (scikit-image, data_range 1, per channel) plus max diff, NaNs.

    Identical images give PSNR = inf (skimage would divide by zero and warn).
    """
    from skimage.metrics import structural_similarity

    if golden.shape != test.shape:
        raise GoldenError(f"image shape {test.shape} differs from the golden's {golden.shape}")
    nan_count = int(np.isnan(test).sum())
    g = golden.astype(np.float64)
    t = np.nan_to_num(test.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    mse = float(np.mean((g - t) ** 2))
    psnr = math.inf if mse == 0 else 10 * math.log10(1.0 / mse)
    ssim = float(structural_similarity(g, t, data_range=1.0, channel_axis=2))
    return ImageMetrics(psnr, ssim, float(np.abs(g - t).max()), nan_count)


def to_png8(image: np.ndarray) -> np.ndarray:
    return (np.clip(np.nan_to_num(image), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def sha256_array(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def case_dir(root: Path, model: str, arch: str) -> Path:
    return Path(root) / model / arch


def read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.is_file():
        return {"format": MANIFEST_FORMAT, "cases": {}}
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise GoldenError(f"{path} is not valid JSON: {exc}") from None
    if manifest.get("format") != MANIFEST_FORMAT or "cases" not in manifest:
        raise GoldenError(f"{path} is not a numguard manifest (format {MANIFEST_FORMAT})")
    return manifest


def load_golden(root: Path, case: GoldenCase, arch: str, weights_sha256: str) -> np.ndarray:
    """Read and validate one golden image; raise GoldenError saying what is wrong."""
    folder = case_dir(root, case.model, arch)
    how = (
        f"create it with: numguard update-golden --device <device of {arch}> "
        f"--resolution {case.resolution} --dtype {case.dtype} --seed {case.seed}"
    )
    entry = read_manifest(folder)["cases"].get(case.name)
    path = folder / f"{case.name}.npy"
    if entry is None or not path.is_file():
        raise GoldenError(f"no golden {case.name} for arch {arch} in {folder}; {how}")
    try:
        image = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise GoldenError(f"{path} is unreadable ({type(exc).__name__}: {exc}); {how}") from None
    _validate(image, entry, case, path, weights_sha256)
    return image


def _validate(image, entry, case, path, weights_sha256) -> None:
    side = case.resolution
    if image.shape != (side, side, 3) or image.dtype != np.float32:
        raise GoldenError(
            f"{path} holds {image.dtype} {image.shape}, expected float32 ({side}, {side}, 3)"
        )
    if sha256_array(image) != entry.get("image_sha256"):
        raise GoldenError(
            f"{path} does not match the image_sha256 in its manifest: the file was "
            f"changed or truncated after it was recorded"
        )
    if not np.isfinite(image).all():
        raise GoldenError(f"{path} contains NaN or Inf pixels")
    if entry.get("weights_sha256") != weights_sha256:
        raise GoldenError(
            f"{path} was made with weights {entry.get('weights_sha256', '?')[:16]}, "
            f"but this run's weights hash to {weights_sha256[:16]}: the weights "
            f"changed, so a PSNR comparison would measure that, not the kernel"
        )


def write_golden(root: Path, case: GoldenCase, arch: str, image: np.ndarray,
                 meta: dict, force: bool = False) -> Path:
    """Store ``image`` as the golden of ``case``; refuses to overwrite unless forced.

    Every file is written to a temporary name and renamed into place, the manifest
    last, so an interrupted write never leaves a half-written golden behind.
    """
    from PIL import Image

    folder = case_dir(root, case.model, arch)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(folder)
    npy = folder / f"{case.name}.npy"
    if (case.name in manifest["cases"] or npy.exists()) and not force:
        raise GoldenError(f"golden {npy} already exists; pass --force to replace it")
    image = np.ascontiguousarray(image, dtype=np.float32)
    _atomic_write(npy, lambda f: np.save(f, image, allow_pickle=False))
    png = folder / f"{case.name}.png"
    _atomic_write(png, lambda f: Image.fromarray(to_png8(image)).save(f, format="PNG"))
    manifest["cases"][case.name] = {
        **meta,
        "resolution": case.resolution,
        "dtype": case.dtype,
        "seed": case.seed,
        "arch": arch,
        "image_sha256": sha256_array(image),
        "png_sha256": hashlib.sha256(png.read_bytes()).hexdigest(),
    }
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    _atomic_write(folder / MANIFEST, lambda f: f.write(text.encode()))
    return npy


def _atomic_write(path: Path, writer) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; goldens are shared files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def versions() -> dict:
    import diffusers

    return {"torch": torch.__version__, "diffusers": diffusers.__version__}


_VAE_CACHE: dict[int, tuple] = {}


def synthetic_vae(seed: int = 0):
    """A fresh copy of the synthetic VAE and its weights hash (built once per process)."""
    import copy

    from numguard import zimage

    if seed not in _VAE_CACHE:
        _VAE_CACHE[seed] = zimage.build_vae(seed)
    vae, sha = _VAE_CACHE[seed]
    return copy.deepcopy(vae), sha


def decode_with(candidate, case: GoldenCase, device: str):
    """Decode ``case`` with ``candidate`` swapped in for every GroupNorm.

    Returns ``(image, weights_sha256, swapped_count)``.
    """
    from numguard import zimage
    from numguard.cases import DTYPES
    from numguard.swap import swap_groupnorm

    vae, sha = synthetic_vae()
    vae = vae.to(device=device)
    if DTYPES[case.dtype] != torch.float32:  # diffusers warns on any dtype cast
        vae = vae.to(dtype=DTYPES[case.dtype])
    report = swap_groupnorm(vae, candidate)
    latents = zimage.seeded_latents(case.resolution, case.seed)
    image = zimage.decode(vae, latents, device, DTYPES[case.dtype])
    return image, sha, report.count


def run_golden_case(candidate, case: GoldenCase, device: str, root: Path) -> GoldenResult:
    """Decode with ``candidate`` and compare with the stored golden of this arch."""
    from numguard.device import device_arch
    from numguard.tolerance import golden_thresholds

    arch = device_arch(device)
    result = GoldenResult(case=case, arch=arch)
    try:
        result.psnr_min, result.ssim_min = golden_thresholds(arch, case.dtype)
    except KeyError as exc:
        result.problem = str(exc.args[0])
        return result
    image, sha, _ = decode_with(candidate, case, device)
    result.images["candidate"] = image
    try:
        golden = load_golden(root, case, arch, sha)
    except GoldenError as exc:
        result.problem = str(exc)
        return result
    result.images["golden"] = golden
    result.metrics = image_metrics(golden, image)
    return result
