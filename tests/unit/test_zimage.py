"""The Z-Image-Turbo VAE architecture, its synthetic weights and the GroupNorm swap."""

import numpy as np
import pytest
import torch
from torch import nn

from numguard.candidates import resolve
from numguard.golden import synthetic_vae
from numguard.swap import swap_groupnorm
from numguard.zimage import (SCALING_FACTOR, SHIFT_FACTOR, decode, seeded_latents,
                             splitmix64, state_dict_sha256)


@pytest.fixture(scope="module")
def vae_and_sha():
    return synthetic_vae()


def test_splitmix64_matches_the_published_test_vector():
    # Vigna's reference generator seeded with 1234567 (Rosetta Code "Pseudo-random
    # numbers/Splitmix64")
    expected = [6457827717110365317, 3203168211198807973, 9817491932198370423,
                4593380528125082431, 16408922859458223821]
    assert [int(v) for v in splitmix64(1234567, 5)] == expected


def test_architecture_is_the_flux_vae(vae_and_sha):
    vae, _ = vae_and_sha
    cfg = vae.config
    assert (cfg.latent_channels, list(cfg.block_out_channels)) == (16, [128, 256, 512, 512])
    assert (cfg.scaling_factor, cfg.shift_factor) == (SCALING_FACTOR, SHIFT_FACTOR)
    assert vae.quant_conv is None and vae.post_quant_conv is None
    norms = [n for n, m in vae.named_modules() if isinstance(m, nn.GroupNorm)]
    assert sum(n.startswith("decoder.") for n in norms) == 30
    assert sum(n.startswith("encoder.") for n in norms) == 22


def test_synthetic_weights_are_deterministic(vae_and_sha):
    vae, sha = vae_and_sha
    again, sha_again = synthetic_vae()
    assert sha == sha_again == state_dict_sha256(again.state_dict())
    norm = vae.decoder.conv_norm_out.requires_grad_(False)
    assert 0.75 <= float(norm.weight.min()) and float(norm.weight.max()) < 1.25
    assert float(norm.bias.abs().max()) <= 0.25 and float(norm.bias.std()) > 0.05


def test_latents_are_seeded_and_shaped():
    a = seeded_latents(64, 3)
    assert a.shape == (1, 16, 8, 8) and torch.equal(a, seeded_latents(64, 3))
    assert not torch.equal(a, seeded_latents(64, 4))
    with pytest.raises(ValueError, match="multiple of 8"):
        seeded_latents(60, 0)


def test_swap_shares_parameters_and_restores(vae_and_sha):
    vae, _ = synthetic_vae()
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    params = {n: (m.weight, m.bias) for n, m in vae.named_modules()
              if isinstance(m, nn.GroupNorm)}
    report = swap_groupnorm(vae, resolve("torch-channels-last"))
    assert report.count == 52
    for name, (w, b) in params.items():
        new = vae.get_submodule(name)
        assert type(new).__name__ == "ChannelsLastGroupNorm"
        assert new.weight is w and new.bias is b
        assert new.weight.data_ptr() == w.data_ptr()
    after = vae.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)
    report.restore()
    assert all(type(vae.get_submodule(n)) is nn.GroupNorm for n in params)


def test_failing_construction_leaves_the_model_untouched():
    vae, _ = synthetic_vae()
    built = []

    def third_fails(*args, **kwargs):
        if len(built) == 2:
            raise RuntimeError("out of workspace")
        built.append(1)
        return nn.GroupNorm(*args, **kwargs)

    cand = resolve("torch")
    cand.factory = third_fails
    with pytest.raises(RuntimeError, match="out of workspace"):
        swap_groupnorm(vae, cand)
    assert all(type(m) is nn.GroupNorm for m in vae.modules() if isinstance(m, nn.GroupNorm))


def test_swapped_decode_matches_the_original(vae_and_sha):
    vae, _ = synthetic_vae()
    z = seeded_latents(64, 0)
    reference = decode(vae, z, "cpu", torch.float32)
    swap_groupnorm(vae, resolve("numguard.kernels:Float64GroupNorm"))
    swapped = decode(vae, z, "cpu", torch.float32)
    assert reference.shape == (64, 64, 3)
    # measured at 64x64: correct kernels move pixels by at most 3.2e-6 (float64
    # 2.4e-6, two-pass 2.0e-6, channels_last 3.2e-6); Bessel variance by 1.7e-4
    np.testing.assert_allclose(swapped, reference, atol=2e-5, rtol=0)
    assert not np.array_equal(swapped, reference), "the swap must change the kernel"
