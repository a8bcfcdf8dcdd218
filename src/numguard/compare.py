"""Run a candidate GroupNorm on a case and judge it against the float64 oracle.

``run_case`` builds the candidate and ``nn.GroupNorm`` with the same parameters on
the same device, feeds both the case's input in the case's layout, and returns a ``Comparison`` under the policy of
``numguard.tolerance``. ``Comparison.message()`` is the failure text a kernel
engineer reads: headline, mismatch count, worst error with its index and the
allowance that applied there, nn.GroupNorm's own error beside it, and the one line
that replays the case.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from numguard.cases import DTYPES, Case, apply_layout
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
    layout_preserved: bool | None = None  # set by the layout check
    replayable: bool = True  # False where the failure is not a GroupNorm case
    # what the replay line reruns: the check (a key of numguard.behaviour.CHECKS)
    # and the device the case ran on
    check: str = "accuracy"
    device: str = "cpu"
    # per-element allowance of the last judgement (float64, CPU), for derived checks
    allowed: torch.Tensor | None = field(default=None, repr=False)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problem and self.mismatched == 0

    @property
    def percent(self) -> float:
        return 100.0 * self.mismatched / self.numel if self.numel else 0.0

    def replay(self) -> str:
        device = "" if self.device == "cpu" else f" --device {self.device}"
        check = "" if self.check == "accuracy" else f" --check {self.check}"
        return f"numguard check --impl {self.impl}{device}{check} --case '{self.case.spec()}'"

    def message(self) -> str:
        """Failure text: headline, figures, then the case and its replay line."""
        if self.problem:
            head = f"GroupNorm candidate {self.impl!r} failed: {self.problem}"
            if not self.replayable:
                return "\n".join([head, *self.notes])
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
    """Construct a GroupNorm module for ``case`` and load its weight and bias.

    The module is built in the parameters' dtype (``case.params``, by default the
    input's), as a model whose input arrives in another dtype would hold it.
    """
    module = factory(
        case.groups,
        case.channels,
        eps=case.eps,
        affine=case.affine,
        device=device,
        dtype=case.param_dtype,
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
    nn.GroupNorm does not is a failure. With mixed input and parameter dtypes, or
    under autocast, a candidate may also refuse with an exception: a clear error
    is an acceptable answer there, a silently different result is not.
    """
    x, w, b = case.make_inputs()
    result = Comparison(case=case, impl=candidate.spec, device=device)
    # each module gets its own copy in the case's layout: a kernel that writes into
    # its input must not corrupt the values the oracle reads, and nn.GroupNorm's
    # error is measured in the same situation (PyTorch's channels-last CPU kernel
    # is itself less accurate than its contiguous one)
    torch_in = apply_layout(x.to(device).clone(), case.layout)
    torch_out, torch_exc = call_module(nn.GroupNorm, case, device, w, b, torch_in)
    xin = apply_layout(x.to(device).clone(), case.layout)
    out, exc = call_module(candidate.build, case, device, w, b, xin)
    mixed = bool(case.params or case.autocast)
    if exc is not None and (torch_exc is not None or mixed):
        said = f"nn.GroupNorm said: {torch_exc}" if torch_exc else "nn.GroupNorm ran"
        result.notes.append(f"candidate refused with {type(exc).__name__}: {exc}; {said}")
        return result
    if exc is not None:
        result.problem = f"raised {type(exc).__name__}: {exc}"
        return result
    if torch_exc is not None and not mixed:
        result.problem = (
            f"returned a result where nn.GroupNorm raises "
            f"{type(torch_exc).__name__}: {torch_exc}"
        )
        return result
    return judge(out, torch_out, x, w, b, case, result)


def call_module(factory, case: Case, device: str, w, b, x):
    """Build and run one module; return (output, None) or (None, exception)."""
    try:
        module = build_module(factory, case, device, w, b)
        with torch.no_grad(), _autocast(case, device):
            return module(x), None
    except Exception as exc:  # a candidate may fail any way; report, never crash
        return None, exc


def _autocast(case: Case, device: str):
    if not case.autocast:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=DTYPES[case.autocast])


def judge(out, torch_out, x, w, b, case: Case, result: Comparison) -> Comparison:
    """Fill ``result`` by comparing ``out`` with the oracle under the policy.

    The expected output dtype is nn.GroupNorm's (the input's when it raised); a
    candidate answering in another dtype is noted, and its values are judged at the
    coarser of the two.
    """
    expected_dtype = torch_out.dtype if torch_out is not None else x.dtype
    if tuple(out.shape) != tuple(x.shape):
        result.problem = f"output shape {tuple(out.shape)}, expected {tuple(x.shape)}"
        return result
    if out.dtype != expected_dtype:
        if not (case.params or case.autocast):
            result.problem = (
                f"output dtype {out.dtype}, expected {expected_dtype} (the input's)"
            )
            return result
        result.notes.append(
            f"output dtype {out.dtype} where nn.GroupNorm gives {expected_dtype}"
        )
    judged_dtype = coarser(out.dtype, expected_dtype)
    oracle = group_norm_f64(x, case.groups, w, b, case.eps)
    expected = oracle.y
    result.numel = expected.numel()
    if result.numel == 0:
        return result
    err = _error(out.detach().to("cpu", torch.float64), expected, judged_dtype)
    if torch_out is None:  # nn.GroupNorm refused: no reference error to scale by
        torch_err = torch.zeros_like(err)
    else:
        torch_err = _error(torch_out.detach().to("cpu", torch.float64), expected, judged_dtype)
    result.torch_nonfinite = int((~torch_err.isfinite()).sum())
    # a reference that is itself non-finite grants no slack
    torch_err = torch.where(torch_err.isfinite(), torch_err, torch.zeros_like(torch_err))
    group_torch = _group_max(torch_err, case.groups)
    floor = rounding_floor(
        x.to(torch.float64), expected, oracle.mean, oracle.rstd, w, b, judged_dtype
    )
    allowed = K_TORCH * group_torch + floor
    result.allowed = allowed
    _fill_figures(result, err, allowed, group_torch, floor, expected)
    return result


def coarser(a: torch.dtype, b: torch.dtype) -> torch.dtype:
    """The dtype with the larger unit roundoff."""
    return max(a, b, key=lambda d: torch.finfo(d).eps)


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
    bad = ~((err <= allowed) | (err == 0))  # agreeing NaN/inf have err 0, allowed NaN
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
