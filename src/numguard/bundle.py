"""Bundles: a candidate's outputs on fixed, seeded cases, comparable across machines.

``make_bundle`` runs a candidate on the distinct shapes of the Z-Image-Turbo
decoder's 30 GroupNorm calls at a chosen resolution, each twice (values as the
decoder sees them, and the same values shifted to a stress mean), and decodes one
set of seeded latents with the synthetic Z-Image-Turbo VAE with the candidate
swapped into every GroupNorm. The bundle folder holds

- ``manifest.json``: the candidate; device, architecture and device name; the
  versions of torch, HIP/CUDA, ROCm, aiter, diffusers and numguard; the seeds; and
  per case its spec, input sha256, output sha256 and nn.GroupNorm's worst error
  per group against the float64 oracle on the same device;
- ``outputs/<case>.safetensors``: the candidate's output (GroupNorm cases) or the
  decoded image (float32, H x W x 3, image scale 0..1, unclamped);
- ``images/<case>.png``: each decoded image in 8 bits, for people.

Inputs are not stored. They are drawn on the CPU from each case's recorded spec
(``numguard.cases``), so every machine draws the same values, and their sha256 in
the manifest proves it.

``compare_bundles(a, b)`` judges two bundles case by case:

- a GroupNorm case drifts when, at some element, ``|A - B| > allowed_A +
  allowed_B``, where ``allowed`` is numguard's tolerance policy for that side
  (``numguard.tolerance``: twice nn.GroupNorm's own worst error in the group, on
  that side's device, plus the rounding floor). A kernel within the policy has
  ``|out - oracle| <= allowed``, so two such kernels can never differ by more than
  the sum: drift proves at least one side wrong, and each side's own error ratio
  against the float64 oracle (recomputed here from the spec) says which. Measured
  at 256x256 with PyTorch 2.13.0 on the CPU, bundles made in separate processes:
  torch against torch-compile, both correct, reach at most 0.19 of that sum over
  the 14 cases; torch against torch-channels-last reaches 1.2 and 1.37 on the two
  largest decoder shapes as drawn and 27 to 267 on the stress variants; torch
  against torch is bit-identical;
- a decode drifts when the PSNR or SSIM between the two images falls below the
  golden comparison's thresholds of ``numguard.tolerance.golden_thresholds``, the
  stricter of the two architectures' entries applying. Measured as above, cpu
  float32 (threshold 115 dB): torch against torch-compile 128.0 dB, against
  torch-channels-last 124.5 dB.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import logging
import math
import os
import platform
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from torch import nn

from numguard.cases import Case, apply_layout, normal
from numguard.progress import Progress

log = logging.getLogger(__name__)

BUNDLE_FORMAT = 1
MANIFEST = "manifest.json"

# The stress variant of each shape: the decoder's values shifted to mean 100 at std
# 1, a mean/std ratio 128 times the largest one measured at the synthetic VAE's own
# GroupNorm inputs (0.78, see numguard.swap). Measured at 256x256 (PyTorch 2.13.0
# CPU): nn.GroupNorm's error ratio stays at 0.05-0.06 on all seven shapes, while
# PyTorch's channels-last CPU kernel reaches 54 (1x512x32x32) to 534 (1x128x256x256);
# only the rank-3 attention shape, which has no channels-last form, stays at 0.06.
STRESS_DIST = normal(100.0, 1.0)

# The decode in every bundle: the golden tier's case (fp32, seed 0).
DECODE_DTYPE = "float32"
DECODE_SEED = 0


class BundleError(ValueError):
    """A folder is not a usable bundle, or two bundles cannot be compared."""


@dataclass(frozen=True)
class BundleCase:
    """One GroupNorm case of a bundle and the decoder calls that have its shape."""

    name: str
    case: Case
    variant: str  # "decoder": values as the decoder sees them; "stress": shifted
    calls: tuple[str, ...]


def bundle_cases(resolution: int) -> list[BundleCase]:
    """The bundle's GroupNorm cases at ``resolution``: every distinct decoder shape.

    Of the 30 decoder calls (``numguard.pinned.zimage_decoder_cases``) only the first
    of each shape is kept; the others differ by seed alone. Each is taken as drawn
    and with ``STRESS_DIST`` in place of its distribution.
    """
    from numguard.pinned import zimage_decoder_cases

    check_resolution(resolution)
    calls = zimage_decoder_cases(resolution)
    by_shape: dict[tuple[int, ...], list[str]] = {}
    for name, case in calls.items():
        by_shape.setdefault(case.shape, []).append(name)
    cases = []
    for names in by_shape.values():
        case = calls[names[0]]
        cases.append(BundleCase(names[0], case, "decoder", tuple(names)))
        stressed = case.with_(dist=STRESS_DIST)
        cases.append(BundleCase(f"{names[0]}.stress", stressed, "stress", tuple(names)))
    return cases


def check_resolution(resolution: int) -> None:
    """Raise BundleError unless ``resolution`` is a positive multiple of 8."""
    if resolution < 8 or resolution % 8:
        raise BundleError(
            f"--resolution {resolution}: must be a positive multiple of 8 (the VAE "
            f"downsamples by 8), e.g. 256 or 1024"
        )


def tensors_sha256(*tensors: torch.Tensor | None) -> str:
    """sha256 over each tensor's dtype, shape and bytes (None counts as absent)."""
    h = hashlib.sha256()
    for t in tensors:
        if t is None:
            h.update(b"none;")
            continue
        t = t.detach().to("cpu").contiguous()
        h.update(f"{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def environment_versions() -> dict:
    """Versions a cross-machine comparison depends on; None where absent."""
    import diffusers
    import safetensors

    from numguard import __version__

    return {
        "numguard": __version__,
        "torch": torch.__version__,
        "hip": torch.version.hip,
        "cuda": torch.version.cuda,
        "rocm": _rocm_version(),
        "aiter": _distribution_version("amd-aiter", "aiter"),
        "diffusers": diffusers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _distribution_version(*names: str) -> str | None:
    # read from the installed metadata: importing aiter off ROCm raises
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _rocm_version() -> str | None:
    if not torch.version.hip:
        return None
    path = Path(os.environ.get("ROCM_PATH", "/opt/rocm")) / ".info" / "version"
    return path.read_text().strip() if path.is_file() else None


# ---------------------------------------------------------------------------------
# making a bundle


def make_bundle(candidate, device: str, out: Path, resolution: int = 256,
                decode_resolution: int = 256, force: bool = False) -> dict:
    """Run ``candidate`` on the bundle's cases on ``device``; write ``out``.

    Returns the manifest. Raises BundleError when ``out`` is not empty and not a
    bundle to replace with ``force``. The manifest is written last, so a folder
    without one is an interrupted bundle.
    """
    from numguard.golden import GoldenCase

    cases = bundle_cases(resolution)
    check_resolution(decode_resolution)
    decode_case = GoldenCase(decode_resolution, DECODE_DTYPE, DECODE_SEED)
    out = Path(out)
    _prepare_folder(out, force)
    manifest = _header(candidate, device, out, resolution, decode_resolution)
    manifest["seeds"] = {bc.name: bc.case.seed for bc in cases}
    manifest["seeds"][decode_case.name] = decode_case.seed
    manifest["cases"] = {}
    with Progress(len(cases) + 1, "bundle") as progress:
        for bc in cases:
            progress.step(bc.name)
            entry, output = run_groupnorm_case(candidate, bc, device)
            manifest["cases"][bc.name] = _save_output(out, bc.name, entry, output)
        progress.step(f"{decode_case.name} (synthetic VAE)")
        entry, image = run_decode_case(candidate, decode_case, device)
        manifest["cases"][decode_case.name] = _save_image(out, decode_case.name,
                                                          entry, image)
    _atomic_write_text(out / MANIFEST, json.dumps(_finite(manifest), indent=2) + "\n")
    log.info("wrote bundle %s (%d cases)", out, len(manifest["cases"]))
    return manifest


def _header(candidate, device: str, out: Path, resolution: int,
            decode_resolution: int) -> dict:
    """The manifest's account of who made the bundle, where, and how."""
    from numguard.device import device_arch, device_name

    return {
        "format": BUNDLE_FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": (f"numguard bundle --impl {candidate.spec} --device {device} "
                    f"--out {out} --resolution {resolution} "
                    f"--decode-resolution {decode_resolution}"),
        "candidate": {"spec": candidate.spec, "description": candidate.description,
                      "note": candidate.note},
        "device": device,
        "arch": device_arch(device),
        "device_name": device_name(device),
        "versions": environment_versions(),
        "resolution": resolution,
    }


def _prepare_folder(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise BundleError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MANIFEST).is_file():
            raise BundleError(
                f"--out {out} is a folder with files that is not a numguard bundle; "
                f"pick an empty or new folder"
            )
        if not force:
            raise BundleError(
                f"bundle {out} already exists; pass --force to replace it")
        (out / MANIFEST).unlink()
        for sub in ("outputs", "images"):
            shutil.rmtree(out / sub, ignore_errors=True)
    (out / "outputs").mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(exist_ok=True)


def run_groupnorm_case(candidate, bc: BundleCase, device: str):
    """Run the candidate and nn.GroupNorm on one case; return (entry, output)."""
    from numguard.oracle import group_norm_f64

    case = bc.case
    x, w, b = case.make_inputs()
    entry = {
        "kind": "groupnorm", "spec": case.spec(), "variant": bc.variant,
        "calls": list(bc.calls), "input_sha256": tensors_sha256(x, w, b),
    }
    reference, exc = _forward(nn.GroupNorm, case, device, x, w, b)
    if exc is not None:
        raise RuntimeError(f"nn.GroupNorm raised on bundle case {bc.name}: {exc}")
    oracle = group_norm_f64(x, case.groups, w, b, case.eps)
    entry["torch_group_error"] = group_errors(reference, oracle.y, case.groups)
    output, exc = _forward(candidate.build, case, device, x, w, b)
    if exc is not None:
        entry["problem"] = f"the candidate raised {type(exc).__name__}: {exc}"
        return entry, None
    output = output.detach().to("cpu").contiguous()
    if tuple(output.shape) != tuple(x.shape):
        entry["problem"] = (
            f"output shape {tuple(output.shape)}, expected {tuple(x.shape)}")
        return entry, None
    return entry, output


def _forward(factory, case: Case, device: str, x, w, b):
    """Build one module and run it on a copy of ``x``; (output, None) or (None, exc)."""
    from numguard.compare import build_module

    try:
        module = build_module(factory, case, device, w, b)
        with torch.no_grad():
            return module(apply_layout(x.to(device).clone(), case.layout)), None
    except Exception as exc:  # a candidate may fail any way; record it, never crash
        return None, exc


def group_errors(reference: torch.Tensor, y: torch.Tensor, groups: int) -> list[float]:
    """Worst |reference - y| per (sample, group), flattened; non-finite counts as 0.

    A non-finite reference grants no slack, as in ``numguard.compare.judge``.
    """
    err = (reference.detach().to("cpu", torch.float64) - y).abs()
    err = torch.where(err.isfinite(), err, torch.zeros_like(err))
    return err.reshape(err.shape[0], groups, -1).amax(dim=-1).reshape(-1).tolist()


def run_decode_case(candidate, case, device: str):
    """Decode ``case`` with the candidate swapped in; return (entry, image or None)."""
    from numguard import zimage
    from numguard.golden import decode_with, synthetic_vae
    from numguard.swap import SwapError

    latents = zimage.seeded_latents(case.resolution, case.seed)
    _, weights_sha = synthetic_vae()
    entry = {
        "kind": "decode", "resolution": case.resolution, "dtype": case.dtype,
        "seed": case.seed, "weights_sha256": weights_sha,
        "latents_sha256": tensors_sha256(latents),
        "input_sha256": hashlib.sha256(
            f"{weights_sha}:{tensors_sha256(latents)}:{case.dtype}".encode()
        ).hexdigest(),
    }
    try:
        image, _, swapped = decode_with(candidate, case, device)
    except SwapError as exc:
        entry["problem"] = str(exc)
        return entry, None
    entry["swapped"] = swapped
    return entry, np.ascontiguousarray(image, dtype=np.float32)


def _save_output(out: Path, name: str, entry: dict, output) -> dict:
    from safetensors.torch import save_file

    if output is None:
        return entry
    path = Path("outputs") / f"{name}.safetensors"
    save_file({"output": output}, out / path, metadata={"case": name})
    entry.update(output=str(path), output_sha256=tensors_sha256(output),
                 dtype=str(output.dtype).removeprefix("torch."))
    return entry


def _save_image(out: Path, name: str, entry: dict, image) -> dict:
    from PIL import Image

    from numguard.golden import to_png8

    if image is None:
        return entry
    entry = _save_output(out, name, entry, torch.from_numpy(image))
    png = Path("images") / f"{name}.png"
    Image.fromarray(to_png8(image)).save(out / png, format="PNG")
    entry["png"] = str(png)
    return entry


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def render_bundle(manifest: dict, folder: Path) -> str:
    """What ``numguard bundle`` prints: where, what, and any case that did not run."""
    cases = manifest["cases"]
    problems = {n: e["problem"] for n, e in cases.items() if e.get("problem")}
    lines = [
        f"wrote bundle {folder}: {len(cases)} cases of "
        f"{manifest['candidate']['spec']} on {manifest['device']} "
        f"({manifest['device_name']}), arch {manifest['arch']}, "
        f"resolution {manifest['resolution']}",
    ]
    lines += [f"  {name}: {text.splitlines()[0]}" for name, text in problems.items()]
    lines.append(f"compare it with: numguard compare {folder} OTHER_BUNDLE")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------
# comparing two bundles


@dataclass
class CaseDiff:
    """One case of a comparison: the figures and the verdict."""

    name: str
    kind: str  # "groupnorm" | "decode"
    variant: str = ""
    shape: str = ""
    max_abs: float | None = None  # greatest |A - B|
    # GroupNorm: greatest |out - oracle| and error/allowed ratio per side, and the
    # greatest |A - B| / (allowed_A + allowed_B)
    error_a: float | None = None
    error_b: float | None = None
    ratio_a: float | None = None
    ratio_b: float | None = None
    drift_ratio: float | None = None
    # decode: PSNR (dB) and SSIM between the two images, and their minimums
    psnr_db: float | None = None
    ssim: float | None = None
    psnr_min: float | None = None
    ssim_min: float | None = None
    problem: str = ""

    @property
    def passed(self) -> bool:
        if self.problem:
            return False
        if self.kind == "groupnorm":
            return self.drift_ratio <= 1
        return self.psnr_db >= self.psnr_min and self.ssim >= self.ssim_min

    def verdict(self) -> str:
        """``ok``, ``DRIFT``, ``agree`` (alike, off the oracle) or ``ERROR: why``."""
        if self.problem:
            return f"ERROR: {self.problem.splitlines()[0]}"
        if self.kind == "decode":
            return "ok" if self.passed else "DRIFT"
        off = [s for s, r in (("A", self.ratio_a), ("B", self.ratio_b)) if r > 1]
        if not self.passed:
            return f"DRIFT ({' and '.join(off)} off the oracle)"
        return f"agree, {' and '.join(off)} off the oracle" if off else "ok"


@dataclass
class BundleComparison:
    a: dict  # candidate, device, arch, device name, versions and folder of each side
    b: dict
    image_rule: str
    cases: list[CaseDiff] = field(default_factory=list)
    # the two decoded images of each decode case, for the HTML report
    images: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict,
                                                             repr=False)

    @property
    def drifted(self) -> list[CaseDiff]:
        return [c for c in self.cases if not c.passed]

    @property
    def clean(self) -> bool:
        return not self.drifted


