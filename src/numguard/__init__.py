"""numguard: numerical-accuracy gate for GroupNorm kernels in diffusion VAE decoders."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["SwapReport", "__version__", "maybe_swap_from_env", "swap_groupnorm"]

_SWAP_EXPORTS = ("SwapReport", "maybe_swap_from_env", "swap_groupnorm")

if TYPE_CHECKING:
    from numguard.swap import SwapReport, maybe_swap_from_env, swap_groupnorm


def __getattr__(name: str):
    # imported on first use, so ``import numguard`` (and the CLI's --help) does not
    # pay for importing torch
    if name in _SWAP_EXPORTS:
        from numguard import swap

        return getattr(swap, name)
    raise AttributeError(f"module 'numguard' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SWAP_EXPORTS))
