"""Swap every ``nn.GroupNorm`` of a live model for a candidate kernel, safely.

``swap_groupnorm(model, impl)`` does what serving stacks do to enable a faster
GroupNorm (walk the module tree, build the candidate with each module's arguments,
hand it the original ``weight`` and ``bias`` Parameters, put it in the module's
place) and adds what makes that safe on a loaded model:

- zero copies: the replacement holds the very same Parameter objects, so
  ``state_dict()`` keeps its keys and tensors and checkpoints still load;
- device, dtype, training mode and hooks carry over; the replacement shares the
  original's hook dictionaries, so a handle taken before the swap still removes
  its hook;
- a preflight: every distinct configuration (groups, channels, eps, affine, dtype,
  device) runs once on a small probe and is judged against the original module by
  numguard's tolerance policy, so a kernel that does not build or computes wrong
  numbers is caught at load time rather than in the middle of a decode;
- atomicity: every replacement is built and preflighted before the model is
  touched; on any failure the model is left exactly as it was and the report says
  why;
- idempotence and reversal: modules made by a swap carry a mark and are never
  swapped again, and ``SwapReport.restore()`` puts the originals back.

Example:
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(3, 64, 3), nn.GroupNorm(32, 64))
    >>> report = swap_groupnorm(model, "torch-channels-last")
    >>> report.status, report.count, type(model[1]).__name__
    ('swapped', 1, 'ChannelsLastGroupNorm')
    >>> report.restore()
    >>> type(model[1]).__name__
    'GroupNorm'
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import parametrize

from numguard.candidates import Candidate, resolve
from numguard.cases import DTYPES, Case, apply_layout, normal
from numguard.compare import Comparison, judge

log = logging.getLogger(__name__)

SWAP_ENV_VAR = "NUMGUARD_SWAP_GROUPNORM"
ENV_OFF = ("", "0", "false", "no", "off")
ENV_ON = ("1", "true", "yes", "on")
ENV_DEFAULT_IMPL = "aiter"  # what "1" means: the kernel serving stacks swap in

# swapped: at least one module replaced; unchanged: nothing to replace;
# failed: a build or the preflight failed, the model is as it was;
# unavailable: the candidate cannot run here; disabled: the switch is off.
STATUSES = ("swapped", "unchanged", "failed", "unavailable", "disabled")

# The probe is (PROBE_BATCH, C, PROBE_SIDE, PROBE_SIDE), drawn on the CPU in float64
# from PROBE_DIST with PROBE_SEED and cast to the module's dtype. The offset of one
# standard deviation sits above the largest |mean|/std of any group, 0.78, measured
# at the 52 GroupNorm inputs of the synthetic Z-Image-Turbo VAE decoding 256x256
# and encoding 128x128. At this offset (C 128/256/512, G 32, eps 1e-6, float32,
# float16 and bfloat16, both layouts, seeds 0-2) correct kernels reach an error
# ratio of at most 0.29 (chunked Welford) and one-pass variance 0.27, while Bessel
# variance reaches 1.6e3, an output scaled by 1.001 1.3e3 and eps 1e-5 in place of
# 1e-6 4.4; so the probe passes honest rounding and catches wrong arithmetic.
PROBE_BATCH = 2
PROBE_SIDE = 8
PROBE_DIST = normal(mean=1.0, std=1.0)
PROBE_SEED = 0
PROBE_LAYOUTS = ("contiguous", "channels_last")

# The dtypes aiter's kernel dispatches on; it reads weight and bias as the input's
# dtype without checking them.
AITER_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

_MARK = "_numguard_swapped"
_HOOK_DICTS = (
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_backward_pre_hooks",
    "_backward_hooks",
    "_state_dict_pre_hooks",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)


class SwapError(RuntimeError):
    """A swap that was asked for did not happen; the message says why."""


@dataclass(frozen=True)
class GroupNormConfig:
    """What a preflight probe depends on: one probe per distinct configuration."""

    groups: int
    channels: int
    eps: float
    affine: bool
    dtype: torch.dtype
    device: torch.device

    def __str__(self) -> str:
        return (
            f"groups={self.groups} channels={self.channels} eps={self.eps:g} "
            f"affine={int(self.affine)} dtype={_dtype_name(self.dtype)} "
            f"device={self.device}"
        )


@dataclass
class PreflightResult:
    """One configuration's probe: the modules it stands for and its comparisons."""

    config: GroupNormConfig
    modules: list[str] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)  # one per layout
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.comparisons)

    @property
    def error_ratio(self) -> float:
        """Worst error/allowed ratio over the layouts; at most 1 passes."""
        return max((c.error_ratio for c in self.comparisons), default=0.0)

    @property
    def max_abs(self) -> float:
        return max((c.max_abs for c in self.comparisons), default=0.0)

    def headline(self) -> str:
        """One line: configuration, modules, and what went wrong with the figures."""
        failed = [c for c in self.comparisons if not c.passed]
        layouts = ", ".join(c.case.layout for c in failed)
        problems = [c.problem for c in failed if c.problem]
        what = problems[0] if problems else (
            f"error/allowed ratio {self.error_ratio:.3g}, greatest absolute "
            f"difference {self.max_abs:.3g}"
        )
        return (
            f"preflight of {self.config} failed for {len(self.modules)} module(s) "
            f"({_names(self.modules)}) on the {layouts} probe: {what}"
        )

    def message(self) -> str:
        """Failure text: the headline, then each failed comparison in full."""
        failed = [c.message() for c in self.comparisons if not c.passed]
        return "\n".join([self.headline(), *failed])