def load_bundle(folder: Path) -> dict:
    """Read and check a bundle's manifest; raise BundleError saying what is wrong."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise BundleError(f"{folder} is not a numguard bundle: it has no {MANIFEST}")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path} is not valid JSON: {exc}") from None
    if manifest.get("format") != BUNDLE_FORMAT or "cases" not in manifest:
        raise BundleError(
            f"{path} is not a numguard bundle of format {BUNDLE_FORMAT} (it says "
            f"format {manifest.get('format')!r}); remake it with this numguard"
        )
    manifest["folder"] = str(folder)
    return manifest


def compare_bundles(folder_a: Path, folder_b: Path, psnr_min: float | None = None,
                    ssim_min: float | None = None) -> BundleComparison:
    """Compare two bundles case by case (see the module doc for the rule).

    Raises BundleError when either folder is not a bundle, or the two hold
    different cases or were made from different inputs.
    """
    a, b = load_bundle(folder_a), load_bundle(folder_b)
    _check_same_inputs(a, b)
    thresholds, rule = _image_thresholds(a, b, psnr_min, ssim_min)
    result = BundleComparison(_side(a), _side(b), rule)
    with Progress(len(a["cases"]), "compare") as progress:
        for name, entry_a in a["cases"].items():
            progress.step(name)
            entry_b = b["cases"][name]
            if entry_a["kind"] == "groupnorm":
                diff = compare_groupnorm(name, a, b)
            else:
                diff, pair = compare_decode(name, a, b, thresholds)
                if pair is not None:
                    result.images[name] = pair
            diff.problem = diff.problem or _problems(entry_a, entry_b)
            result.cases.append(diff)
    return result


def _side(manifest: dict) -> dict:
    keys = ("folder", "candidate", "device", "arch", "device_name", "versions",
            "created")
    return {k: manifest.get(k) for k in keys}


def _check_same_inputs(a: dict, b: dict) -> None:
    names_a, names_b = list(a["cases"]), list(b["cases"])
    if names_a != names_b:
        only_a = sorted(set(names_a) - set(names_b)) or "none"
        only_b = sorted(set(names_b) - set(names_a)) or "none"
        raise BundleError(
            f"the bundles hold different cases (A: resolution {a.get('resolution')}, "
            f"B: resolution {b.get('resolution')}; only in A: {only_a}; only in B: "
            f"{only_b}); make both with the same --resolution and numguard version"
        )
    for name in names_a:
        sha_a = a["cases"][name]["input_sha256"]
        sha_b = b["cases"][name]["input_sha256"]
        if sha_a != sha_b:
            raise BundleError(
                f"case {name!r} was made from different inputs: input sha256 "
                f"{sha_a[:16]}... in A ({a['folder']}), {sha_b[:16]}... in B "
                f"({b['folder']}); a comparison would measure the inputs, not the "
                f"kernels"
            )


def _problems(entry_a: dict, entry_b: dict) -> str:
    found = [f"{side}: {e['problem']}" for side, e in (("A", entry_a), ("B", entry_b))
             if e.get("problem")]
    return "; ".join(found)


def _load_output(manifest: dict, name: str) -> torch.Tensor | None:
    from safetensors.torch import load_file

    entry = manifest["cases"][name]
    if "output" not in entry:
        return None
    path = Path(manifest["folder"]) / entry["output"]
    if not path.is_file():
        raise BundleError(f"bundle {manifest['folder']} lacks {entry['output']}")
    tensor = load_file(path)["output"]
    if tensors_sha256(tensor) != entry["output_sha256"]:
        raise BundleError(
            f"{path} does not match the output_sha256 of its manifest: the file was "
            f"changed or truncated after the bundle was made"
        )
    return tensor


def compare_groupnorm(name: str, a: dict, b: dict) -> CaseDiff:
    """Judge both sides of one GroupNorm case against the oracle and each other."""
    from numguard.oracle import group_norm_f64
    from numguard.tolerance import K_TORCH, rounding_floor

    entry = a["cases"][name]
    case = Case.parse(entry["spec"])
    diff = CaseDiff(name, "groupnorm", entry["variant"],
                    "x".join(str(s) for s in case.shape))
    out_a, out_b = _load_output(a, name), _load_output(b, name)
    if out_a is None or out_b is None:
        return diff
    x, w, b_ = case.make_inputs()
    if tensors_sha256(x, w, b_) != entry["input_sha256"]:
        raise BundleError(
            f"this machine draws different inputs for case {name!r} than the machines "
            f"that made the bundles (input sha256 {tensors_sha256(x, w, b_)[:16]}... "
            f"against {entry['input_sha256'][:16]}...), so the float64 oracle cannot "
            f"be recomputed here; compare on a machine with the bundles' torch version"
        )
    oracle = group_norm_f64(x, case.groups, w, b_, case.eps)
    floor = rounding_floor(x.to(torch.float64), oracle.y, oracle.mean, oracle.rstd,
                           w, b_, case.torch_dtype)
    sides = []
    for manifest, out in ((a, out_a), (b, out_b)):
        group_err = torch.tensor(manifest["cases"][name]["torch_group_error"],
                                 dtype=torch.float64)
        allowed = K_TORCH * _per_element(group_err, case) + floor
        sides.append((abs_error(out, oracle.y), allowed))
    (err_a, allowed_a), (err_b, allowed_b) = sides
    apart = abs_error(out_a, out_b.to(torch.float64))
    diff.max_abs = float(apart.max())
    diff.error_a, diff.error_b = float(err_a.max()), float(err_b.max())
    diff.ratio_a, diff.ratio_b = _ratio(err_a, allowed_a), _ratio(err_b, allowed_b)
    diff.drift_ratio = _ratio(apart, allowed_a + allowed_b)
    return diff


def abs_error(got: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """|got - expected| in float64; matching NaN or inf count 0, others count inf."""
    got = got.to(torch.float64)
    agree = (got.isnan() & expected.isnan()) | (got.isinf() & (got == expected))
    err = (got - expected).abs()
    err = torch.where(agree, torch.zeros_like(err), err)
    return torch.where(err.isnan(), torch.full_like(err, math.inf), err)


def _per_element(group_values: torch.Tensor, case: Case) -> torch.Tensor:
    N, G = case.shape[0], case.groups
    per_group = group_values.reshape(N, G, 1)
    return per_group.expand(N, G, math.prod(case.shape) // (N * G)).reshape(case.shape)


def _ratio(err: torch.Tensor, allowed: torch.Tensor) -> float:
    ratio = torch.where(err == 0, torch.zeros_like(err), err / allowed)
    return float(ratio.max()) if ratio.numel() else 0.0


def _image_thresholds(a: dict, b: dict, psnr_min, ssim_min):
    """((min PSNR, min SSIM) or None, the rule in words) for the decodes."""
    from numguard.tolerance import golden_thresholds

    if (psnr_min is None) != (ssim_min is None):
        raise BundleError("give both --psnr-min and --ssim-min, or neither")
    if psnr_min is not None:
        return (psnr_min, ssim_min), (
            f"images need PSNR >= {psnr_min:g} dB and SSIM >= {ssim_min:g} "
            f"(--psnr-min/--ssim-min)")
    arches = sorted({a["arch"], b["arch"]})
    try:
        # two bundles' decodes differ as a decode differs from its stored golden:
        # by the kernels and by the machines, so the golden comparison's entry holds
        entries = [golden_thresholds(arch, DECODE_DTYPE).golden for arch in arches]
    except KeyError as exc:
        message = (f"{exc.args[0]}; or pass --psnr-min and --ssim-min to compare "
                   f"the images now")
        return None, message
    psnr, ssim = max(e.psnr_db for e in entries), max(e.ssim for e in entries)
    which = " and ".join(f"{arch}/{DECODE_DTYPE}" for arch in arches)
    return (psnr, ssim), (
        f"images need PSNR >= {psnr:g} dB and SSIM >= {ssim:g} (golden thresholds "
        f"of {which}, the stricter applying)")


def compare_decode(name: str, a: dict, b: dict, thresholds):
    """PSNR and SSIM between the two decoded images, against ``thresholds``.

    Returns the CaseDiff and the two images (None where a side has no image).
    """
    from numguard.golden import image_metrics

    entry = a["cases"][name]
    side = entry["resolution"]
    diff = CaseDiff(name, "decode", shape=f"{side}x{side}x3")
    if thresholds is None:
        diff.problem = "no image thresholds for these architectures (see the rule)"
    else:
        diff.psnr_min, diff.ssim_min = thresholds
    image_a, image_b = _load_output(a, name), _load_output(b, name)
    if image_a is None or image_b is None:
        return diff, None
    pair = (image_a.numpy(), image_b.numpy())
    nan_pixels = [int(np.isnan(image).sum()) for image in pair]
    if any(nan_pixels):
        diff.problem = diff.problem or (
            f"NaN pixels: {nan_pixels[0]} in A, {nan_pixels[1]} in B")
        return diff, pair
    metrics = image_metrics(*pair)
    diff.max_abs, diff.psnr_db = metrics.max_abs, metrics.psnr_db
    diff.ssim = metrics.ssim
    return diff, pair


# ---------------------------------------------------------------------------------
# rendering a comparison

_COLUMNS = ("case", "shape", "max |A-B|", "A vs oracle", "B vs oracle", "A vs B",
            "verdict")


def _fmt(value, spec: str = ".3g") -> str:
    return "-" if value is None else format(value, spec)


def _side_text(side: dict) -> str:
    v = side["versions"] or {}
    backend = f"HIP {v['hip']}" if v.get("hip") else (
        f"CUDA {v['cuda']}" if v.get("cuda") else "CPU")
    extra = f", aiter {v['aiter']}" if v.get("aiter") else ""
    return (f"{side['candidate']['spec']} on {side['device']} ({side['device_name']}), "
            f"arch {side['arch']}; torch {v.get('torch')} ({backend}), "
            f"diffusers {v.get('diffusers')}{extra}")


def table_rows(result: BundleComparison) -> list[tuple[str, ...]]:
    """One row of strings per case, in the order of ``_COLUMNS``."""
    rows = []
    for c in result.cases:
        if c.kind == "groupnorm":
            side_a = f"{_fmt(c.error_a)} ({_fmt(c.ratio_a)})"
            side_b = f"{_fmt(c.error_b)} ({_fmt(c.ratio_b)})"
            apart = _fmt(c.drift_ratio)
        else:
            side_a = side_b = "-"
            apart = f"PSNR {_fmt(c.psnr_db, '.1f')} dB, SSIM {_fmt(c.ssim, '.7f')}"
        rows.append((c.name, c.shape, _fmt(c.max_abs), side_a, side_b, apart,
                     c.verdict()))
    return rows


def _result_line(result: BundleComparison) -> str:
    n, bad = len(result.cases), len(result.drifted)
    if not bad:
        return f"CLEAN: {n} of {n} cases within the thresholds"
    return f"DRIFT in {bad} of {n} cases: {', '.join(c.name for c in result.drifted)}"


_NOTES = (
    "A/B vs oracle: greatest |out - float64 oracle| (in brackets the greatest "
    "error/allowed ratio under numguard's tolerance policy; <= 1 is within).",
    "A vs B, GroupNorm: greatest |A - B| / (allowed_A + allowed_B); above 1 is drift, "
    "which two kernels within the policy cannot reach.",
)


def render_text(result: BundleComparison) -> str:
    """The table ``numguard compare`` prints."""
    rows = [_COLUMNS, *table_rows(result)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS) - 1)]
    lines = [
        "numguard compare",
        f"  A  {result.a['folder']}: {_side_text(result.a)}",
        f"  B  {result.b['folder']}: {_side_text(result.b)}",
        "",
    ]
    for row in rows:
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=False)]
        lines.append("  " + "  ".join([*cells, row[-1]]))
    lines += ["", *(f"  {note}" for note in _NOTES), f"  A vs B, images: "
              f"{result.image_rule}.", "", f"  {_result_line(result)}"]
    return "\n".join(lines)


def render_markdown(result: BundleComparison) -> str:
    """The comparison as markdown: sides, the table, the rule and the result."""
    lines = [
        "# numguard compare", "",
        f"- **A** `{result.a['folder']}`: {_side_text(result.a)}",
        f"- **B** `{result.b['folder']}`: {_side_text(result.b)}", "",
        _markdown_row(_COLUMNS),
        "|" + "---|" * len(_COLUMNS),
    ]
    lines += [_markdown_row(row) for row in table_rows(result)]
    notes = [*_NOTES, f"A vs B, images: {result.image_rule}."]
    lines += ["", *(f"- {_md_escape(n)}" for n in notes), "",
              f"**{_result_line(result)}**"]
    return "\n".join(lines) + "\n"


def _md_escape(text: str) -> str:
    # a bare | would end a table cell
    return text.replace("|", "\\|")


def _markdown_row(cells) -> str:
    return "| " + " | ".join(_md_escape(c) for c in cells) + " |"


def render_html(result: BundleComparison) -> str:
    """A standalone HTML page: the markdown's content, plus each decode's images.

    Each decode shows A, B and |A - B| amplified so its largest value is white.
    """
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in _COLUMNS)
    body = []
    for row, case in zip(table_rows(result), result.cases, strict=True):
        cls = "ok" if case.passed else "bad"
        cells = "".join(f"<td>{esc(cell)}</td>" for cell in row)
        body.append(f'<tr class="{cls}">{cells}</tr>')
    parts = [
        "<!doctype html>", '<html><head><meta charset="utf-8">',
        "<title>numguard compare</title>",
        "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:left}"
        "tr.bad{background:#fdd}tr.ok{background:#efe}img{margin:4px}</style>",
        "</head><body>", "<h1>numguard compare</h1>",
        f"<p><b>A</b> <code>{esc(result.a['folder'])}</code>: "
        f"{esc(_side_text(result.a))}<br>",
        f"<b>B</b> <code>{esc(result.b['folder'])}</code>: "
        f"{esc(_side_text(result.b))}</p>",
        f"<table><tr>{head}</tr>{''.join(body)}</table>",
        "<p>" + "<br>".join(esc(n) for n in (
            *_NOTES, f"A vs B, images: {result.image_rule}.")) + "</p>",
        f"<p><b>{esc(_result_line(result))}</b></p>",
    ]
    for name, (image_a, image_b) in result.images.items():
        parts.append(_image_block(name, image_a, image_b))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _image_block(name: str, image_a: np.ndarray, image_b: np.ndarray) -> str:
    from numguard.golden import to_png8

    apart = np.abs(image_a.astype(np.float64) - image_b.astype(np.float64))
    peak = float(apart.max())
    gain = 1.0 / peak if peak > 0 else 1.0
    pictures = [("A", image_a), ("B", image_b), (f"|A-B| x {gain:.3g}", apart * gain)]
    cells = "".join(
        f'<figure style="display:inline-block"><img src="data:image/png;base64,'
        f'{_png_base64(to_png8(img))}"><figcaption>{html.escape(label)}'
        f"</figcaption></figure>"
        for label, img in pictures
    )
    return f"<h2>{html.escape(name)}</h2><div>{cells}</div>"


def _png_base64(pixels: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def write_compare_report(result: BundleComparison, folder: Path) -> dict[str, Path]:
    """Write ``compare.md``, ``compare.html`` and ``compare.json`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = {"clean": result.clean, "a": result.a, "b": result.b,
            "image_rule": result.image_rule,
            "cases": [{**asdict(c), "passed": c.passed, "verdict": c.verdict()}
                      for c in result.cases]}
    paths = {"markdown": folder / "compare.md", "html": folder / "compare.html",
             "json": folder / "compare.json"}
    paths["markdown"].write_text(render_markdown(result))
    paths["html"].write_text(render_html(result))
    paths["json"].write_text(json.dumps(_finite(data), indent=2) + "\n")
    return paths


def _finite(value):
    """JSON has no inf or NaN; write them as strings ("inf" for identical images)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
