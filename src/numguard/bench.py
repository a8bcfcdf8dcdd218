"""``numguard bench``: what a GroupNorm swap buys in the Z-Image-Turbo decoder.

For each distinct shape of the decoder's 30 GroupNorm calls at a chosen resolution
it times ``nn.GroupNorm`` and the candidate on the same seeded input, and sums
them over the calls into the GroupNorm time per image; then it times the whole
decode of the synthetic Z-Image-Turbo VAE (same architecture, so the same work)
with ``nn.GroupNorm`` and with the candidate swapped in.

Every figure is the median and interquartile range of
``torch.utils.benchmark.Timer.blocked_autorange``, taken after explicit warm-up
calls that also absorb one-off costs (torch.compile's compilation, aiter's JIT
build). The Timer synchronises the device around each measured block. Times are
figures to read, never assertions: nothing here passes or fails on a time.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.utils.benchmark as benchmark
from torch import nn

from numguard.cases import Case
from numguard.progress import Progress

log = logging.getLogger(__name__)


class BenchError(ValueError):
    """An argument of the benchmark is out of range; the message says which."""


@dataclass
class Timing:
    """Median and interquartile range of one measured call, in milliseconds."""

    median_ms: float
    iqr_ms: float
    blocks: int  # measured blocks the statistics come from
    calls_per_block: int

    @classmethod
    def of(cls, measurement) -> Timing:
        return cls(measurement.median * 1e3, measurement.iqr * 1e3,
                   len(measurement.times), measurement.number_per_run)

    def __str__(self) -> str:
        # an IQR needs a few blocks; a long call (a CPU decode) may get only one
        if self.blocks < 4:
            runs = "1 run" if self.blocks == 1 else f"{self.blocks} runs"
            return f"{_ms(self.median_ms)} ({runs})"
        return f"{_ms(self.median_ms)} ({_ms(self.iqr_ms)})"


@dataclass
class ShapeTiming:
    """One decoder GroupNorm shape: its calls and both implementations' times."""

    shape: tuple[int, ...]
    calls: list[str]
    torch: Timing
    candidate: Timing

    @property
    def speedup(self) -> float:
        return self.torch.median_ms / self.candidate.median_ms


@dataclass
class BenchResult:
    candidate: str
    description: str
    device: str
    arch: str
    device_name: str
    dtype: str
    resolution: int
    threads: int
    warmup: int
    min_run_time_s: float
    versions: dict
    shapes: list[ShapeTiming] = field(default_factory=list)
    decode_torch: Timing | None = None
    decode_candidate: Timing | None = None
    swapped: int = 0
    decode_problem: str = ""

    @property
    def groupnorm_torch_ms(self) -> float:
        """nn.GroupNorm's time per image: each shape's median times its calls."""
        return sum(len(s.calls) * s.torch.median_ms for s in self.shapes)

    @property
    def groupnorm_candidate_ms(self) -> float:
        return sum(len(s.calls) * s.candidate.median_ms for s in self.shapes)

    def to_json(self) -> dict:
        data = asdict(self)
        data["groupnorm_per_image_ms"] = {
            "torch": self.groupnorm_torch_ms, "candidate": self.groupnorm_candidate_ms,
            "calls": sum(len(s.calls) for s in self.shapes),
        }
        for row, shape in zip(data["shapes"], self.shapes, strict=True):
            row["speedup"] = shape.speedup
        return data


def decoder_shapes(resolution: int, dtype: str) -> list[tuple[Case, list[str]]]:
    """Each distinct decoder GroupNorm shape as a seeded case, and its calls' names."""
    from numguard.pinned import zimage_decoder_cases

    groups: dict[tuple[int, ...], tuple[Case, list[str]]] = {}
    for name, case in zimage_decoder_cases(resolution).items():
        groups.setdefault(case.shape, (case.with_(dtype=dtype), []))[1].append(name)
    return list(groups.values())


def time_call(fn, x: torch.Tensor, warmup: int, min_run_time: float) -> Timing:
    """Warm ``fn(x)`` up, then time it with ``blocked_autorange``, without autograd."""
    with torch.no_grad():
        for _ in range(warmup):
            fn(x)
        if torch.accelerator.is_available():
            torch.accelerator.synchronize()
        timer = benchmark.Timer(stmt="fn(x)", globals={"fn": fn, "x": x},
                                num_threads=torch.get_num_threads())
        return Timing.of(timer.blocked_autorange(min_run_time=min_run_time))


def run_bench(candidate, device: str, resolution: int = 256, dtype: str = "float32",
              warmup: int = 2, min_run_time: float = 1.0, decode: bool = True,
              threads: int | None = None) -> BenchResult:
    """Time ``candidate`` against nn.GroupNorm per shape, and the decode with both.

    ``threads`` sets torch's CPU threads for the run (restored afterwards); None
    keeps torch's default.
    """
    from numguard.bundle import BundleError, check_resolution

    try:
        check_resolution(resolution)
    except BundleError as exc:
        raise BenchError(str(exc)) from None
    if threads is not None and threads < 1:
        raise BenchError(f"--threads {threads}: must be at least 1")
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        return _run_bench(candidate, device, resolution, dtype, warmup, min_run_time,
                          decode)
    finally:
        torch.set_num_threads(before)


