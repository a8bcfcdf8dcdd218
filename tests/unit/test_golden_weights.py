"""Real weights from a folder or an offline Hugging Face cache, and the full pipeline.

No test downloads anything: every weights folder here is made by the test with
``save_pretrained``, and the Hugging Face cache is a temporary folder laid out the
way huggingface_hub lays out its cache.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from numguard import golden, weights, zimage
from numguard.candidates import Candidate, resolve
from numguard.decode_faults import scale
from numguard.golden import (PIPELINE_MODEL, REAL_VAE_MODEL, GoldenCase, make_golden,
                             run_golden_case)
from numguard.weights import WeightsError, WeightsSource, find_weights

ROOT = Path(__file__).resolve().parents[2]
TINY_VAE = dict(in_channels=3, out_channels=3, latent_channels=16,
                down_block_types=["DownEncoderBlock2D"] * 2,
                up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[32, 64],
                layers_per_block=1, norm_num_groups=32, sample_size=32,
                scaling_factor=zimage.SCALING_FACTOR, shift_factor=zimage.SHIFT_FACTOR)


def tiny_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(**TINY_VAE).eval()


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_snapshot_folder_with_vae_loads_from_its_vae_subfolder(tmp_path):
    saved = tiny_vae()
    saved.save_pretrained(tmp_path / "vae")
    source, reason = find_weights(tmp_path)
    assert reason == "" and source.vae_subfolder == "vae" and not source.has_pipeline
    assert same_weights(weights.load_autoencoder(source), saved)


def test_a_vae_folder_itself_loads(tmp_path):
    saved = tiny_vae()
    saved.save_pretrained(tmp_path)
    source, _ = find_weights(tmp_path)
    assert source.vae_subfolder is None
    assert same_weights(weights.load_autoencoder(source), saved)


def test_a_vae_of_another_architecture_is_refused_with_the_fields(tmp_path):
    tiny_vae().save_pretrained(tmp_path / "vae")
    source, _ = find_weights(tmp_path)
    rule = r"is not Z-Image-Turbo's: block_out_channels is \[32, 64\], expected \[128"
    with pytest.raises(WeightsError, match=rule):
        weights.zimage_vae(source)


@pytest.mark.parametrize("make, rule", [
    (lambda p: p / "missing", "no such folder"),
    (lambda p: p, "holds neither vae/config.json nor config.json"),
])
def test_unusable_weights_paths_are_errors(tmp_path, make, rule):
    with pytest.raises(WeightsError, match=rule):
        find_weights(make(tmp_path))


def fake_hf_cache(cache: Path, vae) -> Path:
    """The layout huggingface_hub leaves after downloading the repo's vae/."""
    repo = cache / "models--Tongyi-MAI--Z-Image-Turbo"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    vae.save_pretrained(snapshot / "vae")
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def test_the_hugging_face_cache_is_read_offline(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    saved = tiny_vae()
    snapshot = fake_hf_cache(tmp_path, saved)
    source, reason = find_weights(None, cache_dir=tmp_path)
    assert source.root == snapshot and "Hugging Face cache" in source.origin
    assert source.label == f"Tongyi-MAI/Z-Image-Turbo@{snapshot.name} (Hugging Face cache)"
    assert same_weights(weights.load_autoencoder(source), saved)
    assert "HF_HUB_OFFLINE" not in os.environ, "the offline switch is restored"


def test_an_empty_cache_means_skip_with_the_reason(tmp_path):
    source, reason = find_weights(None, cache_dir=tmp_path)
    assert source is None
    assert reason.startswith("real Z-Image-Turbo weights not found: pass --weights")
    assert str(tmp_path) in reason and "nothing is downloaded" in reason


@pytest.fixture(scope="module")
def real_layout(tmp_path_factory):
    """The Z-Image-Turbo VAE with the synthetic weights, saved as a real snapshot is."""
    root = tmp_path_factory.mktemp("zimage-turbo")
    vae, _ = golden.synthetic_vae()
    vae.save_pretrained(root / "vae")
    return WeightsSource(root, f"--weights {root}")


def test_real_weight_cases_load_decode_and_compare(real_layout, tmp_path):
    case = GoldenCase(64, "float32", 0, REAL_VAE_MODEL)
    make_golden(tmp_path, case, "cpu", "test", real_layout)
    result = run_golden_case(resolve("torch"), case, "cpu", tmp_path, real_layout)
    assert result.passed, result.message()
    real = golden.decode_case(resolve("torch"), case, "cpu", real_layout)
    synthetic = golden.decode_case(resolve("torch"), GoldenCase(64), "cpu")
    assert real.weights_sha256 == zimage.SYNTHETIC_WEIGHTS_SHA256[0], "bit for bit"
    assert np.array_equal(real.image, synthetic.image)
    manifest = golden.read_manifest(tmp_path / REAL_VAE_MODEL / "cpu")
    assert manifest["cases"][case.name]["weights"] == (
        f"real weights from --weights (folder {real_layout.root.name!r})")


def pytest_run(*args, env=None):
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs"]
    return subprocess.run([*command, *args], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=600)


def test_without_weights_the_real_weight_cases_skip_with_the_reason(tmp_path):
    env = dict(os.environ, HF_HOME=str(tmp_path), HF_HUB_CACHE=str(tmp_path / "hub"),
               COLUMNS="400")
    run = pytest_run("tests/golden", "-k", "zimage-turbo-vae-decode-r256-float32-s0",
                     env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 skipped" in run.stdout
    assert "real Z-Image-Turbo weights not found: pass --weights PATH" in run.stdout


def test_a_bad_weights_path_stops_the_run(tmp_path):
    run = pytest_run("tests/golden", "-k", "zimage-turbo-vae",
                     f"--weights={tmp_path / 'no'}")
    assert run.returncode == pytest.ExitCode.USAGE_ERROR, run.stdout + run.stderr
    assert "no such folder" in run.stdout + run.stderr


# The full pipeline, on a tiny ZImagePipeline built the way diffusers' own tests do


def tiny_pipeline(root: Path) -> WeightsSource:
    pytest.importorskip("transformers", reason="ZImagePipeline needs the transformers "
                                               "package, which is not installed")
    from diffusers import (FlowMatchEulerDiscreteScheduler, ZImagePipeline,
                           ZImageTransformer2DModel)
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3Model

    words = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>", "user", "assistant"]
    vocab = {word: i for i, word in enumerate(words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>",
                                        unk_token="<unk>")
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} "
        "<|im_end|> {% endfor %}<|im_start|> assistant")
    torch.manual_seed(0)
    text_encoder = Qwen3Model(Qwen3Config(
        vocab_size=len(words), hidden_size=16, intermediate_size=16,
        num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, head_dim=8,
        max_position_embeddings=512))
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=32, n_layers=2,
        n_refiner_layers=1, n_heads=2, n_kv_heads=2, norm_eps=1e-5, qk_norm=True,
        cap_feat_dim=16, rope_theta=256.0, t_scale=1000.0, axes_dims=[8, 4, 4],
        axes_lens=[256, 32, 32])
    pipe = ZImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=tiny_vae(),
                          text_encoder=text_encoder, tokenizer=tokenizer,
                          transformer=transformer)
    pipe.save_pretrained(root)
    return WeightsSource(root, f"--weights {root}")


