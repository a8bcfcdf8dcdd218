"""Run a candidate GroupNorm on a case and judge it against the float64 oracle.

``run_case`` builds the candidate and ``nn.GroupNorm`` with the same parameters on
the same device, feeds both the case's input (the candidate in the case's layout,
nn.GroupNorm contiguous), and returns a ``Comparison`` under the policy of
``numguard.tolerance``. ``Comparison.message()`` is the failure text a kernel
engineer reads: headline, mismatch count, worst error with its index and the
allowance that applied there, nn.GroupNorm's own error beside it, and the one line
that replays the case.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from numguard.cases import Case, apply_layout
from numguard.oracle import group_norm_f64
from numguard.tolerance import K_TORCH, rounding_floor


@dataclass
class Comparison:
    """Outcome of one case; ``passed`` is the gate's verdict."""

    case: Case
    impl: str
    numel: int = 0
    mismatched: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0
    worst_index: tuple[int, ...] = ()
    worst_error: float = 0.0
    worst_allowed: float = 0.0
    worst_torch_error: float = 0.0
    worst_floor: float = 0.0
    error_ratio: float = 0.0  # max over elements of error / allowed; <= 1 passes
    torch_max_abs: float = 0.0
    nonfinite_disagreements: int = 0
    torch_nonfinite: int = 0
    problem: str = ""  # a structural failure (exception, shape, dtype) if any
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problem and self.mismatched == 0

    @property
    def percent(self) -> float:
        return 100.0 * self.mismatched / self.numel if self.numel else 0.0

    def replay(self) -> str:
        return f"numguard check --impl {self.impl} --case '{self.case.spec()}'"

    def message(self) -> str:
        """Failure text: headline, figures, then the case and its replay line."""
        if self.problem:
            head = f"GroupNorm candidate {self.impl!r} failed: {self.problem}"
            return "\n".join([head, f"Case: {self.case.spec()}", f"Replay: {self.replay()}"])
        idx = ", ".join(str(i) for i in self.worst_index)
        lines = [
            f"GroupNorm candidate {self.impl!r} disagrees with the float64 oracle.",
            f"Mismatched elements: {self.mismatched} / {self.numel} ({self.percent:.3g}%)",
            f"Greatest error/allowed ratio: {self.error_ratio:.3g} at index ({idx}): "
            f"error {self.worst_error:.3g}, allowed {self.worst_allowed:.3g} "
            f"= {K_TORCH:g} x nn.GroupNorm's group error {self.worst_torch_error:.3g} "
            f"+ rounding floor {self.worst_floor:.3g}",
            f"Greatest absolute difference: {self.max_abs:.3g}; greatest relative "
            f"difference: {self.max_rel:.3g}",
            f"nn.GroupNorm's own greatest error on this input: {self.torch_max_abs:.3g}",
        ]
        if self.nonfinite_disagreements:
            lines.append(
                f"NaN/Inf disagreements with the oracle: {self.nonfinite_disagreements}"
            )
        lines += self.notes
        lines += [f"Case: {self.case.spec()}", f"Replay: {self.replay()}"]
        return "\n".join(lines)


def build_module(factory, case: Case, device: str, weight, bias) -> nn.Module:
    """Construct a GroupNorm module for ``case`` and load its weight and bias."""
    module = factory(
        case.groups,
        case.channels,
        eps=case.eps,
        affine=case.affine,
        device=device,
        dtype=case.torch_dtype,
    )
    if case.affine:
        with torch.no_grad():
            module.weight.copy_(weight.to(device))
            module.bias.copy_(bias.to(device))
    return module.eval()


def run_case(candidate, case: Case, device: str = "cpu") -> Comparison:
    """Run ``candidate`` (a ``numguard.candidates.Candidate``) on ``case``.

    nn.GroupNorm runs first on the same input. Where it rejects the input with an
    exception, the candidate must reject it too; a candidate that raises where
    nn.GroupNorm does not is a failure.
    """
    x, w, b = case.make_inputs()
    result = Comparison(case=case, impl=candidate.spec)
    torch_out, torch_exc = _call(nn.GroupNorm, case, device, w, b, x.to(device))
    xin = apply_layout(x.to(device), case.layout)
    out, exc = _call(candidate.build, case, device, w, b, xin)
    if torch_exc is not None and exc is not None:
        result.notes.append(f"both rejected the input; nn.GroupNorm said: {torch_exc}")
        return result
    if exc is not None:
        result.problem = f"raised {type(exc).__name__}: {exc}"
        return result
    if torch_exc is not None:
        result.problem = (
            f"returned a result where nn.GroupNorm raises "
            f"{type(torch_exc).__name__}: {torch_exc}"
        )
        return result
    return judge(out, torch_out, x, w, b, case, result)


