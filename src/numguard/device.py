"""Which device a run uses, and the GPU architecture name goldens are keyed by."""

from __future__ import annotations

import torch


class DeviceUnavailable(RuntimeError):
    """The requested torch device does not exist on this machine."""


def check_device(device: str) -> torch.device:
    """Parse ``device`` as torch does and make sure it exists; ROCm GPUs are cuda."""
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"--device {device!r} is not a torch device: {exc}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailable(
                f"--device {device}: torch {torch.__version__} sees no CUDA/ROCm GPU "
                f"(torch.cuda.is_available() is False)"
            )
        index = dev.index or 0
        if index >= torch.cuda.device_count():
            raise DeviceUnavailable(
                f"--device {device}: only {torch.cuda.device_count()} GPU(s) visible"
            )
    elif dev.type != "cpu":
        raise DeviceUnavailable(f"--device {device}: only cpu and cuda are supported")
    return dev


def device_arch(device: str) -> str:
    """``cpu``, a ROCm gfx name such as ``gfx942``, or a CUDA ``sm90``-style name."""
    dev = check_device(device)
    if dev.type == "cpu":
        return "cpu"
    props = torch.cuda.get_device_properties(dev)
    if torch.version.hip:
        return props.gcnArchName.split(":")[0]
    return f"sm{props.major}{props.minor}"


def device_name(device: str) -> str:
    dev = check_device(device)
    if dev.type == "cpu":
        import platform

        return platform.processor() or platform.machine() or "cpu"
    return torch.cuda.get_device_name(dev)