@dataclass
class SwapReport:
    """What ``swap_groupnorm`` did, and the handle to undo it."""

    impl: str
    scopes: tuple[str, ...] = ("",)  # "" is the whole model
    status: str = "unchanged"  # one of STATUSES
    failure: str = ""  # why a failed or unavailable swap did not happen
    note: str = ""  # why a disabled swap did not happen
    swapped: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # module name -> reason
    already_swapped: list[str] = field(default_factory=list)
    preflight: list[PreflightResult] = field(default_factory=list)
    preflight_seconds: float = 0.0
    restored: bool = False
    _root: nn.Module | None = field(default=None, repr=False)
    _originals: dict[str, nn.Module] = field(default_factory=dict, repr=False)
    _replacements: dict[str, nn.Module] = field(default_factory=dict, repr=False)

    @property
    def count(self) -> int:
        return len(self.swapped)

    def per_scope(self) -> dict[str, int]:
        """Swapped count per scope; for the whole model, per top-level child."""
        counts: dict[str, int] = {}
        for name in self.swapped:
            key = _scope_of(name, self.scopes)
            counts[key] = counts.get(key, 0) + 1
        return counts

    def raise_on_failure(self) -> SwapReport:
        """Raise SwapError if the swap failed or could not run; return self."""
        if self.status in ("failed", "unavailable"):
            raise SwapError(
                f"GroupNorm swap for {self.impl!r} {self.status}: {self.failure}"
            )
        return self

    def restore(self) -> None:
        """Put the original modules back where the swap left its replacements.

        A place that was changed again after the swap is left alone, with a warning.
        Hooks registered on a replacement stay on the original, since both share
        the same hook dictionaries.
        """
        if self.restored or self._root is None:
            return
        for name, original in self._originals.items():
            current = _get_submodule(self._root, name)
            if current is not self._replacements[name]:
                log.warning(
                    "not restoring %s: it holds %s, not the module the swap put there",
                    name, type(current).__name__,
                )
                continue
            _set_submodule(self._root, name, original)
        self.restored = True
        self._originals, self._replacements = {}, {}


@dataclass
class _Slot:
    """One original module, every name it is reachable under, and its replacement."""

    original: nn.GroupNorm
    config: GroupNormConfig
    names: list[str] = field(default_factory=list)
    replacement: nn.Module | None = None


