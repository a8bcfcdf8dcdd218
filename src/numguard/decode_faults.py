"""GroupNorm faults that only a whole decode shows: the golden tier's own witnesses.

``numguard calibrate`` injects ``scale_output`` into one decoder GroupNorm at a time
to find the detection limit; ``LargeGroupScaledGroupNorm`` is the same fault as a
candidate kernel, so ``numguard verify`` can be shown to fail it.
"""

from __future__ import annotations

import torch
from torch import nn

# Groups larger than this take the faulty path of LargeGroupScaledGroupNorm.
LARGE_GROUP = 2**18


class LargeGroupScaledGroupNorm(nn.GroupNorm):
    """Faulty: groups of more than 2**18 elements come out scaled by 1.001.

    It stands for a kernel whose separate path for large groups is off by 0.1%.
    Small inputs (the swap's preflight probe, the property tier's cases) never
    reach that path. In the Z-Image-Turbo decoder at 256x256 exactly one GroupNorm
    does: ``decoder.up_blocks.3.resnets.0.norm1``, with 8 channels x 256 x 256 =
    524,288 elements per group (every other group holds 262,144 or fewer).
    """

    factor = 1.001

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        if x.shape[1:].numel() // self.num_groups > LARGE_GROUP:
            return scale(y, self.factor)
        return y


def scale(y: torch.Tensor, factor: float) -> torch.Tensor:
    """``y * factor`` computed in float32 and rounded back to ``y``'s dtype.

    In bf16 the factor 1.001 itself would round to 1.0.
    """
    return (y.float() * factor).to(y.dtype)


def scale_output(module: nn.Module, factor: float):
    """Scale ``module``'s output by ``factor``; returns the hook handle to remove it."""
    return module.register_forward_hook(lambda mod, args, out: scale(out, factor))
