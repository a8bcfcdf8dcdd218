"""Measure the golden decode's noise floor and detection limit; propose thresholds.

For one (device, dtype, resolution, seed) ``calibrate`` decodes the Z-Image-Turbo
VAE with ``nn.GroupNorm`` (the reference) and then

- with correct alternatives. *Kernel* alternatives change only the GroupNorm
  (PyTorch's channels-last kernel, Inductor's kernel, float64 and two-pass
  kernels); *environment* alternatives change what a golden made elsewhere would
  differ by (a second run of the reference; the whole model channels_last, so
  other convolution kernels; one thread instead of the default). The lowest PSNR
  of the kernel alternatives is the live comparison's floor, the lowest of all
  is the golden comparison's floor;
- with faults: one decoder GroupNorm's output scaled by ``1 + fault``, for each of
  the 30 in turn. The highest PSNR among them is the least visible fault.

The live threshold sits ``margin_db`` (6 dB, a factor 2 in RMS difference) under
its floor; the golden threshold sits ``golden_margin_db`` (10 dB, a factor 3.2)
under its own, because a golden made on another machine of the same arch, or with
another torch or diffusers, differs by more than one machine can measure. For SSIM
1 - SSIM grows by the same factor, and is never tighter than 1e-4 below 1. In
fp32 both must fail every fault at 1e-3; calibrate reports it when they do not.
The detection limit is the smallest scale error on the least visible layer that
each threshold catches, found by stepping through ``SWEEP``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from numguard.golden import GoldenCase, image_metrics, vae_for
from numguard.zimage import decode, prepare_vae, seeded_latents

log = logging.getLogger(__name__)

KERNEL_ALTERNATIVES = {
    "channels_last GroupNorm": "torch-channels-last",
    "torch.compile GroupNorm": "torch-compile",
    "float64 GroupNorm": "numguard.kernels:Float64GroupNorm",
    "two-pass GroupNorm": "numguard.kernels:TwoPassGroupNorm",
}
# Scale errors tried on the least visible layer, from a tenth of the fault upwards.
SWEEP = (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 1e-1, 2e-1, 5e-1, 1.0)
# The fault injected per dtype unless --fault says otherwise. In bf16 a GroupNorm
# output scaled by 1.001 rounds back to the very same tensor (bf16 values are at
# least 2**-8 apart, relatively, so 0.1% never reaches the next one): the smallest
# decade a bf16 output can carry is 1e-2.
DEFAULT_FAULT = {"float32": 1e-3, "float16": 1e-3, "bfloat16": 1e-2}
SSIM_GAP_MIN = 1e-4  # proposed SSIM is at most 1 - 1e-4: it is a sanity bound


@dataclass
class Measured:
    label: str
    psnr_db: float
    ssim: float
    max_abs: float
    seconds: float


@dataclass
class Proposal:
    psnr_db: float
    ssim: float
    floor: Measured
    catches_all_faults: bool
    # the smallest scale error on the least visible layer that the threshold catches
    detection_limit: float | None


@dataclass
class Calibration:
    arch: str
    device: str
    dtype: str
    resolution: int
    seed: int
    model: str
    margin_db: float
    golden_margin_db: float
    fault: float
    convolutions: str
    versions: dict
    kernel: list[Measured] = field(default_factory=list)
    environment: list[Measured] = field(default_factory=list)
    faults: list[Measured] = field(default_factory=list)
    sweep: list[Measured] = field(default_factory=list)
    live: Proposal | None = None
    golden: Proposal | None = None

    @property
    def ok(self) -> bool:
        """In fp32 both thresholds must fail every fault; half types only report it."""
        return self.dtype != "float32" or (self.live.catches_all_faults
                                           and self.golden.catches_all_faults)


class _Decoder:
    """Decodes one case with variations, against a fixed reference image."""

    def __init__(self, case: GoldenCase, device: str, weights=None):
        from numguard.cases import DTYPES

        self.case, self.device, self.dtype = case, device, DTYPES[case.dtype]
        self.vae, self.sha = vae_for(case, weights)
        self.latents = seeded_latents(case.resolution, case.seed)
        self.reference = self.run(self.model())

    def model(self, candidate=None, channels_last=False):
        from numguard.swap import swap_groupnorm

        vae, self.convolutions = prepare_vae(copy.deepcopy(self.vae), self.device,
                                             self.dtype)
        if channels_last:
            vae = vae.to(memory_format=torch.channels_last)
        if candidate is not None:
            swap_groupnorm(vae, candidate).raise_on_failure()
        return vae

    def run(self, vae) -> np.ndarray:
        return decode(vae, self.latents, self.device, self.dtype)

    def measure(self, label: str, vae=None, threads: int | None = None) -> Measured:
        """Decode with ``vae`` (default: the reference model) against the reference."""
        vae = vae if vae is not None else self.model()
        start = time.perf_counter()
        with _threads(threads):
            image = self.run(vae)
        m = image_metrics(self.reference, image)
        seconds = time.perf_counter() - start
        result = Measured(label, m.psnr_db, m.ssim, m.max_abs, seconds)
        log.info("%-55s PSNR %7.2f dB  SSIM %.7f  (%.1f s)", label, result.psnr_db,
                 result.ssim, result.seconds)
        return result


@contextlib.contextmanager
def _threads(n):
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def calibrate(case: GoldenCase, device: str, margin_db: float = 6.0,
              golden_margin_db: float = 10.0, fault: float | None = None,
              compile_kernel: bool = True, weights=None, layers: int | None = None
              ) -> Calibration:
    """Measure one case's floors and faults and propose both thresholds.

    ``fault`` defaults to ``DEFAULT_FAULT[case.dtype]``; ``layers`` limits the
    faults to the first N decoder GroupNorms (for quick runs).
    """
    from numguard.candidates import resolve
    from numguard.device import device_arch
    from numguard.golden import versions

    fault = DEFAULT_FAULT[case.dtype] if fault is None else fault
    decoder = _Decoder(case, device, weights)
    cal = Calibration(device_arch(device), device, case.dtype, case.resolution,
                      case.seed, case.model, margin_db, golden_margin_db, fault,
                      decoder.convolutions, versions())
    for label, spec in KERNEL_ALTERNATIVES.items():
        if spec == "torch-compile" and not compile_kernel:
            continue
        cal.kernel.append(decoder.measure(label, decoder.model(resolve(spec))))
    cal.environment.append(decoder.measure("the reference again"))  # run to run
    cal.environment.append(
        decoder.measure("channels_last model", decoder.model(channels_last=True)))
    if torch.device(device).type == "cpu" and torch.get_num_threads() > 1:
        cal.environment.append(decoder.measure("one thread", threads=1))
    cal.faults = _faults(decoder, fault, layers)
    live_floor = min(cal.kernel, key=lambda m: m.psnr_db)
    golden_floor = min(cal.kernel + cal.environment, key=lambda m: m.psnr_db)
    cal.live = _propose(live_floor, cal.faults, margin_db)
    cal.golden = _propose(golden_floor, cal.faults, golden_margin_db)
    _detection_limits(decoder, cal)
    return cal


def _decoder_norms(vae) -> list[str]:
    return [f"decoder.{name}" for name, module in vae.decoder.named_modules()
            if isinstance(module, torch.nn.GroupNorm)]


def _faults(decoder: _Decoder, fault: float, layers: int | None) -> list[Measured]:
    from numguard.decode_faults import scale_output

    vae = decoder.model()
    names = _decoder_norms(vae)[:layers]
    found = []
    for name in names:
        handle = scale_output(vae.get_submodule(name), 1 + fault)
        try:
            found.append(decoder.measure(f"{name} x (1 + {fault:g})", vae))
        finally:
            handle.remove()
    return found


def _propose(floor: Measured, faults: list[Measured], margin_db: float) -> Proposal:
    psnr = 150.0  # identical alternatives: no floor measured, demand near-identity
    if math.isfinite(floor.psnr_db):
        psnr = math.floor(floor.psnr_db - margin_db)
    gap = max((1.0 - floor.ssim) * 10 ** (margin_db / 10), SSIM_GAP_MIN)
    ssim = float(f"{1.0 - gap:.6g}")
    caught = all(f.psnr_db < psnr or f.ssim < ssim for f in faults)
    return Proposal(psnr, ssim, floor, caught, None)


def _detection_limits(decoder: _Decoder, cal: Calibration) -> None:
    """Step the least visible layer's scale error up until each threshold fails it."""
    from numguard.decode_faults import scale_output

    if not cal.faults:
        return
    least = max(cal.faults, key=lambda m: m.psnr_db).label.split(" x ")[0]
    vae = decoder.model()
    pending = [cal.live, cal.golden]
    for scale_error in [s for s in SWEEP if s >= cal.fault / 10]:
        handle = scale_output(vae.get_submodule(least), 1 + scale_error)
        try:
            m = decoder.measure(f"{least} x (1 + {scale_error:g})", vae)
        finally:
            handle.remove()
        cal.sweep.append(m)
        for proposal in list(pending):
            if m.psnr_db < proposal.psnr_db or m.ssim < proposal.ssim:
                proposal.detection_limit = scale_error
                pending.remove(proposal)
        if not pending:
            return