def _run_bench(candidate, device, resolution, dtype, warmup, min_run_time,
               decode) -> BenchResult:
    from numguard.bundle import environment_versions
    from numguard.device import device_arch, device_name

    shapes = decoder_shapes(resolution, dtype)
    result = BenchResult(
        candidate.spec, candidate.description, device, device_arch(device),
        device_name(device), dtype, resolution, torch.get_num_threads(), warmup,
        min_run_time, environment_versions(),
    )
    with Progress(2 * len(shapes) + 2 * decode, "bench") as progress:
        for case, calls in shapes:
            timings = []
            for label, factory in (("nn.GroupNorm", nn.GroupNorm),
                                   (candidate.spec, candidate.build)):
                progress.step(f"{_shape(case.shape)} {label}")
                timings.append(_time_groupnorm(factory, case, device, warmup,
                                               min_run_time))
            result.shapes.append(ShapeTiming(case.shape, calls, *timings))
            log.info("%s: nn.GroupNorm %.3g ms, %s %.3g ms", _shape(case.shape),
                     timings[0].median_ms, candidate.spec, timings[1].median_ms)
        if decode:
            _time_decodes(candidate, result, progress)
    return result


def _time_groupnorm(factory, case: Case, device: str, warmup: int,
                    min_run_time: float) -> Timing:
    from numguard.compare import build_module

    x, w, b = case.make_inputs()
    module = build_module(factory, case, device, w, b)
    return time_call(module, x.to(device), warmup, min_run_time)


def _time_decodes(candidate, result: BenchResult, progress: Progress) -> None:
    """Time the synthetic VAE's decode with nn.GroupNorm, then with the swap."""
    from numguard import zimage
    from numguard.cases import DTYPES
    from numguard.golden import synthetic_vae
    from numguard.swap import swap_groupnorm

    dtype = DTYPES[result.dtype]
    vae, _ = synthetic_vae()
    vae = nn.Module.to(vae, device=result.device, dtype=dtype)  # diffusers' warns
    latents = zimage.seeded_latents(result.resolution, 0)
    z = (latents / zimage.SCALING_FACTOR + zimage.SHIFT_FACTOR).to(result.device, dtype)

    def decode(z):
        return vae.decode(z).sample

    # one warm-up decode: a decode is long enough that the Timer's own block-size
    # estimate adds another unmeasured one
    progress.step("VAE decode, nn.GroupNorm")
    result.decode_torch = time_call(decode, z, 1, result.min_run_time_s)
    progress.step(f"VAE decode, {candidate.spec} swapped in")
    report = swap_groupnorm(vae, candidate, scope="decoder")
    if report.status != "swapped":
        result.decode_problem = f"the swap {report.status}: {report.failure}"
        log.warning("not timing the swapped decode: %s", result.decode_problem)
        return
    result.swapped = report.count
    result.decode_candidate = time_call(decode, z, 1, result.min_run_time_s)


def _ms(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def _shape(shape) -> str:
    return "x".join(str(s) for s in shape)


def _locations(calls: list[str]) -> str:
    """``mid.resnet-0``, ``mid.resnet-1``, ``up0-0`` -> ``mid.resnet, up0``."""
    return ", ".join(dict.fromkeys(name.rsplit("-", 1)[0] for name in calls))


def render_table(result: BenchResult) -> str:
    """The markdown table ``numguard bench`` prints and saves."""
    side = result.resolution // 8
    lines = [
        f"numguard bench: {result.candidate} ({result.description}) on {result.device} "
        f"({result.device_name}), arch {result.arch}",
        "",
        f"{result.dtype}, {result.resolution}x{result.resolution} image (latent "
        f"{side}x{side}), batch 1, {result.threads} CPU "
        f"thread{'' if result.threads == 1 else 's'}; each time is the "
        f"median (IQR) in ms over torch.utils.benchmark blocks after "
        f"{result.warmup} warm-up calls",
        "",
        "| decoder GroupNorm | shape | calls | nn.GroupNorm ms | candidate ms "
        "| speedup |",
        "|---|---|---|---|---|---|",
    ]
    for s in result.shapes:
        lines.append(f"| {_locations(s.calls)} | {_shape(s.shape)} | {len(s.calls)} | "
                     f"{s.torch} | {s.candidate} | {s.speedup:.2f}x |")
    calls = sum(len(s.calls) for s in result.shapes)
    gn_torch, gn_cand = result.groupnorm_torch_ms, result.groupnorm_candidate_ms
    lines.append(f"| **GroupNorm per image** | | {calls} | {_ms(gn_torch)} | "
                 f"{_ms(gn_cand)} | {gn_torch / gn_cand:.2f}x |")
    lines.append(_decode_row(result))
    return "\n".join(lines) + "\n"


def _decode_row(result: BenchResult) -> str:
    if result.decode_torch is None:
        return "| **VAE decode** | not timed (--no-decode) | | | | |"
    if result.decode_candidate is None:
        return (f"| **VAE decode** | | | {result.decode_torch} | not timed: "
                f"{result.decode_problem.splitlines()[0]} | |")
    before, after = result.decode_torch.median_ms, result.decode_candidate.median_ms
    change = 100.0 * (after - before) / before
    return (f"| **VAE decode** ({result.swapped} decoder GroupNorms swapped) | | | "
            f"{result.decode_torch} | {result.decode_candidate} | "
            f"{before / after:.2f}x ({change:+.1f}%) |")


def write_bench(result: BenchResult, folder: Path) -> dict[str, Path]:
    """Save ``bench.json`` and ``bench.md`` into ``folder``."""
    import json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / "bench.json", "markdown": folder / "bench.md"}
    paths["json"].write_text(json.dumps(result.to_json(), indent=2) + "\n")
    paths["markdown"].write_text(render_table(result))
    return paths
