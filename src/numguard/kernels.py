"""Reference GroupNorm kernels written in plain torch: correct ones and faulty ones.

Each kernel is a class with ``nn.GroupNorm``'s constructor signature, so any of them
can be handed to ``numguard verify --impl numguard.kernels:Name``. The correct
kernels compute the statistics by different algorithms from PyTorch's own, which
makes them independent witnesses that the tolerance policy does not reject honest
rounding; the faulty kernels each carry one fault seen in real GroupNorm kernels and
must be rejected.
"""

from __future__ import annotations

import torch
from torch import nn


class _StatsGroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics come from ``stats(xg) -> (mean, var)``.

    ``xg`` is the input as (N, G, m) in the compute dtype; the normalisation and
    affine are applied in that dtype and the result is cast back to the input dtype.
    """

    compute_dtype = torch.float32

    def stats(self, xg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, C = x.shape[:2]
        G = self.num_groups
        xg = x.to(self.compute_dtype).reshape(N, G, -1)
        mean, var = self.stats(xg)
        y = ((xg - mean) * torch.rsqrt(var + self.eps)).reshape(x.shape)
        if self.affine:
            per_channel = (1, C) + (1,) * (x.dim() - 2)
            w = self.weight.to(self.compute_dtype).reshape(per_channel)
            b = self.bias.to(self.compute_dtype).reshape(per_channel)
            y = y * w + b
        return y.to(x.dtype)


class Float64GroupNorm(_StatsGroupNorm):
    """Correct: everything in float64, cast back to the input dtype."""

    compute_dtype = torch.float64

    def stats(self, xg):
        mean = xg.mean(-1, keepdim=True)
        return mean, (xg - mean).square().mean(-1, keepdim=True)


class TwoPassGroupNorm(_StatsGroupNorm):
    """Correct: fp32 mean, then fp32 mean of squared deviations."""

    def stats(self, xg):
        mean = xg.sum(-1, keepdim=True) / xg.shape[-1]
        return mean, (xg - mean).square().sum(-1, keepdim=True) / xg.shape[-1]


class ChunkedWelfordGroupNorm(_StatsGroupNorm):
    """Correct: fp32 Welford over chunks of 64, merged with Chan's update."""

    chunk = 64

    def stats(self, xg):
        count = 0
        mean = torch.zeros_like(xg[..., :1])
        m2 = torch.zeros_like(mean)
        for start in range(0, xg.shape[-1], self.chunk):
            block = xg[..., start : start + self.chunk]
            n_b = block.shape[-1]
            mean_b = block.mean(-1, keepdim=True)
            m2_b = (block - mean_b).square().sum(-1, keepdim=True)
            delta = mean_b - mean
            total = count + n_b
            mean = mean + delta * (n_b / total)
            m2 = m2 + m2_b + delta.square() * (count * n_b / total)
            count = total
        return mean, m2 / max(count, 1)


class OnePassVarianceGroupNorm(_StatsGroupNorm):
    """Faulty: var = E[x^2] - mean^2 in fp32, which cancels when |mean| >> std."""

    def stats(self, xg):
        mean = xg.mean(-1, keepdim=True)
        return mean, xg.square().mean(-1, keepdim=True) - mean.square()


class BesselVarianceGroupNorm(_StatsGroupNorm):
    """Faulty: unbiased variance (divides by m - 1) instead of GroupNorm's m."""

    def stats(self, xg):
        return xg.mean(-1, keepdim=True), xg.var(-1, keepdim=True, unbiased=True)
