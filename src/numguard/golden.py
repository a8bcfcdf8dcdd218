"""Golden Z-Image-Turbo decodes: the store, the metrics and the two comparisons.

A golden case is one seeded decode (model, resolution, dtype, seed). Models:

- ``zimage-synthetic``: the Z-Image-Turbo VAE with deterministic synthetic weights;
- ``zimage-turbo-vae``: the same VAE with the real weights (``numguard.weights``);
- ``zimage-turbo-pipeline``: diffusers' ``ZImagePipeline`` end to end, whose VAE
  decodes the latents the transformer made.

Every case is judged twice, with thresholds per (arch, dtype) from
``numguard.tolerance.GOLDEN_THRESHOLDS``:

- against the stored golden (drift across versions and machines, plus the kernel);
- against a live decode with ``nn.GroupNorm`` on the same device in the same
  process (the kernel alone). That decode is made once per process and case.

The store keeps a golden under ``golden_images/<model>/<arch>/`` as

- ``<case>.npy``: the decoded image, float32, unclamped, lossless; this is what the
  comparison reads (an 8-bit PNG cannot resolve the differences that matter:
  rounding alone costs about 59 dB of PSNR, while a GroupNorm output off by 0.1%
  still scores 72 to 97 dB);
- ``<case>.png``: the same image clamped to 8 bits, for people;
- ``manifest.json``: per case the seed, resolution, dtype, weights hash, image
  checksums, versions, device and arch, how convolutions ran, and the command
  that made it.

Goldens are per GPU architecture. A run reads its own architecture's folder and
then only the folders ``ARCH_FALLBACK`` lists for it, in order, and says so in
every result; the table is empty, so by default no other architecture's golden is
ever used.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import math
import os
import shlex
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
SYNTHETIC_MODEL = "zimage-synthetic"
REAL_VAE_MODEL = "zimage-turbo-vae"
PIPELINE_MODEL = "zimage-turbo-pipeline"
MODELS = (SYNTHETIC_MODEL, REAL_VAE_MODEL, PIPELINE_MODEL)

# Goldens are made from this candidate only; its modules are nn.GroupNorm.
BASELINE = "torch"
BASELINE_GROUPNORM = "torch.nn.GroupNorm"

# Architectures whose goldens may stand in when a run's own folder lacks the case,
# tried in order, e.g. {"gfx950": ("gfx942",)}. An entry claims that the two
# architectures decode alike within the golden thresholds, so it belongs here only
# after measuring that; every result names the folder it read.
ARCH_FALLBACK: dict[str, tuple[str, ...]] = {}


class GoldenError(RuntimeError):
    """A golden is missing, corrupt or does not match its manifest."""


@dataclass(frozen=True)
class GoldenCase:
    resolution: int = 256
    dtype: str = "float32"
    seed: int = 0
    model: str = SYNTHETIC_MODEL

    def __post_init__(self) -> None:
        from numguard.cases import DTYPES

        if self.model not in MODELS:
            raise ValueError(f"model {self.model!r} is not one of {MODELS}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r} is not one of {sorted(DTYPES)}")
        if self.resolution <= 0 or self.resolution % 8:
            raise ValueError(f"resolution {self.resolution} must be a positive "
                             f"multiple of 8 (the VAE's downscale)")

    @property
    def name(self) -> str:
        kind = "pipeline" if self.model == PIPELINE_MODEL else "decode"
        return f"{kind}-r{self.resolution}-{self.dtype}-s{self.seed}"

    @property
    def id(self) -> str:
        return f"{self.model}-{self.name}"

    def update_command(self, device: str, root: Path | None = None) -> str:
        """The command that makes this case's golden with the torch baseline, in
        ``root`` where that is not the default store."""
        weights = "" if self.model == SYNTHETIC_MODEL else " --weights PATH"
        store = ""
        if root is not None and Path(root).resolve() != default_golden_root().resolve():
            store = f" --golden-dir {shlex.quote(str(root))}"
        return (
            f"numguard update-golden --model {self.model}{weights}{store} --device "
            f"{device} --resolution {self.resolution} --dtype {self.dtype} "
            f"--seed {self.seed}"
        )


@dataclass
class ImageMetrics:
    psnr_db: float
    ssim: float
    max_abs: float
    nan_count: int


@dataclass
class Comparison:
    """One image against one reference, judged by one threshold."""

    reference: str  # what the candidate was compared with, for people
    threshold: object | None  # numguard.tolerance.ImageThreshold; None: no entry
    metrics: ImageMetrics

    @property
    def passed(self) -> bool:
        m, t = self.metrics, self.threshold
        return (t is not None and m.nan_count == 0 and m.psnr_db >= t.psnr_db
                and m.ssim >= t.ssim)

    def line(self) -> str:
        m, t = self.metrics, self.threshold
        verdict = "ok" if self.passed else "FAILED"
        psnr_rule = f">= {t.psnr_db:g} required" if t else "no threshold"
        ssim_rule = f">= {t.ssim:g}" if t else "no threshold"
        return (
            f"vs {self.reference}: PSNR {m.psnr_db:.2f} dB ({psnr_rule}), "
            f"SSIM {m.ssim:.7f} ({ssim_rule}), max |diff| {m.max_abs:.3g}, "
            f"NaN {m.nan_count}: {verdict}"
        )


@dataclass
class GoldenResult:
    case: GoldenCase
    arch: str
    candidate: str = BASELINE
    device: str = "cpu"
    golden_arch: str = ""  # the folder the golden came from
    golden_source: str = ""  # "own arch" or the fallback rule that picked it
    replay_options: str = ""  # the run's --tier/--golden-dir/--weights, for Replay
    drift: Comparison | None = None  # vs the stored golden
    kernel: Comparison | None = None  # vs the live nn.GroupNorm decode
    golden_error: str = ""  # why no stored golden could be compared
    problems: list[str] = field(default_factory=list)  # everything else that fails
    finite: bool = True  # no NaN or Inf in either decode
    images: dict[str, np.ndarray] = field(default_factory=dict)
    report_page: str = ""

    @property
    def metrics(self) -> ImageMetrics | None:
        """The golden comparison's metrics (what the summary calls PSNR/SSIM)."""
        return self.drift.metrics if self.drift else None

    @property
    def passed(self) -> bool:
        compared = [c for c in (self.drift, self.kernel) if c is not None]
        return (not self.problems and not self.golden_error and len(compared) == 2
                and all(c.passed for c in compared))

    @property
    def golden_replaceable(self) -> bool:
        """Only the stored golden is at fault: --update-golden may rewrite it."""
        golden_failed = bool(self.golden_error) or (
            self.drift is not None and not self.drift.passed)
        return golden_failed and self.finite

    def message(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        lines = [f"Golden decode {self.case.id} with {self.candidate!r} on "
                 f"{self.device} (arch {self.arch}): {verdict}"]
        lines += self.problems + ([self.golden_error] if self.golden_error else [])
        lines += [c.line() for c in (self.drift, self.kernel) if c is not None]
        if self.report_page:
            lines.append(f"Images: {self.report_page}")
        lines.append(
            f"Replay: python -m pytest tests/golden -k {self.case.id} "
            f"--impl {shlex.quote(self.candidate)} --device {self.device}"
            f"{self.replay_options}"
        )
        return "\n".join(lines)


def default_golden_root() -> Path:
    """``golden_images/`` of the checkout this package lives in, else of the cwd."""
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "golden_images"
        if candidate.is_dir():
            return candidate
    return Path.cwd() / "golden_images"


def image_metrics(golden: np.ndarray, test: np.ndarray) -> ImageMetrics:
    """PSNR and SSIM (scikit-image, data_range 1, per channel) plus max diff, NaNs.

    Both images are HxWx3 float32 in image scale (0..1, unclamped), so data_range
    is 1 whatever the values; NaN pixels of ``test`` are counted and compared as
    0. Identical images give PSNR = inf (skimage would divide by zero and warn).
    """
    from skimage.metrics import structural_similarity

    if golden.shape != test.shape:
        raise GoldenError(
            f"image shape {test.shape} differs from the golden's {golden.shape}")
    if golden.dtype != test.dtype:
        raise GoldenError(
            f"image dtype {test.dtype} differs from the golden's {golden.dtype}")
    nan_count = int(np.isnan(test).sum())
    g = golden.astype(np.float64)
    t = np.nan_to_num(test.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    mse = float(np.mean((g - t) ** 2))
    psnr = math.inf if mse == 0 else 10 * math.log10(1.0 / mse)
    ssim = float(structural_similarity(g, t, data_range=1.0, channel_axis=2))
    return ImageMetrics(psnr, ssim, float(np.abs(g - t).max()), nan_count)


def nan_problem(image: np.ndarray, what: str) -> str:
    """'' when ``image`` is finite, else a sentence with the count and first place."""
    bad = ~np.isfinite(image)
    if not bad.any():
        return ""
    row, col, channel = (int(i) for i in np.argwhere(bad)[0])
    return (f"NaN or Inf in the {what}: {int(bad.sum())} of {image.size} values, the "
            f"first at row {row}, column {col}, channel {channel}")


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
        raise GoldenError(
            f"{path} is not a numguard manifest (format {MANIFEST_FORMAT})")
    return manifest


def golden_archs(arch: str) -> tuple[str, ...]:
    """The folders a run on ``arch`` may read, in order: its own, then ARCH_FALLBACK."""
    return (arch, *ARCH_FALLBACK.get(arch, ()))


def find_golden(root: Path, case: GoldenCase, arch: str, weights_sha256: str,
                convolutions: str = "native") -> tuple[np.ndarray, str, str]:
    """The golden for ``case`` on ``arch``: ``(image, folder arch, how it was picked)``.

    A folder that holds the case but is corrupt is an error, never a reason to try
    the next one; only a missing case moves on to the next fallback.
    """
    for golden_arch in golden_archs(arch):
        manifest = read_manifest(case_dir(root, case.model, golden_arch))
        if case.name not in manifest["cases"]:
            continue
        image = load_golden(root, case, golden_arch, weights_sha256, convolutions,
                            manifest=manifest)
        source = "own arch" if golden_arch == arch else (
            f"fallback: {arch} has no golden for this case and "
            f"ARCH_FALLBACK[{arch!r}] = {ARCH_FALLBACK[arch]!r}"
        )
        return image, golden_arch, source
    looked = ", ".join(str(case_dir(root, case.model, a)) for a in golden_archs(arch))
    listed = ARCH_FALLBACK.get(arch) or "nothing"
    raise GoldenError(
        f"no golden {case.name} for arch {arch} (looked in {looked}; "
        f"ARCH_FALLBACK lists {listed} for {arch}). "
        f"A missing golden is a failure, not a pass: create it on a "
        f"{arch} machine with: {case.update_command('<device>', root)} (or rerun pytest "
        f"with --update-golden --impl torch), review it and commit it"
    )


def load_golden(root: Path, case: GoldenCase, arch: str, weights_sha256: str,
                convolutions: str = "native", manifest: dict | None = None) -> np.ndarray:
    """Read and validate one golden image; raise GoldenError saying what is wrong.

    ``manifest`` is the folder's manifest where the caller has already read it.
    """
    folder = case_dir(root, case.model, arch)
    how = f"recreate it with: {case.update_command('<device>', root)} --force"
    if manifest is None:
        manifest = read_manifest(folder)
    entry = manifest["cases"].get(case.name)
    path = folder / f"{case.name}.npy"
    if entry is None or not path.is_file():
        raise GoldenError(
            f"no golden {case.name} for arch {arch} in {folder}; create it with: "
            f"{case.update_command('<device>', root)}"
        )
    try:
        image = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise GoldenError(
            f"{path} is unreadable ({type(exc).__name__}: {exc}); {how}") from None
    _validate_entry(entry, case, folder / MANIFEST)
    _validate_image(image, entry, case, path, weights_sha256, convolutions)
    _validate_png(folder / f"{case.name}.png", entry, image, how)
    return image


def _validate_entry(entry: dict, case: GoldenCase, manifest: Path) -> None:
    recorded = {k: entry.get(k) for k in ("resolution", "dtype", "seed")}
    expected = {"resolution": case.resolution, "dtype": case.dtype, "seed": case.seed}
    if recorded != expected:
        raise GoldenError(
            f"{manifest} entry {case.name} records {recorded}, but the case is "
            f"{expected}: the manifest does not describe this golden"
        )


def _validate_image(image, entry, case, path, weights_sha256, convolutions) -> None:
    side = case.resolution
    if image.shape != (side, side, 3) or image.dtype != np.float32:
        raise GoldenError(f"{path} holds {image.dtype} {image.shape}, expected "
                          f"float32 ({side}, {side}, 3)")
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
    made_with = entry.get("convolutions", "native")
    if made_with != convolutions:
        raise GoldenError(
            f"{path} was decoded with {made_with} convolutions, this run uses "
            f"{convolutions}: the two are not comparable"
        )


def _validate_png(path: Path, entry: dict, image: np.ndarray, how: str) -> None:
    from PIL import Image

    if not path.is_file():
        raise GoldenError(f"{path} is missing; the manifest lists it. {how}")
    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as png:
            png.load()
            pixels = np.asarray(png.convert("RGB"))
    except Exception as exc:
        raise GoldenError(
            f"{path} is a corrupt or truncated PNG ({type(exc).__name__}: {exc}); {how}"
        ) from None
    if hashlib.sha256(data).hexdigest() != entry.get("png_sha256"):
        raise GoldenError(
            f"{path} does not match the png_sha256 in its manifest; {how}")
    if not np.array_equal(pixels, to_png8(image)):
        raise GoldenError(
            f"{path} does not show the image in {path.with_suffix('.npy').name}: its "
            f"pixels differ from the 8-bit rendering of the lossless golden; {how}"
        )


def write_golden(root: Path, case: GoldenCase, arch: str, image: np.ndarray,
                 meta: dict, force: bool = False) -> Path:
    """Store ``image`` as the golden of ``case``; refuses to overwrite unless forced.

    ``meta["groupnorm"]`` must say the image came from the torch baseline, and the
    image must be finite. Every file is written to a temporary name and renamed
    into place, the manifest last, so an interrupted write never leaves a
    half-written golden behind.
    """
    from PIL import Image

    if meta.get("groupnorm") != BASELINE_GROUPNORM:
        raise GoldenError(
            f"goldens are written only from the torch baseline ({BASELINE_GROUPNORM}); "
            f"this image came from {meta.get('groupnorm', 'an unnamed GroupNorm')!r}"
        )
    problem = nan_problem(image, "image to store")
    if problem:
        raise GoldenError(f"refusing to write golden {case.name}: {problem}")
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
        "model": case.model,
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
    """A fresh copy of the synthetic VAE and its weights hash (built once per process).

    Raises ``numguard.zimage.SyntheticWeightsChanged`` when the regenerated weights
    do not hash to the recorded value.
    """
    from numguard import zimage

    if seed not in _VAE_CACHE:
        _VAE_CACHE[seed] = zimage.build_vae(seed)
    vae, sha = _VAE_CACHE[seed]
    return copy.deepcopy(vae), sha


@dataclass
class Decode:
    """One decoded image and how it was made."""

    image: np.ndarray
    weights_sha256: str
    swapped: int
    convolutions: str
    seconds: float


# One decode per (case, device, candidate, weights) per process: the torch
# baseline's decode serves both as the live reference and as the torch candidate.
_DECODES: dict[tuple, Decode] = {}


def decode_case(candidate, case: GoldenCase, device: str, weights=None) -> Decode:
    """Decode ``case`` with ``candidate`` swapped in for every GroupNorm (cached).

    ``weights`` is a ``numguard.weights.WeightsSource`` for the real-weight models.
    """
    key = (case, device, candidate.spec, candidate.factory,
           str(weights.root) if weights is not None else None)
    if key not in _DECODES:  # images are cached read-only; callers get views
        start = time.perf_counter()
        if case.model == PIPELINE_MODEL:
            image, sha, count, conv = _run_pipeline(candidate, case, device, weights)
        else:
            image, sha, count, conv = _decode_vae(candidate, case, device, weights)
        seconds = time.perf_counter() - start
        log.info("decoded %s with %s on %s in %.1f s", case.id, candidate.spec, device,
                 seconds)
        image.flags.writeable = False
        _DECODES[key] = Decode(image, sha, count, conv, seconds)
    return _DECODES[key]


def baseline_decode(case: GoldenCase, device: str, weights=None) -> Decode:
    """The live ``nn.GroupNorm`` decode of ``case`` on ``device`` (cached)."""
    from numguard.candidates import resolve

    return decode_case(resolve(BASELINE), case, device, weights)


def decode_with(candidate, case: GoldenCase, device: str, weights=None):
    """Decode ``case`` with ``candidate``: ``(image, weights_sha256, swapped)``."""
    made = decode_case(candidate, case, device, weights)
    return made.image.copy(), made.weights_sha256, made.swapped


def vae_for(case: GoldenCase, weights=None):
    """A fresh float32 CPU copy of ``case``'s VAE and its weights hash."""
    if case.model == SYNTHETIC_MODEL:
        return synthetic_vae()
    if case.model == PIPELINE_MODEL:
        raise ValueError(f"{case.id} runs the whole pipeline, not a VAE decode")
    from numguard.weights import require, zimage_vae

    return zimage_vae(require(weights, case.model))


def _decode_vae(candidate, case: GoldenCase, device: str, weights):
    from numguard import zimage
    from numguard.cases import DTYPES
    from numguard.swap import swap_groupnorm

    vae, sha = vae_for(case, weights)
    dtype = DTYPES[case.dtype]
    vae, convolutions = zimage.prepare_vae(vae, device, dtype)
    # a swap that fails its preflight raises here rather than decode with torch
    report = swap_groupnorm(vae, candidate).raise_on_failure()
    latents = zimage.seeded_latents(case.resolution, case.seed)
    image = zimage.decode(vae, latents, device, dtype)
    return image, sha, report.count, convolutions


def _run_pipeline(candidate, case: GoldenCase, device: str, weights):
    from numguard.cases import DTYPES
    from numguard.swap import swap_groupnorm
    from numguard.weights import pipeline, pipeline_image, require

    pipe, sha = pipeline(require(weights, case.model), device, DTYPES[case.dtype])
    original = pipe.vae
    swapped = copy.deepcopy(original)
    report = swap_groupnorm(swapped, candidate).raise_on_failure()
    pipe.vae = swapped
    try:
        image = pipeline_image(pipe, case.resolution, case.seed)
    finally:
        pipe.vae = original
    return image, sha, report.count, "native"


def golden_meta(case: GoldenCase, device: str, made: Decode, made_by: str,
                weights=None) -> dict:
    """The manifest fields of a golden made by the torch baseline on ``device``."""
    from numguard.device import device_name

    return {
        **versions(), "device": device, "device_name": device_name(device),
        "weights": "synthetic" if weights is None else weights.label,
        "weights_sha256": made.weights_sha256, "groupnorm": BASELINE_GROUPNORM,
        "convolutions": made.convolutions, "swapped_groupnorms": made.swapped,
        "made_by": made_by,
    }


def make_golden(root: Path, case: GoldenCase, device: str, made_by: str,
                weights=None, force: bool = False) -> Path:
    """Decode ``case`` with the torch baseline on ``device`` and store it as golden."""
    from numguard.device import device_arch

    made = baseline_decode(case, device, weights)
    meta = golden_meta(case, device, made, made_by, weights)
    return write_golden(root, case, device_arch(device), made.image, meta, force=force)


def run_golden_case(candidate, case: GoldenCase, device: str, root: Path,
                    weights=None) -> GoldenResult:
    """Decode with ``candidate``; compare with the stored golden and the live decode."""
    from numguard.device import device_arch
    from numguard.tolerance import golden_thresholds

    arch = device_arch(device)
    result = GoldenResult(case=case, arch=arch, candidate=candidate.spec, device=device)
    try:
        thresholds = golden_thresholds(arch, case.dtype)
    except KeyError as exc:  # still decode and measure: the figures help calibrate
        result.problems.append(str(exc.args[0]))
        thresholds = None
    made = decode_case(candidate, case, device, weights)
    live = baseline_decode(case, device, weights)
    result.images.update(candidate=made.image, live=live.image)
    for image, what in ((made.image, f"decode with {candidate.spec!r}"),
                        (live.image, "live nn.GroupNorm decode")):
        problem = nan_problem(image, what)
        if problem:
            result.problems.append(problem)
            result.finite = False
    result.kernel = Comparison(f"the live nn.GroupNorm decode on {device}",
                               thresholds and thresholds.live,
                               image_metrics(live.image, made.image))
    try:
        golden, result.golden_arch, result.golden_source = find_golden(
            root, case, arch, made.weights_sha256, made.convolutions)
    except GoldenError as exc:
        result.golden_error = str(exc)
        return result
    result.images["golden"] = golden
    reference = f"the golden ({result.golden_arch}, {result.golden_source})"
    result.drift = Comparison(reference, thresholds and thresholds.golden,
                              image_metrics(golden, made.image))
    return result
