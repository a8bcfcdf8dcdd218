"""Example candidate GroupNorms, written as a kernel author would hand them to numguard.

    numguard verify --impl examples/candidates.py:Float64GroupNorm   # passes
    numguard verify --impl examples/candidates.py:OnePassGroupNorm   # fails
    numguard verify --impl examples/candidates.py:BesselGroupNorm    # fails

A candidate is any class or function taking nn.GroupNorm's constructor arguments
and returning a module with ``weight``/``bias`` (when affine) and ``forward(x)``.
"""

import torch
import torch.nn.functional as F
from torch import nn


class Float64GroupNorm(nn.GroupNorm):
    """Correct: PyTorch's GroupNorm evaluated in float64, cast back."""

    def forward(self, x):
        w = None if self.weight is None else self.weight.double()
        b = None if self.bias is None else self.bias.double()
        return F.group_norm(x.double(), self.num_groups, w, b, self.eps).to(x.dtype)


def _normalise(module, x, mean, var):
    shape = x.shape
    xg = x.float().reshape(shape[0], module.num_groups, -1)
    y = ((xg - mean) / torch.sqrt(var + module.eps)).reshape(shape)
    if module.affine:
        view = (1, -1) + (1,) * (x.dim() - 2)
        y = y * module.weight.float().view(view) + module.bias.float().view(view)
    return y.to(x.dtype)


class OnePassGroupNorm(nn.GroupNorm):
    """Faulty: variance as E[x^2] - mean^2 in fp32 (cancels at large |mean|/std)."""

    def forward(self, x):
        xg = x.float().reshape(x.shape[0], self.num_groups, -1)
        mean = xg.mean(-1, keepdim=True)
        var = (xg * xg).mean(-1, keepdim=True) - mean * mean
        return _normalise(self, x, mean, var)


class BesselGroupNorm(nn.GroupNorm):
    """Faulty: unbiased (Bessel-corrected) variance, dividing by m - 1."""

    def forward(self, x):
        xg = x.float().reshape(x.shape[0], self.num_groups, -1)
        return _normalise(self, x, xg.mean(-1, keepdim=True), xg.var(-1, keepdim=True))