def swap_groupnorm(
    model: nn.Module,
    impl: str | Candidate | Callable[..., nn.Module],
    *,
    scope: str | Sequence[str] | None = None,
    preflight: bool = True,
) -> SwapReport:
    """Replace each supported ``nn.GroupNorm`` in ``model`` with ``impl``'s module.

    Args:
        model: the live model; it is changed in place, or not at all.
        impl: a candidate spec (``"aiter"``, ``"torch-compile"``, ``"pkg.mod:Cls"``,
            see ``numguard.candidates``), a resolved ``Candidate``, or a class or
            factory taking ``nn.GroupNorm``'s constructor arguments.
        scope: submodule name(s) to walk, e.g. ``"decoder"``; None walks the model.
        preflight: probe each distinct configuration before swapping (see the
            module doc); without it nothing checks the numbers.

    Returns:
        A ``SwapReport``. A candidate that is unavailable, fails to build or fails
        the preflight gives status ``unavailable`` or ``failed`` with the reason
        in ``failure``, and leaves the model untouched; it does not raise.

    Raises:
        TypeError, ValueError, numguard.candidates.CandidateError: for arguments
        that are wrong (not a module, an unknown scope, a malformed spec).
    """
    scopes = _check_scopes(model, scope)
    candidate = _as_candidate(impl)
    report = SwapReport(impl=candidate.spec, scopes=scopes)
    if not candidate.available:
        return _fail(report, "unavailable", candidate.unavailable_reason)
    slots = _survey(model, candidate, preflight, report)
    if not _build_all(slots, candidate, report):
        return report
    if preflight and not _preflight_all(slots, candidate.spec, report):
        return report
    _commit(model, slots, report)
    _log_summary(report)
    return report


def maybe_swap_from_env(
    model: nn.Module,
    *,
    env_var: str = SWAP_ENV_VAR,
    scope: str | Sequence[str] | None = None,
    preflight: bool = True,
) -> SwapReport:
    """Swap GroupNorm when ``env_var`` asks for it; never raise into serving code.

    Off when the variable is unset or one of ``0 false no off``. ``1 true yes on``
    pick ``aiter``; any other value is a candidate spec (``aiter``,
    ``torch-compile``, ``pkg.mod:Cls``). The swap applies only where the candidate
    is available; anything that goes wrong is logged as a warning and returned in
    the report, with the model unchanged.
    """
    value = os.environ.get(env_var, "").strip()
    if value.lower() in ENV_OFF:
        note = f"{env_var} is {value!r}" if value else f"{env_var} is not set"
        return SwapReport(impl="", status="disabled", note=note)
    spec = ENV_DEFAULT_IMPL if value.lower() in ENV_ON else value
    try:
        return swap_groupnorm(model, spec, scope=scope, preflight=preflight)
    except Exception as exc:  # a serving process must keep running on torch
        reason = f"{env_var}={value!r}: {type(exc).__name__}: {exc}"
        return _fail(SwapReport(impl=spec), "failed", reason)


def _as_candidate(impl) -> Candidate:
    if isinstance(impl, Candidate):
        return impl
    if isinstance(impl, str):
        return resolve(impl)
    if callable(impl):
        module = getattr(impl, "__module__", "?")
        name = f"{module}:{getattr(impl, '__qualname__', repr(impl))}"
        return Candidate(name, name, impl)
    raise TypeError(
        f"impl must be a candidate spec, a numguard.candidates.Candidate or a "
        f"GroupNorm class, got {type(impl).__name__}"
    )


def _check_scopes(model: nn.Module, scope) -> tuple[str, ...]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if scope is None:
        return ("",)
    names = (scope,) if isinstance(scope, str) else tuple(scope)
    if not names:
        raise ValueError("scope is empty; pass None for the whole model, or 'decoder'")
    for name in names:
        try:
            model.get_submodule(name)
        except AttributeError:
            children = ", ".join(n for n, _ in model.named_children()) or "none"
            raise ValueError(
                f"scope {name!r} names no submodule of {type(model).__name__}; "
                f"its children are: {children}"
            ) from None
    return names


