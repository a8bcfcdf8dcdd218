"""Float64 GroupNorm oracle.

The reference follows the definition used by ``torch.nn.GroupNorm`` (Wu and He,
"Group Normalization", ECCV 2018, eq. 1-3): for each sample ``n`` and group ``g``
holding the ``m = (C / G) * prod(spatial)`` values ``x_i``,

    mean = sum(x_i) / m
    var  = sum((x_i - mean)^2) / m          (biased, two-pass)
    rstd = 1 / sqrt(var + eps)
    y_i  = (x_i - mean) * rstd * weight[c] + bias[c]

Everything is computed in float64 from the exact values the candidate received, so
the only error left in a comparison is the candidate's own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class OracleResult:
    """Float64 output and the per-(sample, group) statistics behind it."""

    y: torch.Tensor
    mean: torch.Tensor  # shape (N, G)
    rstd: torch.Tensor  # shape (N, G)


def check_group_norm_args(x: torch.Tensor, num_groups: int, weight, bias) -> None:
    """Raise ValueError naming the argument when a GroupNorm call is malformed."""
    if x.dim() < 2:
        raise ValueError(
            f"input must have at least 2 dims [N, C, *], got shape {tuple(x.shape)}"
        )
    C = x.shape[1]
    if num_groups < 1 or C % num_groups != 0:
        raise ValueError(
            f"num_groups={num_groups} must be >= 1 and divide the channel count "
            f"C={C} (input shape {tuple(x.shape)})"
        )
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and tuple(p.shape) != (C,):
            raise ValueError(f"{name} must have shape ({C},), got {tuple(p.shape)}")


def group_norm_f64(
    x: torch.Tensor,
    num_groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> OracleResult:
    """Return GroupNorm of ``x`` computed in float64 on the CPU.

    Example:
        >>> x = torch.tensor([[[1.0, 3.0], [5.0, 7.0]]])
        >>> group_norm_f64(x, 1, eps=0.0).y
        tensor([[[-1.3416, -0.4472],
                 [ 0.4472,  1.3416]]], dtype=torch.float64)
    """
    check_group_norm_args(x, num_groups, weight, bias)
    N, C = x.shape[:2]
    G = num_groups
    if x.numel() == 0:
        empty_stats = torch.zeros(N, G, dtype=torch.float64)
        y = torch.zeros(x.shape, dtype=torch.float64)
        return OracleResult(y=y, mean=empty_stats, rstd=empty_stats.clone())
    xg = x.detach().to("cpu", torch.float64).reshape(N, G, -1)
    mean = xg.mean(dim=-1)
    var = (xg - mean.unsqueeze(-1)).square().mean(dim=-1)
    rstd = (var + eps).rsqrt()
    y = ((xg - mean.unsqueeze(-1)) * rstd.unsqueeze(-1)).reshape(x.shape)
    per_channel = (1, C) + (1,) * (x.dim() - 2)
    if weight is not None:
        y = y * weight.detach().to("cpu", torch.float64).reshape(per_channel)
    if bias is not None:
        y = y + bias.detach().to("cpu", torch.float64).reshape(per_channel)
    return OracleResult(y=y, mean=mean, rstd=rstd)