class FullResolutionFault(nn.GroupNorm):
    """Faulty only on groups above 512 elements: at 32x32 the tiny VAE's last block."""

    def forward(self, x):
        y = super().forward(x)
        return scale(y, 1.01) if x.shape[1:].numel() // self.num_groups > 512 else y


def test_the_pipeline_runs_with_and_without_the_swap_against_its_golden(tmp_path):
    source = tiny_pipeline(tmp_path / "snapshot")
    assert source.has_pipeline
    case = GoldenCase(32, "float32", 42, PIPELINE_MODEL)
    make_golden(tmp_path / "goldens", case, "cpu", "test", source)
    store = tmp_path / "goldens"
    baseline = run_golden_case(resolve("torch"), case, "cpu", store, source)
    assert baseline.passed, baseline.message()
    image = baseline.images["candidate"]
    assert image.shape == (32, 32, 3) and 0 <= image.min() and image.max() <= 1
    faulty = Candidate("full-res-fault", "x1.01 on large groups", FullResolutionFault)
    result = run_golden_case(faulty, case, "cpu", tmp_path / "goldens", source)
    assert not result.kernel.passed and not result.drift.passed, result.message()
    assert result.kernel.metrics.psnr_db < 100


def test_the_pipeline_needs_the_whole_snapshot(real_layout):
    with pytest.raises(WeightsError, match="needs the whole Z-Image-Turbo snapshot"):
        weights.pipeline(real_layout, "cpu", torch.float32)
