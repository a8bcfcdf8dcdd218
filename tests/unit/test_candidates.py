"""The candidate registry: built-in specs, imports, unavailability, bad specs."""

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from numguard.candidates import CandidateError, CompiledGroupNorm, resolve

HERE = Path(__file__).parent
EXAMPLES = HERE.parents[1] / "examples" / "candidates.py"


def test_torch_is_nn_groupnorm():
    cand = resolve("torch")
    assert cand.available and cand.factory is nn.GroupNorm


def test_channels_last_runs_on_a_channels_last_input(monkeypatch):
    seen = []
    real = F.group_norm

    def spy(x, *args, **kwargs):
        seen.append(x.is_contiguous(memory_format=torch.channels_last))
        return real(x, *args, **kwargs)

    monkeypatch.setattr(F, "group_norm", spy)
    resolve("torch-channels-last").build(2, 4)(torch.randn(1, 4, 3, 3))
    assert seen == [True]


def test_torch_compile_runs_an_inductor_graph():
    from torch._dynamo.utils import counters

    before = counters["stats"]["unique_graphs"]
    module = resolve("torch-compile").build(2, 4, eps=1e-3)
    x = torch.randn(2, 4, 5) + 3
    torch.testing.assert_close(module(x), F.group_norm(x, 2, module.weight, module.bias, 1e-3))
    assert isinstance(module, CompiledGroupNorm)
    assert counters["stats"]["unique_graphs"] > before


def test_torch_compile_compiles_afresh_when_the_recompile_limit_is_hit(monkeypatch):
    import torch._dynamo.config as dynamo_config
    from torch._dynamo.utils import counters

    first = resolve("torch-compile").build(2, 4, eps=1e-3)
    first(torch.randn(2, 4, 5))  # sets the candidate's own limits up
    monkeypatch.setattr(dynamo_config, "recompile_limit", 1)
    starts = CompiledGroupNorm.fresh_starts
    other = resolve("torch-compile").build(2, 4, eps=1e-2)
    graphs = counters["stats"]["unique_graphs"]
    x = torch.randn(2, 4, 3, 3) + 5  # a new rank: a recompile, over the limit of 1
    torch.testing.assert_close(other(x), F.group_norm(x, 2, other.weight, other.bias, 1e-2))
    assert CompiledGroupNorm.fresh_starts == starts + 1
    assert counters["stats"]["unique_graphs"] > graphs, "compiled again, not run eagerly"


def test_file_spec_loads_a_class():
    cand = resolve(f"{EXAMPLES}:Float64GroupNorm")
    module = cand.build(2, 4, eps=1e-5, affine=True, device=None, dtype=None)
    assert type(module).__name__ == "Float64GroupNorm" and module.weight.shape == (4,)


def test_module_spec_loads_a_class():
    assert resolve("numguard.kernels:TwoPassGroupNorm").factory.__name__ == "TwoPassGroupNorm"


@pytest.mark.parametrize(
    "spec, match",
    [
        ("cudnn", "not a known candidate"),
        ("no/such/file.py:X", "does not exist"),
        (f"{EXAMPLES}:Missing", "has no attribute 'Missing'"),
        ("numguard_no_such_module:X", "is not importable"),
        ("numguard.kernels:torch", "not a class or function"),
        ("numguard.oracle:check_group_norm_args", "must accept nn.GroupNorm's arguments"),
    ],
)
def test_bad_specs_are_usage_errors(spec, match):
    with pytest.raises(CandidateError, match=match):
        resolve(spec)


def test_aiter_without_rocm_is_unavailable_with_the_runtime_error(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE / "no_rocm_aiter"))
    monkeypatch.delitem(sys.modules, "aiter", raising=False)
    cand = resolve("aiter")
    assert not cand.available
    assert cand.unavailable_reason.startswith(
        "import aiter.ops.groupnorm failed: RuntimeError: aiter stand-in: no ROCm device"
    )
    with pytest.raises(RuntimeError, match="no ROCm device"):
        cand.build(2, 4)


def test_auto_says_what_it_picked_instead(monkeypatch, caplog):
    monkeypatch.syspath_prepend(str(HERE / "no_rocm_aiter"))
    monkeypatch.delitem(sys.modules, "aiter", raising=False)
    cand = resolve("auto")
    assert cand.factory is nn.GroupNorm
    assert cand.note.startswith("auto picked the torch baseline because aiter is unavailable")
    assert "RuntimeError" in caplog.text


def test_import_failure_inside_a_candidate_module_is_unavailability(tmp_path):
    bad = tmp_path / "needs_gpu.py"
    bad.write_text("raise RuntimeError('HIP runtime missing')\n")
    cand = resolve(f"{bad}:GroupNorm")
    assert not cand.available and "RuntimeError: HIP runtime missing" in cand.unavailable_reason
