"""Full tier: the Z-Image-Turbo decoder's real GroupNorm shapes, and tensors past
32-bit indexing on GPUs."""

from __future__ import annotations

import pytest
import torch

from numguard import behaviour
from numguard.compare import run_case
from numguard.pinned import zimage_decoder_cases
from numguard.pytest_plugin import assert_passed

DECODER_1024 = zimage_decoder_cases(1024)


@pytest.mark.full
@pytest.mark.parametrize("name", list(DECODER_1024))
def test_zimage_decoder_shape_at_1024(name, candidate, device, worst_ratio):
    assert_passed(worst_ratio(run_case(candidate, DECODER_1024[name], device)))


@pytest.mark.full
@pytest.mark.parametrize("name", list(behaviour.LARGE_CASES))
def test_large_tensor_tail(name, candidate, device):
    shape, dtype, _ = behaviour.LARGE_CASES[name]
    need = behaviour.large_case_bytes(shape, dtype)
    if torch.device(device).type != "cuda":
        pytest.skip(f"{name}: the large-tensor check runs on GPUs only (device {device})")
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    if free < need * 1.2:
        pytest.skip(f"{name}: needs {need / 2**30:.1f} GiB of device memory plus 20%, "
                    f"{free / 2**30:.1f} GiB free on {device}")
    assert_passed(behaviour.check_large_tail(candidate, name, device))
