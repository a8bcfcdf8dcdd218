"""Reference GroupNorm kernels written in plain torch: correct ones and faulty ones.

Each kernel is a class with ``nn.GroupNorm``'s constructor signature, so any of them
can be handed to ``numguard verify --impl numguard.kernels:Name``. The correct
kernels compute the statistics by different algorithms from PyTorch's own, which
makes them independent witnesses that the tolerance policy does not reject honest
rounding; the faulty kernels each carry one fault seen in real GroupNorm kernels and
must be rejected.
"""

from __future__ import annotations

import math

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
        xg = x.to(self.compute_dtype).reshape(N, G, math.prod(x.shape[1:]) // G)
        if xg.numel() == 0:
            return x.clone()
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
    """Correct: fp32 Welford statistics per chunk of 64, merged pairwise (Chan et al.).

    The tree of merges is how a GPU kernel combines per-thread partial statistics.
    """

    chunk = 64

    def stats(self, xg):
        m = xg.shape[-1]
        K = -(-m // self.chunk)
        padded = torch.zeros(*xg.shape[:-1], K * self.chunk, dtype=xg.dtype, device=xg.device)
        padded[..., :m] = xg
        mask = torch.zeros(K * self.chunk, dtype=xg.dtype, device=xg.device)
        mask[:m] = 1
        blocks = padded.reshape(*xg.shape[:-1], K, self.chunk)
        mask = mask.reshape(K, self.chunk)
        count = mask.sum(-1).expand(blocks.shape[:-1])
        mean = blocks.sum(-1) / count
        m2 = ((blocks - mean.unsqueeze(-1)).square() * mask).sum(-1)
        while count.shape[-1] > 1:
            count, mean, m2 = _merge_pairs(count, mean, m2)
        return mean, m2 / count


def _merge_pairs(count, mean, m2):
    """Merge neighbouring partial (count, mean, M2) triples along the last dim."""
    if count.shape[-1] % 2:
        count, mean, m2 = (torch.cat([t, torch.zeros_like(t[..., :1])], -1)
                           for t in (count, mean, m2))
    na, nb = count[..., 0::2], count[..., 1::2]
    n = na + nb
    delta = mean[..., 1::2] - mean[..., 0::2]
    share = torch.where(n > 0, nb / n.clamp(min=1), torch.zeros_like(n))
    merged_mean = mean[..., 0::2] + delta * share
    merged_m2 = m2[..., 0::2] + m2[..., 1::2] + delta.square() * na * share
    return n, merged_mean, merged_m2


class OnePassVarianceGroupNorm(_StatsGroupNorm):
    """Faulty: var = E[x^2] - mean^2 in fp32, which cancels when |mean| >> std."""

    def stats(self, xg):
        mean = xg.mean(-1, keepdim=True)
        return mean, xg.square().mean(-1, keepdim=True) - mean.square()


class BesselVarianceGroupNorm(_StatsGroupNorm):
    """Faulty: unbiased variance (divides by m - 1) instead of GroupNorm's m."""

    def stats(self, xg):
        return xg.mean(-1, keepdim=True), xg.var(-1, keepdim=True, unbiased=True)


class HalfAccumulationGroupNorm(_StatsGroupNorm):
    """Faulty: statistics accumulated in the input dtype (fp16/bf16 partial sums).

    PyTorch's CPU reductions accumulate half types in fp32, so the sums here are
    an explicit tree whose every addition rounds to the input dtype.
    """

    def forward(self, x):
        self._acc = x.dtype
        return super().forward(x)

    def stats(self, xg):
        m = xg.shape[-1]
        mean = _tree_sum(xg.to(self._acc)).float() / m
        squares = (xg - mean).to(self._acc).square()
        return mean, _tree_sum(squares).float() / m


def _tree_sum(v: torch.Tensor) -> torch.Tensor:
    """Pairwise sum over the last dim; every partial sum is rounded to v's dtype."""
    while v.shape[-1] > 1:
        if v.shape[-1] % 2:
            v = torch.cat([v, torch.zeros_like(v[..., :1])], dim=-1)
        v = v[..., 0::2] + v[..., 1::2]
    return v


class RoundedStatsGroupNorm(_StatsGroupNorm):
    """Faulty: fp32 statistics, then mean and rstd rounded to the input dtype."""

    def forward(self, x):
        self._round_to = x.dtype
        return super().forward(x)

    def stats(self, xg):
        mean = xg.mean(-1, keepdim=True)
        var = (xg - mean).square().mean(-1, keepdim=True)
        mean = mean.to(self._round_to).float()
        rstd = torch.rsqrt(var + self.eps).to(self._round_to).float()
        return mean, (1.0 / rstd.square()) - self.eps


class ReinterpretedParamsGroupNorm(nn.GroupNorm):
    """Faulty: reads weight and bias as if stored in the input's dtype (bit reinterpret).

    Correct when the dtypes agree; garbage when, as under autocast, fp16 input
    meets bf16 or fp32 parameters.
    """

    def forward(self, x):
        w, b = self.weight, self.bias
        if self.affine and w.dtype != x.dtype:
            w = _reinterpret(w, x.dtype)
            b = _reinterpret(b, x.dtype)
        return nn.functional.group_norm(x, self.num_groups, w, b, self.eps)


def _reinterpret(p: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    raw = p.detach().contiguous().view(torch.uint8)
    need = p.numel() * torch.tensor([], dtype=dtype).element_size()
    return raw[:need].view(dtype) if raw.numel() >= need else raw.repeat(2)[:need].view(dtype)


class VectorEdgeAffineGroupNorm(TwoPassGroupNorm):
    """Faulty: a 4-wide vector path applies the first lane's channel affine to all 4.

    Harmless when H*W is a multiple of 4; wrong at channel edges otherwise.
    """

    def forward(self, x):
        saved = self.affine
        self.affine = False
        y = super().forward(x).float()
        self.affine = saved
        if not self.affine:
            return y.to(x.dtype)
        N, C = x.shape[:2]
        flat_channel = torch.arange(y[0].numel(), device=x.device) // y[0, 0].numel()
        lane0 = flat_channel[(torch.arange(flat_channel.numel(), device=x.device) // 4) * 4]
        w = self.weight.float()[lane0].reshape(y[0].shape)
        b = self.bias.float()[lane0].reshape(y[0].shape)
        return (y * w + b).to(x.dtype)


class ContiguousIndexingGroupNorm(TwoPassGroupNorm):
    """Faulty: indexes the input's storage as if it were contiguous NCHW."""

    def forward(self, x):
        if not x.is_contiguous():
            x = torch.as_strided(x, x.shape, _contiguous_strides(x.shape), x.storage_offset())
        return super().forward(x)


def _contiguous_strides(shape):
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


class InterleavedGroupsGroupNorm(TwoPassGroupNorm):
    """Faulty: channel c belongs to group c % G instead of c // (C / G)."""

    def forward(self, x):
        N, C = x.shape[:2]
        G = self.num_groups
        order = torch.arange(C, device=x.device).reshape(C // G, G).t().reshape(-1)
        inverse = torch.argsort(order)
        saved = self.affine
        self.affine = False
        y = super().forward(x[:, order])[:, inverse]
        self.affine = saved
        return _affine(self, y, x)


def _affine(module, y, x):
    if not module.affine:
        return y
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return (y.float() * module.weight.float().view(shape)
            + module.bias.float().view(shape)).to(x.dtype)


class BatchStatsGroupNorm(_StatsGroupNorm):
    """Faulty: each group's statistics are pooled over the whole batch."""

    def stats(self, xg):
        pooled = xg.transpose(0, 1).reshape(xg.shape[1], -1)
        mean = pooled.mean(-1).view(1, -1, 1)
        var = (pooled - mean.view(-1, 1)).square().mean(-1).view(1, -1, 1)
        return mean.expand(xg.shape[0], -1, 1), var.expand(xg.shape[0], -1, 1)


class EpsOutsideSqrtGroupNorm(_StatsGroupNorm):
    """Faulty: divides by sqrt(var) + eps instead of sqrt(var + eps)."""

    def stats(self, xg):
        mean = xg.mean(-1, keepdim=True)
        var = (xg - mean).square().mean(-1, keepdim=True)
        # forward computes rsqrt(v + eps); choose v so that equals 1 / (sqrt(var) + eps)
        return mean, (var.sqrt() + self.eps).square() - self.eps


class IgnoresAffineGroupNorm(nn.GroupNorm):
    """Faulty: never applies weight and bias."""

    def forward(self, x):
        return nn.functional.group_norm(x, self.num_groups, None, None, self.eps)


class InPlaceGroupNorm(TwoPassGroupNorm):
    """Faulty: centres the input in place, so the caller's tensor changes."""

    def forward(self, x):
        y = super().forward(x)
        if x.is_floating_point() and x.numel():
            xg = x.view(x.shape[0], self.num_groups, -1) if x.is_contiguous() else None
            if xg is not None:
                xg.sub_(xg.mean(-1, keepdim=True))
        return y


class NondeterministicGroupNorm(nn.GroupNorm):
    """Faulty: the result depends on the call (an unordered atomic reduction)."""

    calls = 0

    def forward(self, x):
        NondeterministicGroupNorm.calls += 1
        y = super().forward(x)
        if NondeterministicGroupNorm.calls % 2 and y.numel():
            y = y.clone()
            flat = y.view(-1)
            flat[0] = torch.nextafter(flat[0], flat[0] + 1)
        return y


_WORKSPACE: dict = {}


class StaleScratchGroupNorm(_StatsGroupNorm):
    """Faulty: accumulates the group sums into a cached workspace never zeroed.

    The first call of a shape is right; every later call of that shape adds the
    previous sums in.
    """

    def stats(self, xg):
        key = (tuple(xg.shape[:-1]), xg.device)
        workspace = _WORKSPACE.setdefault(key, torch.zeros(xg.shape[:-1] + (1,),
                                                           device=xg.device))
        workspace += xg.sum(-1, keepdim=True)
        mean = workspace / xg.shape[-1]
        return mean, (xg - mean).square().mean(-1, keepdim=True)


class SquaresInHalfGroupNorm(_StatsGroupNorm):
    """Faulty: forms x^2 in the input dtype, which overflows fp16 beyond 256."""

    def forward(self, x):
        self._half = x.dtype
        return super().forward(x)

    def stats(self, xg):
        mean = xg.mean(-1, keepdim=True)
        squares = xg.to(self._half).square().float()
        mean_squared = mean.to(self._half).square().float()
        return mean, squares.mean(-1, keepdim=True) - mean_squared


class FirstSampleStatsGroupNorm(_StatsGroupNorm):
    """Faulty: uses sample 0's statistics for every sample of the batch."""

    def stats(self, xg):
        mean = xg[:1].mean(-1, keepdim=True)
        var = (xg[:1] - mean).square().mean(-1, keepdim=True)
        return mean.expand(xg.shape[0], -1, 1), var.expand(xg.shape[0], -1, 1)


CORRECT_KERNELS = (
    "Float64GroupNorm",
    "TwoPassGroupNorm",
    "ChunkedWelfordGroupNorm",
)
FAULTY_KERNELS = (
    "OnePassVarianceGroupNorm",
    "BesselVarianceGroupNorm",
    "HalfAccumulationGroupNorm",
    "RoundedStatsGroupNorm",
    "ReinterpretedParamsGroupNorm",
    "VectorEdgeAffineGroupNorm",
    "ContiguousIndexingGroupNorm",
    "InterleavedGroupsGroupNorm",
    "BatchStatsGroupNorm",
    "EpsOutsideSqrtGroupNorm",
    "IgnoresAffineGroupNorm",
    "InPlaceGroupNorm",
    "NondeterministicGroupNorm",
    "StaleScratchGroupNorm",
    "SquaresInHalfGroupNorm",
    "FirstSampleStatsGroupNorm",
)
