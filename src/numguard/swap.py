"""Replace every ``nn.GroupNorm`` of a model with a candidate, sharing parameters.

The replacement receives the original ``weight`` and ``bias`` Parameter objects
(same tensors, same storage, no copy), so ``state_dict()`` is unchanged and
checkpoints keep loading. Construction of all replacements happens before any
module is touched, so a candidate that fails to build leaves the model as it was.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from torch import nn

log = logging.getLogger(__name__)


@dataclass
class SwapReport:
    """What ``swap_groupnorm`` did: names swapped, and the originals to restore."""

    swapped: list[str] = field(default_factory=list)
    originals: dict[str, nn.Module] = field(default_factory=dict)
    root: nn.Module | None = None

    @property
    def count(self) -> int:
        return len(self.swapped)

    def restore(self) -> None:
        """Put the original modules back."""
        for name, module in self.originals.items():
            _set_submodule(self.root, name, module)
        self.swapped.clear()
        self.originals.clear()


def swap_groupnorm(model: nn.Module, candidate) -> SwapReport:
    """Swap each ``nn.GroupNorm`` in ``model`` for ``candidate.build(...)``."""
    plan = {}
    for name, module in model.named_modules():
        if type(module) is nn.GroupNorm or (
            isinstance(module, nn.GroupNorm) and not hasattr(module, "_numguard_swapped")
        ):
            plan[name] = (module, _build_replacement(candidate, module))
    report = SwapReport(root=model)
    for name, (original, replacement) in plan.items():
        _set_submodule(model, name, replacement)
        report.swapped.append(name)
        report.originals[name] = original
    log.info("swapped %d GroupNorm modules for %s", report.count, candidate.spec)
    return report


def _build_replacement(candidate, gn: nn.GroupNorm) -> nn.Module:
    device = gn.weight.device if gn.affine else None
    dtype = gn.weight.dtype if gn.affine else None
    new = candidate.build(
        gn.num_groups, gn.num_channels, eps=gn.eps, affine=gn.affine,
        device=device, dtype=dtype,
    )
    if gn.affine:
        new.weight = gn.weight
        new.bias = gn.bias
    new._numguard_swapped = True
    return new.train(gn.training)


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)