def _call(factory, case: Case, device: str, w, b, x):
    """Build and run one module; return (output, None) or (None, exception)."""
    try:
        module = build_module(factory, case, device, w, b)
        with torch.no_grad():
            return module(x), None
    except Exception as exc:  # a candidate may fail any way; report, never crash
        return None, exc


def judge(out, torch_out, x, w, b, case: Case, result: Comparison) -> Comparison:
    """Fill ``result`` by comparing ``out`` with the oracle under the policy."""
    if tuple(out.shape) != tuple(x.shape):
        result.problem = f"output shape {tuple(out.shape)}, expected {tuple(x.shape)}"
        return result
    if out.dtype != x.dtype:
        result.problem = f"output dtype {out.dtype}, expected {x.dtype} (the input's)"
        return result
    oracle = group_norm_f64(x, case.groups, w, b, case.eps)
    expected = oracle.y
    result.numel = expected.numel()
    if result.numel == 0:
        return result
    got = out.detach().to("cpu", torch.float64)
    err = _error(got, expected, x.dtype)
    torch_err = _error(torch_out.detach().to("cpu", torch.float64), expected, x.dtype)
    result.torch_nonfinite = int((~torch_err.isfinite()).sum())
    # a reference that is itself non-finite grants no slack
    torch_err = torch.where(torch_err.isfinite(), torch_err, torch.zeros_like(torch_err))
    group_torch = _group_max(torch_err, case.groups)
    floor = rounding_floor(
        x.to(torch.float64), expected, oracle.mean, oracle.rstd, w, b, x.dtype
    )
    allowed = K_TORCH * group_torch + floor
    _fill_figures(result, err, allowed, group_torch, floor, expected)
    return result


def _error(got: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """|got - expected|, where agreeing non-finite values count as 0 and others inf.

    ``expected`` is rounded to ``dtype`` first to decide whether the exact answer
    overflows the output dtype (then an inf of the right sign agrees).
    """
    target = expected.to(dtype).to(torch.float64)
    target = torch.where(target.isfinite(), expected, target)
    both_nan = got.isnan() & target.isnan()
    same_inf = got.isinf() & target.isinf() & (got == target)
    err = (got - target).abs()
    err = torch.where(both_nan | same_inf, torch.zeros_like(err), err)
    return torch.where(err.isnan(), torch.full_like(err, math.inf), err)


def _group_max(err: torch.Tensor, groups: int) -> torch.Tensor:
    N = err.shape[0]
    per_group = err.reshape(N, groups, -1).amax(dim=-1, keepdim=True)
    return per_group.expand(N, groups, err[0].numel() // groups).reshape(err.shape)


def _fill_figures(result, err, allowed, group_torch, floor, expected) -> None:
    ratio = err / allowed
    ratio = torch.where(err == 0, torch.zeros_like(ratio), ratio)
    bad = ~(err <= allowed)
    flat_worst = int(ratio.reshape(-1).argmax())
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat_worst), err.shape))
    result.mismatched = int(bad.sum())
    result.nonfinite_disagreements = int(err.isinf().sum())
    result.max_abs = float(err.max())
    significant = expected.abs() >= 1e-3 * float(expected.abs().max())
    rel = err[significant] / expected.abs()[significant]
    result.max_rel = float(rel.max()) if rel.numel() else 0.0
    result.worst_index = index
    result.worst_error = float(err[index])
    result.worst_allowed = float(allowed[index])
    result.worst_torch_error = float(group_torch[index])
    result.worst_floor = float(floor[index])
    result.error_ratio = float(ratio[index])
    result.torch_max_abs = float((K_TORCH * group_torch).max() / K_TORCH)
