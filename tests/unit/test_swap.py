"""swap_groupnorm: zero-copy sharing, atomicity, preflight, idempotence, restore.

The big tests run on the Z-Image-Turbo VAE architecture (diffusers AutoencoderKL,
FLUX.1 configuration: 30 GroupNorms in the decoder, 22 in the encoder); the small
ones on a few bare GroupNorms. aiter is covered through ``aiter_standin/``, a
package with aiter's Python interface written in plain torch.
"""

from __future__ import annotations

import inspect
import logging
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from numguard.candidates import (Candidate, CandidateError, ChannelsLastGroupNorm,
                                 resolve)
from numguard.golden import GoldenCase, decode_with, synthetic_vae
from numguard.swap import (SWAP_ENV_VAR, SwapError, maybe_swap_from_env,
                           swap_groupnorm)
from numguard.zimage import decode, seeded_latents

HERE = Path(__file__).parent
VAE_GROUPNORMS = {"encoder": 22, "decoder": 30}
VAE_CONFIGS = {
    f"groups=32 channels={C} eps=1e-06 affine=1 dtype=float32 device=cpu"
    for C in (128, 256, 512)
}
# A 64x64 decode with every GroupNorm swapped, against the unswapped decode: correct
# kernels move pixels by at most 3.2e-6 (float64 2.4e-6, two-pass fp32 2.0e-6,
# channels_last 3.2e-6, the aiter stand-in's one-pass fp32 1.9e-6), Bessel variance
# by 1.7e-4.
DECODE_ATOL = 2e-5


@pytest.fixture
def vae():
    return synthetic_vae()[0]


@pytest.fixture
def aiter(monkeypatch):
    """``resolve("aiter")`` with the stand-in importable as ``aiter``."""
    _import_aiter_from(monkeypatch, HERE / "aiter_standin")
    candidate = resolve("aiter")
    assert candidate.available, candidate.unavailable_reason
    yield candidate
    _forget_aiter()


@pytest.fixture
def no_rocm_aiter(monkeypatch):
    """aiter installed on a machine without ROCm: its import raises RuntimeError."""
    _import_aiter_from(monkeypatch, HERE / "no_rocm_aiter")
    yield
    _forget_aiter()


def _import_aiter_from(monkeypatch, folder: Path) -> None:
    for name in _aiter_modules():
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(folder))


def _forget_aiter() -> None:
    for name in _aiter_modules():
        del sys.modules[name]


def _aiter_modules() -> list[str]:
    return [n for n in sys.modules if n == "aiter" or n.startswith("aiter.")]


def groupnorms(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.GroupNorm)}


def snapshot(model: nn.Module):
    return dict(model.named_modules()), model.state_dict(keep_vars=True)


def assert_untouched(model: nn.Module, before) -> None:
    """Every module and every state_dict tensor is the very object it was."""
    modules, state = before
    now_modules, now_state = snapshot(model)
    assert list(now_modules) == list(modules)
    moved = [n for n, m in now_modules.items() if m is not modules[n]]
    assert not moved, f"{len(moved)} module(s) replaced, e.g. {moved[:3]}"
    assert list(now_state) == list(state)
    assert all(now_state[k] is state[k] for k in state)


def small_model() -> nn.ModuleDict:
    return nn.ModuleDict({"a": nn.GroupNorm(2, 8), "b": nn.GroupNorm(4, 8)}).eval()


