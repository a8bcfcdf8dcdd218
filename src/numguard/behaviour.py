"""Behavioural checks beyond accuracy: layout, independence, determinism, stale
memory, side effects, bad arguments, invariances, finiteness.

Each ``check_*`` takes a candidate, a ``Case`` and a device and returns a
``Comparison`` (``passed``, ``message()``), so the property tests and the selftest
judge kernels the same way.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from numguard.cases import Case, apply_layout
from numguard.compare import Comparison, build_module, call_module, judge, run_case


# the checks ``numguard check --check NAME`` reruns; filled by ``_replayed_as``
CHECKS: dict = {"accuracy": run_case}


def _replayed_as(variants: dict[str, dict]):
    """Register a ``check_*(candidate, case, device, **options)`` in CHECKS, once per
    variant (check name -> its options), and make its failures replay through it:
    the replay line names the variant that ran, the device and the case the check
    was given (not the derived case it failed on), so it reruns exactly what failed.
    """

    def wrap(fn):
        @functools.wraps(fn)
        def run(candidate, case: Case, device: str, **options) -> Comparison:
            result = fn(candidate, case, device, **options)
            result.case, result.device = case, device
            result.check = next(name for name, fixed in variants.items() if fixed == options)
            return result

        for name, fixed in variants.items():
            CHECKS[name] = functools.partial(run, **fixed)
        return run

    return wrap


def _run(candidate, case: Case, device: str, x: torch.Tensor, w, b):
    module = build_module(candidate.build, case, device, w, b)
    with torch.no_grad():
        return module(x)


@_replayed_as({"layout": {"strict": False}, "layout-strict": {"strict": True}})
def check_layout(candidate, case: Case, device: str, strict: bool) -> Comparison:
    """Accuracy on a channels_last and a strided input; memory format reported.

    Output shape and dtype are judged by ``run_case``; here the device too. Whether
    a channels_last input gives a channels_last output is recorded in
    ``layout_preserved`` and fails only when ``strict``.
    """
    for layout in ("channels_last", "strided"):
        result = run_case(candidate, case.with_(layout=layout), device)
        if not result.passed:
            return result
    x, w, b = case.make_inputs()
    out = _run(candidate, case, device, apply_layout(x.to(device), "channels_last"), w, b)
    result = Comparison(case=case.with_(layout="channels_last"), impl=candidate.spec)
    if out.device != x.to(device).device:
        result.problem = f"output on {out.device}, expected {x.to(device).device}"
        return result
    result.layout_preserved = _is_channels_last(out)
    state = "preserved" if result.layout_preserved else "not preserved"
    result.notes.append(
        f"memory format {state} for a channels_last input "
        f"(output strides {tuple(out.stride())})"
    )
    if strict and not result.layout_preserved:
        result.problem = (
            f"a channels_last input gave an output with strides {tuple(out.stride())}; "
            f"--strict-layout requires the input's memory format"
        )
    return result


def _is_channels_last(t: torch.Tensor) -> bool:
    if t.dim() == 4:
        return t.is_contiguous(memory_format=torch.channels_last)
    if t.dim() == 5:
        return t.is_contiguous(memory_format=torch.channels_last_3d)
    return t.dim() == 3 and t.stride(1) == 1


def _torch():
    from numguard.candidates import resolve

    return resolve("torch")


@_replayed_as({"batch-independence": {}})
def check_batch_independence(candidate, case: Case, device: str) -> Comparison:
    """Sample i of a batch must be what the same sample gives alone."""
    x, w, b = case.make_inputs()
    full = _run(candidate, case, device, x.to(device).clone(), w, b)
    for i in range(x.shape[0]):
        sub_case = case.with_(shape=(1, *case.shape[1:]))
        xi = x[i : i + 1].clone()
        alone = _run(candidate, sub_case, device, xi.to(device), w, b)
        torch_i = _run(_torch(), sub_case, device, xi.to(device), w, b)
        for label, out in (("in the batch", full[i : i + 1]), ("alone", alone)):
            result = judge(out, torch_i, xi, w, b, sub_case,
                           Comparison(case=case, impl=candidate.spec))
            if not result.passed:
                result.notes.append(f"sample {i} of {x.shape[0]}, judged {label}")
                return result
    return Comparison(case=case, impl=candidate.spec)


@_replayed_as({"determinism": {}})
def check_determinism_and_stale_memory(candidate, case: Case, device: str) -> Comparison:
    """Repeated calls are bit-identical, also after poisoning freed memory with NaN
    and after a call with another shape in between."""
    x, w, b = case.make_inputs()
    module = build_module(candidate.build, case, device, w, b)
    result = Comparison(case=case, impl=candidate.spec)
    with torch.no_grad():
        first = module(x.to(device).clone())
        runs = {"a repeated call": module(x.to(device).clone())}
        _poison_allocator(first, device)
        runs["a call after freed memory was filled with NaN"] = module(x.to(device).clone())
        other = torch.randn(*case.shape[:-1], case.shape[-1] + 3, dtype=x.dtype)
        module(other.to(device))
        runs["a call after a call with another shape"] = module(x.to(device).clone())
    for label, out in runs.items():
        if not _bit_equal(first, out):
            diff = (first.double() - out.double()).abs().nan_to_num(float("inf"))
            where = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape))
            result.problem = (
                f"{label} changed the output: {int((diff != 0).sum())} of {diff.numel()} "
                f"elements differ, most at {where} ({float(first[where])} then "
                f"{float(out[where])})"
            )
            return result
    return result


def _poison_allocator(like: torch.Tensor, device: str) -> None:
    for scale in (1, 2, 4):
        junk = torch.full((like.numel() * scale + 64,), float("nan"), dtype=like.dtype,
                          device=device)
        del junk


def _bit_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(
        a.contiguous().view(-1).view(torch.uint8 if a.element_size() == 1 else _int_of(a)),
        b.contiguous().view(-1).view(torch.uint8 if b.element_size() == 1 else _int_of(b)),
    )


def _int_of(t: torch.Tensor) -> torch.dtype:
    return {2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]


@_replayed_as({"side-effects": {}})
def check_side_effects(candidate, case: Case, device: str) -> Comparison:
    """The input, weight and bias are bit-identical after the call."""
    x, w, b = case.make_inputs()
    module = build_module(candidate.build, case, device, w, b)
    xin = apply_layout(x.to(device).clone(), case.layout)
    before = {"input": xin.clone()}
    if case.affine:
        before.update(weight=module.weight.detach().clone(), bias=module.bias.detach().clone())
    with torch.no_grad():
        module(xin)
    after = {"input": xin}
    if case.affine:
        after.update(weight=module.weight.detach(), bias=module.bias.detach())
    result = Comparison(case=case, impl=candidate.spec)
    changed = [k for k in before if not _bit_equal(before[k], after[k])]
    if changed:
        result.problem = f"the call modified its {', '.join(changed)}"
    return result


# malformed calls: nn.GroupNorm raises, so must the candidate (num_groups,
# num_channels, input shape)
MALFORMED_CALLS = {
    "groups do not divide channels": (3, 8, (2, 8, 4)),
    "input channels differ from num_channels": (2, 8, (2, 6, 4)),
    "rank-1 input": (1, 4, (4,)),
}
# degenerate but well-defined calls: nn.GroupNorm rejects one-value groups, an
# empty batch gives an empty result; a candidate may refuse the first, and must
# otherwise return the oracle's answer
DEGENERATE_CASES = {
    "one value per group": Case((2, 4, 1), 4),
    "empty batch": Case((0, 4, 3), 2),
}


def check_bad_arguments(candidate, device: str) -> Comparison:
    """Malformed calls raise a Python exception as in nn.GroupNorm; degenerate
    calls are refused or answered correctly."""
    result = Comparison(case=Case((1, 1), 1), impl=candidate.spec, replayable=False)
    for name, (G, C, shape) in MALFORMED_CALLS.items():
        torch_raised = _raises(nn.GroupNorm, G, C, shape, device)
        if torch_raised and not _raises(candidate.build, G, C, shape, device):
            result.problem = (
                f"{name}: GroupNorm({G}, {C}) on input {shape} returned a result where "
                f"nn.GroupNorm raises ({torch_raised})"
            )
            return result
    for name, case in DEGENERATE_CASES.items():
        x, w, b = case.make_inputs()
        out, exc = call_module(candidate.build, case, device, w, b, x.to(device))
        if exc is not None and case.shape[0] == 0:
            refused = Comparison(case=case, impl=candidate.spec)
            refused.problem = f"{name}: raised {type(exc).__name__}: {exc}"
            return refused
        if exc is None:
            ref, _ = call_module(nn.GroupNorm, case.with_(shape=case.shape), device, w, b,
                                 x.to(device))
            judged = judge(out, ref, x, w, b, case, Comparison(case=case, impl=candidate.spec))
            if not judged.passed:
                judged.notes.append(f"degenerate call: {name}")
                return judged
    return result


def _raises(factory, G: int, C: int, shape, device: str) -> str:
    try:
        module = factory(G, C, eps=1e-5, affine=True, device=device, dtype=torch.float32)
        with torch.no_grad():
            module(torch.randn(shape, device=device))
    except Exception as exc:  # any Python exception is a clean refusal
        return f"{type(exc).__name__}: {exc}"
    return ""


@_replayed_as({"invariance": {}})
def check_invariances(candidate, case: Case, device: str) -> Comparison:
    """GroupNorm(x + c) = GroupNorm(x) and GroupNorm(2^k x, 4^k eps) = GroupNorm(x, eps).

    Inputs lie on a grid of 1/256 in [-8, 8] in fp32 so that x + 1024 and 2^k x are
    exact: the transformed call has exactly the same true answer, and the two
    outputs may differ by at most the sum of their allowances.
    """
    x, w, b = case.make_inputs()
    x = (x.double().clamp(-8, 8) * 256).round() / 256
    x = x.float()
    base_case = case.with_(dtype="float32", params="", autocast="")
    transforms = {"shifted by 1024": (x + 1024, base_case),
                  "scaled by 2^6 with eps x 4^6": (x * 64, base_case.with_(eps=case.eps * 4096)),
                  "scaled by 2^-6 with eps x 4^-6": (x / 64, base_case.with_(eps=case.eps / 4096))}
    w32 = None if w is None else w.float()
    b32 = None if b is None else b.float()
    base = _judged(candidate, base_case, device, x, w32, b32)
    for label, (xt, tcase) in transforms.items():
        moved = _judged(candidate, tcase, device, xt, w32, b32)
        for r in (base, moved):
            if not r[1].passed:
                r[1].notes.append(f"invariance check: input {label}")
                return r[1]
        diff = (base[0].double() - moved[0].double()).abs()
        bound = base[2] + moved[2]
        if bool((diff > bound).any()):
            res = Comparison(case=case, impl=candidate.spec)
            res.problem = (
                f"output changed when the input was {label}: max difference "
                f"{float(diff.max()):.3g} beyond the combined allowance"
            )
            return res
    return base[1]


def _judged(candidate, case, device, x, w, b):
    out = _run(candidate, case, device, x.to(device), w, b)
    ref = _run(_torch(), case, device, x.to(device), w, b)
    result = judge(out, ref, x, w, b, case, Comparison(case=case, impl=candidate.spec))
    allowed = result.allowed if result.allowed is not None else torch.zeros(x.shape)
    return out.cpu(), result, allowed


@_replayed_as({"finiteness": {}})
def check_finiteness(candidate, case: Case, device: str) -> Comparison:
    """Finite input gives finite output wherever the oracle's answer is finite.

    Only finiteness is judged here; accuracy on the same inputs is the stress
    domain's business.
    """
    result = run_case(candidate, case, device)
    verdict = Comparison(case=case, impl=candidate.spec, problem=result.problem)
    if result.nonfinite_disagreements:
        verdict.problem = (
            f"{result.nonfinite_disagreements} NaN/Inf outputs where the oracle is finite"
        )
    return verdict


# Tensors past 32-bit indexing (F-06, F-07): shape, dtype, groups.
LARGE_CASES = {
    "above-2^31-elements": ((1, 128, 16128, 1200), "bfloat16", 32),
    "above-2^32-elements": ((1, 256, 4096, 4200), "bfloat16", 32),
}


def large_case_bytes(shape, dtype: str) -> int:
    """Device memory a large-tensor check needs: input, candidate and torch outputs."""
    from numguard.cases import DTYPES

    return 3 * math.prod(shape) * torch.tensor([], dtype=DTYPES[dtype]).element_size()


def check_large_tail(candidate, name: str, device: str) -> Comparison:
    """Run a tensor above 2^31 or 2^32 elements; judge the last group of the output.

    The input is drawn on the device (a CPU draw of this size would not fit in
    memory) from a seeded generator; the oracle covers the last (sample, group),
    whose elements sit at the highest flat indices, where 32-bit offsets wrap.
    """
    from numguard.cases import DTYPES

    shape, dtype, G = LARGE_CASES[name]
    case = Case(shape, G, dtype=dtype, affine=True)
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(shape, generator=gen, device=device, dtype=DTYPES[dtype])
    C = shape[1]
    w = (1 + 0.5 * torch.randn(C, generator=gen, device=device)).to(DTYPES[dtype]).cpu()
    b = (0.5 * torch.randn(C, generator=gen, device=device)).to(DTYPES[dtype]).cpu()
    out = _run(candidate, case, device, x, w, b)
    ref = _run(_torch(), case, device, x, w, b)
    tail = slice(C - C // G, C)
    sub = case.with_(shape=(1, C // G, *shape[2:]), groups=1)
    x_t, out_t, ref_t = (t[-1:, tail].cpu() for t in (x, out, ref))
    result = judge(out_t, ref_t, x_t, w[tail], b[tail], sub,
                   Comparison(case=case, impl=candidate.spec, replayable=False))
    result.notes.append(f"{name}: judged the last group of a {shape} {dtype} tensor")
    return result