def _survey(model, candidate, preflight: bool, report: SwapReport) -> list[_Slot]:
    """Find the modules to swap; record the skipped and the already swapped."""
    slots: dict[int, _Slot] = {}
    for name, module in _walk(model, report.scopes):
        if getattr(module, _MARK, False):
            report.already_swapped.append(name)
            continue
        if not isinstance(module, nn.GroupNorm):
            continue
        config = _config(model, name, module)
        reason = _unsupported(name, module, config, candidate, preflight)
        if reason:
            report.skipped[name] = reason
            log.warning("not swapping %s for %r: %s", name, candidate.spec, reason)
            continue
        slots.setdefault(id(module), _Slot(module, config)).names.append(name)
    return list(slots.values())


def _walk(model: nn.Module, scopes: tuple[str, ...]) -> Iterator[tuple[str, nn.Module]]:
    """(full name, module) under each scope, every name of a shared module, once."""
    seen = set()
    for scope in scopes:
        top = model.get_submodule(scope)
        for name, module in top.named_modules(remove_duplicate=False):
            full = ".".join(part for part in (scope, name) if part)
            if full not in seen:
                seen.add(full)
                yield full, module


def _config(model: nn.Module, name: str, gn: nn.GroupNorm) -> GroupNormConfig:
    device, dtype = _placement(model, name, gn)
    return GroupNormConfig(
        gn.num_groups, gn.num_channels, gn.eps, gn.affine, dtype, device
    )


def _placement(model: nn.Module, name: str, gn: nn.GroupNorm):
    """(device, dtype) of the module: its weight's, else its nearest owner's."""
    if gn.affine:
        return gn.weight.device, gn.weight.dtype
    parts = name.split(".")
    for depth in range(len(parts) - 1, -1, -1):
        owner = model.get_submodule(".".join(parts[:depth]))
        tensors = itertools.chain(owner.parameters(), owner.buffers())
        found = next((t for t in tensors if t.is_floating_point()), None)
        if found is not None:
            return found.device, found.dtype
    return torch.device("cpu"), torch.get_default_dtype()


def _unsupported(name, gn, config, candidate, preflight: bool) -> str:
    """Why ``gn`` cannot be swapped for ``candidate``; "" when it can."""
    if not name:
        return "the model itself is a GroupNorm; swap modules inside a model"
    if parametrize.is_parametrized(gn):
        return "its weight is parametrized, so it has no Parameter to share"
    if type(gn) is not nn.GroupNorm:
        kind = type(gn).__qualname__
        return f"{kind} subclasses nn.GroupNorm; its own forward would be lost"
    if gn.affine and not (_is_param(gn.weight) and _is_param(gn.bias)):
        return "affine, but weight or bias is not a Parameter"
    reason = _aiter_unsupported(gn, config) if _is_aiter(candidate) else ""
    if reason or not preflight or config.dtype in DTYPES.values():
        return reason
    known = ", ".join(DTYPES)
    return (
        f"dtype {_dtype_name(config.dtype)}: the preflight has tolerances for {known} "
        f"only; pass preflight=False to swap it unchecked"
    )


def _is_aiter(candidate: Candidate) -> bool:
    module = getattr(candidate.factory, "__module__", None) or ""
    return module.split(".")[0] == "aiter"


def _aiter_unsupported(gn: nn.GroupNorm, config: GroupNormConfig) -> str:
    if not gn.affine:
        return "affine=False: aiter's forward falls back to F.group_norm for it"
    if config.dtype not in AITER_DTYPES:
        return (
            f"dtype {_dtype_name(config.dtype)}: aiter's kernel handles float32, "
            f"float16 and bfloat16 only"
        )
    if gn.bias.dtype != gn.weight.dtype:
        return (
            f"weight is {_dtype_name(gn.weight.dtype)} but bias is "
            f"{_dtype_name(gn.bias.dtype)}: aiter reads both as the input's dtype"
        )
    if gn.training and (gn.weight.requires_grad or gn.bias.requires_grad):
        return "in training mode with trainable parameters: aiter has no backward"
    return ""