def render(cal: Calibration) -> str:
    """The measurements as a table, then the entry to put in GOLDEN_THRESHOLDS."""
    lines = [
        f"numguard calibrate: {cal.model} {cal.resolution}x{cal.resolution} "
        f"{cal.dtype} seed {cal.seed} on {cal.device} (arch {cal.arch}), convolutions "
        f"{cal.convolutions}, torch {cal.versions['torch']}, diffusers "
        f"{cal.versions['diffusers']}",
        "",
        "PSNR / SSIM against the nn.GroupNorm decode:",
    ]
    for title, rows in (("correct kernels (live floor)", cal.kernel),
                        ("correct environments (golden floor)", cal.environment),
                        (f"faults: one output x (1 + {cal.fault:g})", cal.faults),
                        ("detection sweep on the least visible layer", cal.sweep)):
        lines.append(f"  {title}")
        lines += [f"    {m.label:55s} {m.psnr_db:7.2f} dB  {m.ssim:.7f}  "
                  f"max {m.max_abs:.2e}  {m.seconds:5.1f} s" for m in rows]
    lines.append("")
    for name, p, margin in (("live", cal.live, cal.margin_db),
                            ("golden", cal.golden, cal.golden_margin_db)):
        limit = f"{p.detection_limit:g}" if p.detection_limit else f"> {SWEEP[-1]:g}"
        lines.append(
            f"{name:6s}: floor {p.floor.psnr_db:.2f} dB ({p.floor.label}), margin "
            f"{margin:g} dB -> PSNR >= {p.psnr_db:g} dB, SSIM >= {p.ssim:g}; "
            f"catches every 1 + {cal.fault:g} fault: "
            f"{'yes' if p.catches_all_faults else 'NO'}; detection limit {limit}"
        )
    lines += ["", "Proposed entry for numguard/tolerance.py GOLDEN_THRESHOLDS:",
              proposed_entry(cal)]
    return "\n".join(lines)


