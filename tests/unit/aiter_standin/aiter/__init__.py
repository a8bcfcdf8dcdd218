"""Stands in for the ``aiter`` package on machines without ROCm (GroupNorm only).

Like the real package, it re-exports its GroupNorm at the top level.
"""

from .ops.groupnorm import GroupNorm, groupnorm_run  # noqa: F401
