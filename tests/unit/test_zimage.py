"""The Z-Image-Turbo VAE architecture and its synthetic weights."""

import pytest
import torch
from torch import nn

from numguard.golden import synthetic_vae
from numguard.zimage import (SCALING_FACTOR, SHIFT_FACTOR, seeded_latents, splitmix64,
                             state_dict_sha256)


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