def proposed_entry(cal: Calibration) -> str:
    fault_text = "no faults measured"
    if cal.faults:
        worst = max(cal.faults, key=lambda m: m.psnr_db)
        layer = worst.label.split(" x ")[0]
        fault_text = f"1+{cal.fault:g} faults <= {worst.psnr_db:.1f} dB ({layer})"

    def threshold(p: Proposal, margin: float) -> str:
        limit = f"{p.detection_limit:g}" if p.detection_limit else f">{SWEEP[-1]:g}"
        reason = (f"numguard calibrate {cal.resolution}px seed {cal.seed}, torch "
                  f"{cal.versions['torch']}: floor {p.floor.psnr_db:.1f} dB "
                  f"({p.floor.label}) - {margin:g} dB; {fault_text}; "
                  f"detects scale errors >= {limit}")
        return f"ImageThreshold({p.psnr_db!r}, {p.ssim!r}, {reason!r})"

    return (f"    ({cal.arch!r}, {cal.dtype!r}): GoldenThresholds(\n"
            f"        golden={threshold(cal.golden, cal.golden_margin_db)},\n"
            f"        live={threshold(cal.live, cal.margin_db)},\n"
            f"    ),")


def to_json(cal: Calibration) -> str:
    data = asdict(cal)
    data["ok"] = cal.ok

    def finite(v):
        if isinstance(v, float) and not math.isfinite(v):
            return str(v)
        if isinstance(v, dict):
            return {k: finite(x) for k, x in v.items()}
        if isinstance(v, list):
            return [finite(x) for x in v]
        return v

    return json.dumps(finite(data), indent=2) + "\n"


def run_cli(args) -> int:
    """``numguard calibrate``: print each dtype's measurements and proposed entry.

    Returns 0, or 1 when an fp32 proposal fails to catch every fault.
    """
    from pathlib import Path

    from numguard.weights import find_weights

    weights = None
    if args.model != "zimage-synthetic":
        weights = find_weights(args.weights)[0]
    results = []
    for dtype in args.dtype or ("float32", "bfloat16", "float16"):
        case = GoldenCase(args.resolution, dtype, args.seed, args.model)
        print(f"numguard calibrate: {case.id} on {args.device} ...", flush=True)
        cal = calibrate(case, args.device, args.margin, args.golden_margin, args.fault,
                        compile_kernel=not args.no_compile, weights=weights,
                        layers=args.layers)
        print(render(cal), flush=True)
        print()
        results.append(cal)
    if args.json:
        text = "[" + ",\n".join(to_json(c) for c in results) + "]\n"
        Path(args.json).write_text(text)
    failing = [c for c in results if not c.ok]
    for cal in failing:
        print(f"numguard calibrate: the proposed {cal.dtype} thresholds do not fail "
              f"every 1 + {cal.fault:g} fault; do not use them")
    return 1 if failing else 0