def _build_all(slots: list[_Slot], candidate: Candidate, report: SwapReport) -> bool:
    """Build every replacement; stop at the first failure. The model is untouched."""
    for slot in slots:
        try:
            slot.replacement = _build(candidate, slot)
        except Exception as exc:  # a candidate may fail any way; report, never crash
            reason = (
                f"building the replacement of {slot.names[0]} ({slot.config}) raised "
                f"{type(exc).__name__}: {exc}"
            )
            _fail(report, "failed", reason)
            return False
    return True


def _build(candidate: Candidate, slot: _Slot) -> nn.Module:
    gn, config = slot.original, slot.config
    new = candidate.build(
        gn.num_groups, gn.num_channels, eps=gn.eps, affine=gn.affine,
        device=config.device, dtype=config.dtype,
    )
    if not isinstance(new, nn.Module):
        raise TypeError(f"the candidate built a {type(new).__name__}, not an nn.Module")
    if gn.affine:
        new.weight = gn.weight
        new.bias = gn.bias
    _check_state(gn, new)
    _share_hooks(gn, new)
    new.train(gn.training)
    setattr(new, _MARK, True)
    return new


def _check_state(gn: nn.GroupNorm, new: nn.Module) -> None:
    """The replacement's state_dict must hold exactly the original's Parameters."""
    expected = dict(gn.named_parameters())
    got = new.state_dict(keep_vars=True)
    if got.keys() != expected.keys() or any(got[k] is not expected[k] for k in got):
        raise ValueError(
            f"the replacement's state_dict would hold {sorted(got)} instead of the "
            f"original's Parameters {sorted(expected)}, so checkpoints would not load"
        )


def _share_hooks(gn: nn.Module, new: nn.Module) -> None:
    for name in _HOOK_DICTS:
        if hasattr(gn, name):
            object.__setattr__(new, name, getattr(gn, name))
    if hasattr(gn, "_is_full_backward_hook"):
        object.__setattr__(new, "_is_full_backward_hook", gn._is_full_backward_hook)


def _preflight_all(slots: list[_Slot], spec: str, report: SwapReport) -> bool:
    """Probe one module of each configuration; fail the swap if any probe fails."""
    start = time.perf_counter()
    by_config: dict[GroupNormConfig, list[_Slot]] = {}
    for slot in slots:
        by_config.setdefault(slot.config, []).append(slot)
    for config, group in by_config.items():
        result = _probe(group[0], spec)
        result.modules = [name for slot in group for name in slot.names]
        report.preflight.append(result)
    report.preflight_seconds = time.perf_counter() - start
    failed = [result for result in report.preflight if not result.passed]
    for result in failed:
        log.warning(
            "GroupNorm swap for %r failed, the model is unchanged: %s",
            spec, result.headline(),
        )
    if failed:
        report.status = "failed"
        report.failure = "\n\n".join(result.message() for result in failed)
    return not failed


def _probe(slot: _Slot, spec: str) -> PreflightResult:
    result = PreflightResult(slot.config)
    for layout in PROBE_LAYOUTS:
        comparison, note = _probe_layout(slot, spec, layout)
        result.comparisons.append(comparison)
        if note:
            result.notes.append(note)
            log.debug("%s: %s", slot.config, note)
    return result