def probe_input(shape=(2, 8, 4, 4), dtype=torch.float32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(shape, generator=gen).to(dtype)


def warnings_of(caplog) -> list[str]:
    return [
        r.getMessage() for r in caplog.records
        if r.name == "numguard.swap" and r.levelno == logging.WARNING
    ]


# The Z-Image-Turbo VAE


def test_swaps_the_30_decoder_and_22_encoder_groupnorms(vae, caplog):
    norms = groupnorms(vae)
    assert Counter(n.split(".")[0] for n in norms) == VAE_GROUPNORMS
    with caplog.at_level(logging.INFO, logger="numguard.swap"):
        report = swap_groupnorm(vae, "torch-channels-last")
    assert (report.status, report.count, report.skipped) == ("swapped", 52, {})
    assert report.per_scope() == VAE_GROUPNORMS
    assert sorted(report.swapped) == sorted(norms)
    assert all(type(vae.get_submodule(n)) is ChannelsLastGroupNorm for n in norms)
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(infos) == 1 and "encoder 22, decoder 30" in infos[0], infos


def test_preflight_probes_each_configuration_once(vae):
    report = swap_groupnorm(vae, "torch-channels-last")
    assert {str(p.config) for p in report.preflight} == VAE_CONFIGS
    covered = sorted(n for p in report.preflight for n in p.modules)
    assert covered == sorted(report.swapped)
    assert all(p.passed and p.error_ratio < 1 for p in report.preflight), [
        p.headline() for p in report.preflight if not p.passed
    ]


def test_shares_every_parameter_and_keeps_the_state_dict(vae):
    before = vae.state_dict(keep_vars=True)
    values = {k: v.detach().clone() for k, v in before.items()}
    norms = groupnorms(vae)
    swap_groupnorm(vae, "torch-channels-last")
    for name, old in norms.items():
        new = vae.get_submodule(name)
        assert new is not old
        assert new.weight is old.weight and new.bias is old.bias, name
        assert new.weight.data_ptr() == old.weight.data_ptr(), name
    after = vae.state_dict(keep_vars=True)
    assert list(after) == list(before)
    assert all(after[k] is before[k] for k in before)
    assert all(torch.equal(after[k], values[k]) for k in values)
    loaded = vae.load_state_dict(values)
    assert not loaded.missing_keys and not loaded.unexpected_keys


def test_decode_matches_within_tolerance_and_restore_gives_it_back(vae):
    z = seeded_latents(64, 0)
    reference = decode(vae, z, "cpu", torch.float32)
    originals = groupnorms(vae)
    report = swap_groupnorm(vae, "numguard.kernels:Float64GroupNorm")
    swapped = decode(vae, z, "cpu", torch.float32)
    np.testing.assert_allclose(swapped, reference, atol=DECODE_ATOL, rtol=0)
    assert not np.array_equal(swapped, reference), "the swap must change the kernel"
    report.restore()
    assert all(vae.get_submodule(n) is m for n, m in originals.items())
    assert np.array_equal(decode(vae, z, "cpu", torch.float32), reference)


def test_scope_limits_the_swap_to_the_decoder(vae):
    report = swap_groupnorm(vae, "torch-channels-last", scope="decoder")
    assert report.count == 30 and report.per_scope() == {"decoder": 30}
    kinds = Counter(
        (n.split(".")[0], type(m).__name__) for n, m in groupnorms(vae).items()
    )
    assert kinds == {
        ("decoder", "ChannelsLastGroupNorm"): 30, ("encoder", "GroupNorm"): 22
    }


def test_a_second_swap_swaps_nothing(vae):
    # the torch candidate's replacements are plain nn.GroupNorms: only the mark
    # tells them apart, and neither they nor a swap's subclasses are taken again
    swap_groupnorm(vae, "torch")
    placed = dict(vae.named_modules())
    for impl in ("torch", "torch-channels-last"):
        again = swap_groupnorm(vae, impl)
        assert (again.status, again.count, again.skipped) == ("unchanged", 0, {})
        assert len(again.already_swapped) == 52
        assert all(m is placed[n] for n, m in vae.named_modules())


def raises_on_third_build():
    built = []

    def factory(*args, **kwargs):
        if len(built) == 2:
            raise RuntimeError("out of workspace on the third build")
        built.append(1)
        return nn.GroupNorm(*args, **kwargs)

    return factory


class ScaledOutput(nn.GroupNorm):
    """Builds and runs, but every output is 0.1% too large."""

    def forward(self, x):
        return super().forward(x) * 1.001


class RaisesWhenCalled(nn.GroupNorm):
    """Builds, then fails at the first call, as a JIT kernel that does not compile."""

    def forward(self, x):
        raise RuntimeError("hipErrorNoBinaryForGpu: no kernel image for this device")


FAILING = {
    "raises on the third build": (
        raises_on_third_build,
        ["building the replacement of encoder.down_blocks.0.resnets.1.norm1",
         "RuntimeError: out of workspace on the third build"],
        1,
    ),
    "returns wrong numbers": (
        lambda: ScaledOutput,
        ["preflight of groups=32 channels=128 eps=1e-06 affine=1 dtype=float32",
         "11 module(s) (encoder.down_blocks.0.resnets.0.norm1",
         "Greatest error/allowed ratio: ", "Mismatched elements: "],
        3,
    ),
    "raises when called": (
        lambda: RaisesWhenCalled,
        ["preflight of groups=32 channels=512",
         "raised RuntimeError: hipErrorNoBinaryForGpu"],
        3,
    ),
}


@pytest.mark.parametrize("kind", FAILING)
def test_a_failing_candidate_leaves_the_vae_untouched_and_says_why(vae, kind, caplog):
    make_factory, expected, warning_count = FAILING[kind]
    before = snapshot(vae)
    with caplog.at_level(logging.WARNING, logger="numguard.swap"):
        report = swap_groupnorm(vae, Candidate(kind, kind, make_factory()))
    assert (report.status, report.count) == ("failed", 0)
    missing = [text for text in expected if text not in report.failure]
    assert not missing, f"{missing} not in:\n{report.failure}"
    assert_untouched(vae, before)
    warnings = warnings_of(caplog)
    assert len(warnings) == warning_count, warnings
    assert all("failed, the model is unchanged" in w for w in warnings)
    headline = f"GroupNorm swap for {kind!r} failed"
    with pytest.raises(SwapError, match=re.escape(headline)):
        report.raise_on_failure()


def test_wrong_numbers_fail_every_configuration_with_figures(vae):
    report = swap_groupnorm(vae, Candidate("scaled", "scaled", ScaledOutput))
    assert {str(p.config) for p in report.preflight} == VAE_CONFIGS
    assert all(not p.passed and p.error_ratio > 1 for p in report.preflight)
    assert sum(len(p.modules) for p in report.preflight) == 52


def test_the_golden_decode_refuses_a_swap_that_failed():
    # decoding would otherwise run the torch baseline and pass for the candidate
    case = GoldenCase(resolution=64)
    with pytest.raises(SwapError, match="preflight of groups=32 channels=128"):
        decode_with(Candidate("scaled", "scaled", ScaledOutput), case, "cpu")


# Small models: arguments, hooks, placement, skips, sharing


def test_arguments_are_checked_before_anything_is_touched():
    model = small_model()
    before = snapshot(model)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got int"):
        swap_groupnorm(3, "torch")
    with pytest.raises(TypeError, match="impl must be a candidate spec.*got int"):
        swap_groupnorm(model, 3)
    with pytest.raises(ValueError, match="scope 'decodr' names no submodule of "
                                         "ModuleDict; its children are: a, b"):
        swap_groupnorm(model, "torch", scope="decodr")
    with pytest.raises(CandidateError, match="'no-such-kernel' is not a known"):
        swap_groupnorm(model, "no-such-kernel")
    assert_untouched(model, before)


def test_a_class_is_accepted_as_impl():
    model = small_model()
    report = swap_groupnorm(model, ChannelsLastGroupNorm)
    assert report.impl == "numguard.candidates:ChannelsLastGroupNorm"
    assert report.count == 2 and type(model["a"]) is ChannelsLastGroupNorm


def test_hooks_training_mode_and_placement_carry_over():
    model = nn.ModuleDict({
        "trained": nn.GroupNorm(2, 8).train(),
        "bf16": nn.GroupNorm(2, 8, dtype=torch.bfloat16).eval(),
    })
    calls = []
    norm = model["trained"]
    norm.register_forward_pre_hook(lambda m, args: calls.append("pre"))
    handle = norm.register_forward_hook(lambda m, args, out: calls.append("post"))
    built = []

    def recording(*args, **kwargs):
        built.append((args, kwargs))
        return nn.GroupNorm(*args, **kwargs)

    swap_groupnorm(model, Candidate("recording", "recording", recording))
    assert [kw["dtype"] for _, kw in built] == [torch.float32, torch.bfloat16]
    assert all(kw["device"] == torch.device("cpu") for _, kw in built)
    assert [model["trained"].training, model["bf16"].training] == [True, False]
    assert calls == [], "the preflight must not fire the model's hooks"
    model["trained"](probe_input())
    assert calls == ["pre", "post"]
    handle.remove()  # a handle taken before the swap still works after it
    model["trained"](probe_input())
    assert calls == ["pre", "post", "pre"]


def test_hooks_on_parent_modules_keep_firing():
    model = nn.Sequential(nn.GroupNorm(2, 8), nn.GroupNorm(4, 8))
    seen = []
    model.register_forward_hook(lambda m, args, out: seen.append(type(m[0]).__name__))
    reference = model(probe_input())
    swap_groupnorm(model, "torch-channels-last")
    torch.testing.assert_close(model(probe_input()), reference)
    assert seen == ["GroupNorm", "ChannelsLastGroupNorm"]


def test_a_norm_without_parameters_is_built_on_its_owners_dtype():
    model = nn.Module()
    model.register_buffer("scale", torch.ones(1, dtype=torch.bfloat16))
    model.norm = nn.GroupNorm(2, 8, affine=False)
    built = []

    def recording(*args, **kwargs):
        built.append(kwargs)
        return nn.GroupNorm(*args, **kwargs)

    report = swap_groupnorm(model, Candidate("recording", "recording", recording))
    assert [kw["dtype"] for kw in built] == [torch.bfloat16]
    assert str(report.preflight[0].config) == (
        "groups=2 channels=8 eps=1e-05 affine=0 dtype=bfloat16 device=cpu"
    )


class Upcast(nn.GroupNorm):
    """A subclass with its own forward (fp32 upcast), which a swap would drop."""

    def forward(self, x):
        return super().forward(x.float()).type(x.dtype)


class Positive(nn.Module):
    def forward(self, w):
        return w.abs()


def test_modules_it_cannot_take_are_skipped_with_a_reason(caplog):
    model = nn.ModuleDict({
        "plain": nn.GroupNorm(2, 8),
        "subclass": Upcast(2, 8),
        "float64": nn.GroupNorm(2, 8, dtype=torch.float64),
        "parametrized": parametrize.register_parametrization(
            nn.GroupNorm(2, 8), "weight", Positive()
        ),
    })
    with caplog.at_level(logging.WARNING, logger="numguard.swap"):
        report = swap_groupnorm(model, "torch-channels-last")
    assert report.swapped == ["plain"]
    assert report.skipped == {
        "subclass": "Upcast subclasses nn.GroupNorm; its own forward would be lost",
        "float64": "dtype float64: the preflight has tolerances for float32, float16, "
                  "bfloat16 only; pass preflight=False to swap it unchecked",
        "parametrized": "its weight is parametrized, so it has no Parameter to share",
    }
    warnings = warnings_of(caplog)
    assert len(warnings) == 3 and all(
        w.startswith(f"not swapping {n} for 'torch-channels-last': ")
        for w, n in zip(warnings, report.skipped)
    )
    unchecked = swap_groupnorm(model, "torch-channels-last", preflight=False)
    assert unchecked.swapped == ["float64"] and unchecked.preflight == []


def test_a_shared_module_gets_one_replacement_in_every_place():
    norm = nn.GroupNorm(2, 8)
    model = nn.ModuleDict({"a": nn.Sequential(norm), "b": nn.Sequential(norm)})
    report = swap_groupnorm(model, "torch")
    assert report.swapped == ["a.0", "b.0"]
    assert model["a"][0] is model["b"][0] is not norm
    report.restore()
    assert model["a"][0] is norm and model["b"][0] is norm


def test_restore_leaves_a_place_changed_since_the_swap_alone(caplog):
    model = small_model()
    original_b = model["b"]
    report = swap_groupnorm(model, "torch")
    model["a"] = nn.Identity()
    with caplog.at_level(logging.WARNING, logger="numguard.swap"):
        report.restore()
    assert type(model["a"]) is nn.Identity and model["b"] is original_b
    assert warnings_of(caplog) == [
        "not restoring a: it holds Identity, not the module the swap put there"
    ]


def test_an_unavailable_candidate_is_reported_not_raised(no_rocm_aiter):
    model = small_model()
    before = snapshot(model)
    report = swap_groupnorm(model, "aiter")
    assert report.status == "unavailable"
    assert "RuntimeError: aiter stand-in: no ROCm device found" in report.failure
    assert_untouched(model, before)


# aiter, through the stand-in with its Python interface


def test_the_aiter_standin_has_aiters_interface(aiter):
    from aiter.ops.groupnorm import GroupNorm

    norm = GroupNorm(4, 8, eps=1e-6)
    assert not isinstance(norm, nn.GroupNorm) and not hasattr(norm, "num_channels")
    assert list(norm.state_dict()) == ["weight", "bias"]
    assert inspect.signature(norm.forward).parameters["use_torch"].default is False
    x = probe_input().contiguous(memory_format=torch.channels_last)
    y = norm(x)
    assert y.is_contiguous() and not x.is_contiguous()
    torch.testing.assert_close(y, norm(x, use_torch=True))
    plain = GroupNorm(4, 8, affine=False)
    assert plain.weight is None and torch.equal(plain(x), F.group_norm(x, 4))


def test_the_aiter_standin_reads_parameters_as_the_inputs_dtype(aiter):
    from aiter.ops.groupnorm import GroupNorm

    norm = GroupNorm(4, 8, dtype=torch.bfloat16)  # weight ones, bias zeros
    x = probe_input(dtype=torch.float16)
    # bf16 1.0 read as fp16 is 1.875: the output comes out 1.875 times too large;
    # rtol 1e-3 covers the fp16 output's rounding (half an ulp is 4.9e-4 relative),
    # atol 1e-6 its subnormal spacing (6e-8) near zero
    wrong = 1.875 * F.group_norm(x.float(), 4)
    torch.testing.assert_close(norm(x).float(), wrong, rtol=1e-3, atol=1e-6)


def test_aiter_swaps_the_vae_without_copies_and_decodes_within_tolerance(aiter, vae):
    z = seeded_latents(64, 0)
    reference = decode(vae, z, "cpu", torch.float32)
    before = vae.state_dict(keep_vars=True)
    report = swap_groupnorm(vae, aiter)
    assert (report.status, report.count) == ("swapped", 52)
    for name in report.swapped:
        new = vae.get_submodule(name)
        assert type(new).__module__ == "aiter.ops.groupnorm", name
        assert new.weight is before[f"{name}.weight"], name
    assert all(v is before[k] for k, v in vae.state_dict(keep_vars=True).items())
    assert all(any("not channels_last" in n for n in p.notes) for p in report.preflight)
    swapped = decode(vae, z, "cpu", torch.float32)
    np.testing.assert_allclose(swapped, reference, atol=DECODE_ATOL, rtol=0)
    assert len(swap_groupnorm(vae, aiter).already_swapped) == 52
    report.restore()
    assert np.array_equal(decode(vae, z, "cpu", torch.float32), reference)


def test_aiter_skips_what_its_kernel_cannot_take(aiter):
    mixed = nn.GroupNorm(2, 8)
    mixed.bias = nn.Parameter(mixed.bias.detach().to(torch.bfloat16))
    model = nn.ModuleDict({
        "fp32": nn.GroupNorm(2, 8),
        "bf16": nn.GroupNorm(2, 8, dtype=torch.bfloat16),
        "no_affine": nn.GroupNorm(2, 8, affine=False),
        "float64": nn.GroupNorm(2, 8, dtype=torch.float64),
        "mixed": mixed,
        "in_training": nn.GroupNorm(2, 8),
    }).eval()
    model["in_training"].train()
    report = swap_groupnorm(model, aiter)
    assert report.swapped == ["fp32", "bf16"]
    assert report.skipped == {
        "no_affine": "affine=False: aiter's forward falls back to F.group_norm for it",
        "float64": "dtype float64: aiter's kernel handles float32, float16 and "
                  "bfloat16 only",
        "mixed": "weight is float32 but bias is bfloat16: aiter reads both as the "
                 "input's dtype",
        "in_training": "in training mode with trainable parameters: aiter has no "
                       "backward",
    }


# The environment switch for serving code


def test_the_env_switch_is_off_by_default(monkeypatch):
    model = small_model()
    before = snapshot(model)
    monkeypatch.delenv(SWAP_ENV_VAR, raising=False)
    report = maybe_swap_from_env(model)
    assert (report.status, report.note) == ("disabled", f"{SWAP_ENV_VAR} is not set")
    monkeypatch.setenv(SWAP_ENV_VAR, "0")
    assert maybe_swap_from_env(model).note == f"{SWAP_ENV_VAR} is '0'"
    assert_untouched(model, before)


@pytest.mark.parametrize("value", ["1", "aiter"])
def test_the_env_switch_swaps_in_aiter(aiter, monkeypatch, value):
    monkeypatch.setenv(SWAP_ENV_VAR, value)
    model = small_model()
    report = maybe_swap_from_env(model)
    assert (report.status, report.impl, report.count) == ("swapped", "aiter", 2)
    assert type(model["a"]).__module__ == "aiter.ops.groupnorm"


@pytest.mark.parametrize("value, scope, status, reason", [
    ("aiter", None, "unavailable", "RuntimeError: aiter stand-in: no ROCm device"),
    ("no-such-kernel", None, "failed", "CandidateError: --impl 'no-such-kernel'"),
    ("torch", "decodr", "failed", "ValueError: scope 'decodr' names no submodule"),
])
def test_the_env_switch_never_raises_into_serving_code(
    no_rocm_aiter, monkeypatch, caplog, value, scope, status, reason
):
    monkeypatch.setenv(SWAP_ENV_VAR, value)
    model = small_model()
    before = snapshot(model)
    with caplog.at_level(logging.WARNING, logger="numguard.swap"):
        report = maybe_swap_from_env(model, scope=scope)
    assert report.status == status and reason in report.failure, report.failure
    assert len(warnings_of(caplog)) == 1 and reason in warnings_of(caplog)[0]
    assert_untouched(model, before)
