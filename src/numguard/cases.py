"""A GroupNorm test case: everything needed to rebuild its input bit for bit.

Inputs are always drawn on the CPU in float64 from a seeded generator and cast to
the case's dtype, so every device and every machine sees the same values. A case
prints as one line (``Case.spec()``) that ``Case.parse`` reads back, which is what a
failure message offers for replay.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
LAYOUTS = ("contiguous", "channels_last", "strided")

_SPEC_FIELDS = (
    "shape", "groups", "dtype", "eps", "affine", "layout", "dist", "seed", "params",
    "autocast",
)
_DIST_RE = re.compile(r"^(?P<kind>[a-z_]+)\((?P<args>[^)]*)\)$")
_DIST_ARGS = {
    "normal": ("mean", "std"),
    "constant": ("value",),
    "uniform": ("low", "high"),
    # normal(mean, std) with one value in every `every` replaced by mean + scale*std
    "outliers": ("mean", "std", "scale", "every"),
}


@dataclass(frozen=True)
class Distribution:
    """Value distribution of an input, written like ``normal(mean=100,std=1)``."""

    kind: str
    args: tuple[tuple[str, float], ...]

    @classmethod
    def parse(cls, text: str) -> "Distribution":
        m = _DIST_RE.match(text.replace(" ", ""))
        if not m or m["kind"] not in _DIST_ARGS:
            kinds = ", ".join(f"{k}({','.join(a)})" for k, a in _DIST_ARGS.items())
            raise ValueError(f"distribution {text!r} is not one of: {kinds}")
        pairs = [p.split("=", 1) for p in m["args"].split(",") if p]
        values = {k: float(v) for k, v in pairs}
        expected = _DIST_ARGS[m["kind"]]
        if set(values) != set(expected):
            raise ValueError(
                f"distribution {text!r} needs exactly the arguments {expected}"
            )
        return cls(m["kind"], tuple((k, values[k]) for k in expected))

    def __str__(self) -> str:
        args = ",".join(f"{k}={_fmt(v)}" for k, v in self.args)
        return f"{self.kind}({args})"

    def sample(self, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
        """Draw float64 values of ``shape`` on the CPU."""
        a = dict(self.args)
        if self.kind == "constant":
            return torch.full(shape, a["value"], dtype=torch.float64)
        if self.kind == "uniform":
            u = torch.rand(shape, generator=gen, dtype=torch.float64)
            return a["low"] + (a["high"] - a["low"]) * u
        x = a["mean"] + a["std"] * torch.randn(shape, generator=gen, dtype=torch.float64)
        if self.kind == "outliers":
            flat = x.view(-1)
            flat[:: max(int(a["every"]), 1)] = a["mean"] + a["scale"] * a["std"]
        return x


def normal(mean: float = 0.0, std: float = 1.0) -> Distribution:
    return Distribution("normal", (("mean", float(mean)), ("std", float(std))))


@dataclass(frozen=True)
class Case:
    """One GroupNorm call: input shape, groups, dtype, eps, affine, layout, values."""

    shape: tuple[int, ...]
    groups: int
    dtype: str = "float32"
    eps: float = 1e-5
    affine: bool = True
    layout: str = "contiguous"
    dist: Distribution = normal()
    seed: int = 0
    # dtype of weight and bias when it differs from the input's ("" = the same)
    params: str = ""
    # run under torch.autocast with this dtype ("" = no autocast)
    autocast: str = ""

    def __post_init__(self) -> None:
        if len(self.shape) < 2:
            raise ValueError(f"shape must be [N, C, *], got {self.shape}")
        for name in ("dtype", "params", "autocast"):
            value = getattr(self, name)
            if value not in DTYPES and not (value == "" and name != "dtype"):
                raise ValueError(f"{name} {value!r} is not one of {sorted(DTYPES)}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout {self.layout!r} is not one of {LAYOUTS}")

    @property
    def param_dtype(self) -> torch.dtype:
        return DTYPES[self.params or self.dtype]

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def channels(self) -> int:
        return self.shape[1]

    def with_(self, **changes) -> "Case":
        return replace(self, **changes)

    def spec(self) -> str:
        """One line that ``Case.parse`` turns back into this case."""
        shape = "x".join(str(s) for s in self.shape)
        return (
            f"shape={shape} groups={self.groups} dtype={self.dtype} "
            f"eps={_fmt(self.eps)} affine={int(self.affine)} layout={self.layout} "
            f"dist={self.dist} seed={self.seed}"
            + (f" params={self.params}" if self.params else "")
            + (f" autocast={self.autocast}" if self.autocast else "")
        )

    @classmethod
    def parse(cls, text: str) -> "Case":
        """Read a line written by ``spec()``; missing optional fields take defaults."""
        parts = _split_spec(text)
        bare = [p for p in parts if "=" not in p]
        if bare:
            raise ValueError(f"case {text!r}: {bare} are not key=value fields")
        fields = dict(part.split("=", 1) for part in parts)
        unknown = sorted(set(fields) - set(_SPEC_FIELDS))
        if unknown:
            raise ValueError(f"case {text!r} has unknown fields {unknown}")
        missing = [f for f in ("shape", "groups") if f not in fields]
        if missing:
            raise ValueError(f"case {text!r} lacks the field(s) {missing}")
        return cls(
            shape=tuple(int(s) for s in fields["shape"].split("x")),
            groups=int(fields["groups"]),
            dtype=fields.get("dtype", "float32"),
            eps=float(fields.get("eps", 1e-5)),
            affine=bool(int(fields.get("affine", 1))),
            layout=fields.get("layout", "contiguous"),
            dist=Distribution.parse(fields.get("dist", "normal(mean=0,std=1)")),
            seed=int(fields.get("seed", 0)),
            params=fields.get("params", ""),
            autocast=fields.get("autocast", ""),
        )

    def make_inputs(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Return (x, weight, bias) on the CPU in the case's dtype, contiguous."""
        gen = torch.Generator().manual_seed(self.seed)
        x = self.dist.sample(self.shape, gen).to(self.torch_dtype)
        if not self.affine:
            return x, None, None
        pgen = torch.Generator().manual_seed(self.seed + 1_000_003)
        C = self.channels
        w = 1.0 + 0.5 * torch.randn(C, generator=pgen, dtype=torch.float64)
        b = 0.5 * torch.randn(C, generator=pgen, dtype=torch.float64)
        return x, w.to(self.param_dtype), b.to(self.param_dtype)


def apply_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """Return ``x`` (same values) in the memory layout named by ``layout``."""
    if layout == "contiguous":
        return x.contiguous()
    if layout == "channels_last":
        return to_channels_last(x)
    # strided: every other element of a buffer twice as wide in the last dim
    wide = torch.empty(*x.shape[:-1], 2 * x.shape[-1], dtype=x.dtype, device=x.device)
    view = wide[..., ::2]
    view.copy_(x)
    return view


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """Channels-last copy of ``x`` for any rank >= 3 (C has stride 1)."""
    if x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    if x.dim() == 5:
        return x.contiguous(memory_format=torch.channels_last_3d)
    if x.dim() == 3:
        return x.transpose(1, 2).contiguous().transpose(1, 2)
    return x.contiguous()


def _split_spec(text: str) -> list[str]:
    # distribution arguments contain commas but no spaces, so split on spaces
    return [part for part in text.strip().split(" ") if part]


def _fmt(v: float) -> str:
    if float(v).is_integer() and abs(v) < 1e15:
        return str(int(v))
    return f"{v:.6g}" if math.isfinite(v) else str(v)
