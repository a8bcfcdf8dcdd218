"""Stands in for ``aiter.ops.groupnorm``: aiter's Python interface, in plain torch.

It mirrors what aiter publishes, so code written against aiter runs here too:

- ``GroupNorm`` is a ``torch.nn.Module``, not an ``nn.GroupNorm``; its constructor
  takes ``nn.GroupNorm``'s arguments but stores ``num_groups``, ``eps`` and
  ``affine`` only (no ``num_channels``), and registers ``weight`` (ones) and
  ``bias`` (zeros) when affine, else both as None;
- ``forward(x, use_torch=False)`` falls back to ``F.group_norm`` when ``use_torch``
  is set or the module is not affine;
- otherwise ``groupnorm_run`` makes the input contiguous (a channels_last input
  gives a contiguous output), computes the variance in one pass in fp32 as
  E[x^2] - mean^2, reads weight and bias as the input's dtype without checking
  their own (a reinterpretation of their bytes), and has no backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GroupNorm(nn.Module):
    """aiter's GroupNorm module: nn.GroupNorm's arguments, aiter's forward."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5,
                 affine: bool = True, device=None, dtype=None):
        super().__init__()
        self.num_groups = num_groups
        self.eps = eps
        self.affine = affine
        if affine:
            kwargs = dict(device=device, dtype=dtype)
            self.weight = nn.Parameter(torch.ones(num_channels, **kwargs))
            self.bias = nn.Parameter(torch.zeros(num_channels, **kwargs))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor, use_torch: bool = False) -> torch.Tensor:
        if use_torch or not self.affine:
            return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        return groupnorm_run(x, self.num_groups, self.weight, self.bias, self.eps)


@torch.no_grad()
def groupnorm_run(x, num_groups, weight, bias, eps):
    """One-pass fp32 statistics, affine in fp32, output contiguous in x's dtype."""
    x = x.contiguous()
    N, C = x.shape[:2]
    xg = x.reshape(N, num_groups, -1).float()
    mean = xg.mean(-1, keepdim=True)
    var = xg.square().mean(-1, keepdim=True) - mean.square()
    y = ((xg - mean) * torch.rsqrt(var + eps)).reshape(N, C, -1)
    w = _as_input_dtype(weight, x).float().reshape(1, C, 1)
    b = _as_input_dtype(bias, x).float().reshape(1, C, 1)
    return (y * w + b).to(x.dtype).reshape(x.shape)


def _as_input_dtype(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The first C values of ``p``'s bytes read as ``x.dtype``, as the kernel does.

    Bytes past the end of a narrower parameter read as zeros here.
    """
    C = x.shape[1]
    raw = p.detach().contiguous().view(torch.uint8)
    need = C * x.element_size()
    if raw.numel() < need:
        raw = torch.cat([raw, raw.new_zeros(need - raw.numel())])
    return raw[:need].view(x.dtype)