def _probe_layout(slot: _Slot, spec: str, layout: str) -> tuple[Comparison, str]:
    """Judge the replacement on the probe in ``layout`` against the original.

    The original always receives the contiguous probe, as in ``run_case``. Returns
    the comparison and a note when the output's memory format differs.
    """
    config = slot.config
    case = _probe_case(config, layout)
    result = Comparison(case=case, impl=spec, device=str(config.device))
    x, _, _ = case.make_inputs()
    try:
        expected = _run(slot.original, x.to(config.device))
    except Exception as exc:
        result.problem = (
            f"the original nn.GroupNorm raised on the probe: "
            f"{type(exc).__name__}: {exc}"
        )
        return result, ""
    try:
        got = _run(slot.replacement, apply_layout(x.to(config.device), layout))
        judge(got, expected, x, *_cpu_params(slot.original), case, result)
    except Exception as exc:  # a candidate may fail any way; report, never crash
        result.problem = f"raised {type(exc).__name__}: {exc}"
        return result, ""
    if config.affine:
        result.notes.append(
            "The probe used the module's own weight and bias; the replay draws its own."
        )
    return result, _layout_note(got, layout)


def _probe_case(config: GroupNormConfig, layout: str) -> Case:
    shape = (PROBE_BATCH, config.channels, PROBE_SIDE, PROBE_SIDE)
    return Case(
        shape=shape, groups=config.groups, dtype=_dtype_name(config.dtype),
        eps=config.eps, affine=config.affine, layout=layout, dist=PROBE_DIST,
        seed=PROBE_SEED,
    )


def _run(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # forward() directly: hooks on the model must not see the probe
    with torch.no_grad():
        out = module.forward(x)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"forward returned a {type(out).__name__}, not a tensor")
    return out


def _cpu_params(gn: nn.GroupNorm):
    if not gn.affine:
        return None, None
    return gn.weight.detach().cpu(), gn.bias.detach().cpu()


def _layout_note(out: torch.Tensor, layout: str) -> str:
    if layout != "channels_last":
        return ""
    if out.is_contiguous(memory_format=torch.channels_last):
        return ""
    return (
        "returns a contiguous, not channels_last, output for a channels_last input; "
        "a channels_last model pays a layout copy after each swapped module"
    )


def _commit(model: nn.Module, slots: list[_Slot], report: SwapReport) -> None:
    """Put every replacement in place; undo the ones placed if any placement fails."""
    done: list[tuple[str, nn.Module]] = []
    try:
        for slot in slots:
            for name in slot.names:
                _set_submodule(model, name, slot.replacement)
                done.append((name, slot.original))
                report._replacements[name] = slot.replacement
    except BaseException:
        for name, original in reversed(done):
            _set_submodule(model, name, original)
        raise
    report._root = model
    report._originals = dict(done)
    report.swapped = [name for name, _ in done]
    report.status = "swapped" if done else "unchanged"


def _fail(report: SwapReport, status: str, reason: str) -> SwapReport:
    report.status, report.failure = status, reason
    log.warning(
        "GroupNorm swap for %r %s, the model is unchanged: %s",
        report.impl, status, reason,
    )
    return report


def _log_summary(report: SwapReport) -> None:
    counts = report.per_scope().items()
    per_scope = ", ".join(f"{scope or 'model'} {n}" for scope, n in counts)
    log.info(
        "swapped %d GroupNorm modules for %r (%s); %d skipped, %d already swapped; "
        "preflight of %d configurations took %.2f s",
        report.count, report.impl, per_scope or "none", len(report.skipped),
        len(report.already_swapped), len(report.preflight), report.preflight_seconds,
    )


def _scope_of(name: str, scopes: tuple[str, ...]) -> str:
    if scopes == ("",):
        return name.split(".")[0]
    return next(s for s in scopes if name == s or name.startswith(f"{s}.") or not s)


def _get_submodule(root: nn.Module, name: str) -> nn.Module | None:
    try:
        return root.get_submodule(name)
    except AttributeError:  # its parent was removed after the swap
        return None


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def _is_param(p) -> bool:
    return isinstance(p, nn.Parameter)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _names(names: list[str], shown: int = 3) -> str:
    text = ", ".join(names[:shown])
    return f"{text} and {len(names) - shown} more" if len(names) > shown else text
