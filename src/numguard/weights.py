"""Real Z-Image-Turbo weights: found locally or in an offline Hugging Face cache.

Nothing here ever downloads. ``find_weights`` takes ``--weights PATH`` (a folder
holding the Z-Image-Turbo ``vae/``, or that ``vae/`` folder itself), or else looks
for ``Tongyi-MAI/Z-Image-Turbo`` in the Hugging Face cache with ``HF_HUB_OFFLINE=1``
and ``local_files_only=True``. Without either, the real-weight cases skip and say
where they looked.

The full pipeline (``ZImagePipeline``) needs the whole snapshot: ``model_index.json``
beside ``vae/``, ``transformer/``, ``text_encoder/``, ``tokenizer/`` and
``scheduler/``, and the ``transformers`` package.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

ZIMAGE_REPO = "Tongyi-MAI/Z-Image-Turbo"

# The documented Z-Image-Turbo example, which the pipeline golden reproduces.
PIPELINE_PROMPT = (
    "A fantasy landscape with mountains and a river, detailed, vibrant colors")
PIPELINE_STEPS = 9
PIPELINE_GUIDANCE = 0.0
PIPELINE_SEED = 42
PIPELINE_RESOLUTION = 1024

# Fields of the VAE config that make it Z-Image-Turbo's (the FLUX.1 VAE).
_ARCHITECTURE_FIELDS = (
    "latent_channels", "block_out_channels", "layers_per_block", "norm_num_groups",
    "up_block_types", "scaling_factor", "shift_factor", "use_post_quant_conv",
)


class WeightsError(RuntimeError):
    """Weights were asked for but cannot be used; the message says why."""


@dataclass(frozen=True)
class WeightsSource:
    root: Path  # the snapshot (holding vae/) or the vae folder itself
    origin: str  # where it came from, for messages (it may hold this machine's paths)
    from_cache: bool = False  # found in the Hugging Face cache, not given by --weights

    @property
    def vae_subfolder(self) -> str | None:
        return "vae" if (self.root / "vae" / "config.json").is_file() else None

    @property
    def has_pipeline(self) -> bool:
        return (self.root / "model_index.json").is_file()

    @property
    def label(self) -> str:
        """What a manifest records: no machine's paths, the cache's commit if known."""
        if self.from_cache:
            return f"{ZIMAGE_REPO}@{self.root.name} (Hugging Face cache)"
        return f"real weights from --weights (folder {self.root.name!r})"


@contextlib.contextmanager
def offline():
    """Set HF_HUB_OFFLINE=1 for the duration, restoring the previous value."""
    before = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before


def find_weights(path: str | Path | None, cache_dir: str | Path | None = None):
    """``(WeightsSource, "")``, or ``(None, why not)`` when no real weights are here.

    ``path`` is ``--weights``; a path that is given but unusable is an error, not a
    skip. ``cache_dir`` overrides the Hugging Face cache location.
    """
    if path is not None:
        root = Path(path).expanduser()
        if not root.is_dir():
            raise WeightsError(f"--weights {path}: no such folder")
        configs = [c for c in (root / "vae" / "config.json", root / "config.json")
                   if c.is_file()]
        if not configs:
            raise WeightsError(
                f"--weights {path} holds neither vae/config.json nor config.json; give "
                f"the Z-Image-Turbo snapshot folder (the one holding vae/) or its vae/"
            )
        try:
            json.loads(configs[0].read_text())
        except (ValueError, OSError) as exc:
            raise WeightsError(
                f"--weights {path}: {configs[0]} is not readable JSON ({exc}); the "
                f"download may be incomplete") from None
        return WeightsSource(root.resolve(), f"--weights {root}"), ""
    return _find_in_cache(cache_dir)


def _find_in_cache(cache_dir):
    from huggingface_hub import constants, snapshot_download

    where = cache_dir or constants.HF_HUB_CACHE
    missing = (
        f"real Z-Image-Turbo weights not found: pass --weights PATH (a folder holding "
        f"the Z-Image-Turbo vae/) or put {ZIMAGE_REPO} in the Hugging Face cache "
        f"({where}); nothing is downloaded at run time"
    )
    try:
        with offline():
            snapshot = snapshot_download(ZIMAGE_REPO, cache_dir=cache_dir,
                                         local_files_only=True)
    except Exception as exc:  # LocalEntryNotFoundError and friends: not cached
        log.info("no %s in the Hugging Face cache: %s", ZIMAGE_REPO, exc)
        return None, missing
    root = Path(snapshot)
    if not (root / "vae" / "config.json").is_file():
        return None, f"{missing} (the cached snapshot {root} has no vae/config.json)"
    return WeightsSource(root, f"Hugging Face cache {root} (offline)", from_cache=True), ""


def require(source: WeightsSource | None, model: str) -> WeightsSource:
    if source is None:
        raise WeightsError(f"model {model} needs real weights; pass --weights PATH")
    return source


def load_autoencoder(source: WeightsSource):
    """``AutoencoderKL`` (float32) from ``source`` or its ``vae/``; local files only."""
    from diffusers import AutoencoderKL

    with offline():
        vae = AutoencoderKL.from_pretrained(
            source.root, subfolder=source.vae_subfolder, local_files_only=True,
        )
    return vae.float().eval()


def check_zimage_config(config, where: str) -> None:
    """Raise WeightsError unless ``config`` is the Z-Image-Turbo VAE architecture."""
    from numguard.zimage import VAE_CONFIG

    wrong = [
        f"{name} is {_plain(config.get(name))}, expected {_plain(VAE_CONFIG[name])}"
        for name in _ARCHITECTURE_FIELDS
        if _plain(config.get(name)) != _plain(VAE_CONFIG[name])
    ]
    if wrong:
        raise WeightsError(
            f"the VAE at {where} is not Z-Image-Turbo's: " + "; ".join(wrong))


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value


_VAES: dict[Path, tuple] = {}


def zimage_vae(source: WeightsSource):
    """A fresh copy of the real VAE (float32) and its weights hash; loaded once."""
    from numguard.zimage import state_dict_sha256

    if source.root not in _VAES:
        vae = load_autoencoder(source)
        check_zimage_config(vae.config, str(source.root))
        _VAES[source.root] = (vae, state_dict_sha256(vae.state_dict()))
        log.info("loaded the Z-Image-Turbo VAE from %s", source.origin)
    vae, sha = _VAES[source.root]
    return copy.deepcopy(vae), sha


def folder_sha256(root: Path) -> str:
    """sha256 over every file under ``root`` (relative path and contents, sorted)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


_PIPELINES: dict[tuple, tuple] = {}


def pipeline(source: WeightsSource, device: str, dtype: torch.dtype):
    """``ZImagePipeline`` from ``source`` on ``device``, and its files' hash; cached."""
    key = (source.root, device, dtype)
    if key in _PIPELINES:
        return _PIPELINES[key]
    if not source.has_pipeline:
        raise WeightsError(
            f"the full pipeline needs the whole Z-Image-Turbo snapshot "
            f"(model_index.json beside vae/, transformer/, text_encoder/, tokenizer/, "
            f"scheduler/) and {source.root} has no model_index.json"
        )
    try:
        from diffusers import ZImagePipeline
    except ImportError as exc:
        raise WeightsError(f"the full pipeline needs transformers: {exc}") from None
    with offline(), warnings.catch_warnings():
        # newer diffusers call it dtype and warn on torch_dtype; older ones know only
        # torch_dtype
        warnings.simplefilter("ignore", FutureWarning)
        pipe = ZImagePipeline.from_pretrained(source.root, torch_dtype=dtype,
                                              local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    _PIPELINES[key] = (pipe.to(device), folder_sha256(source.root))
    return _PIPELINES[key]


def pipeline_image(pipe, resolution: int, seed: int) -> np.ndarray:
    """The documented example at ``resolution``: an HxWx3 float32 image in [0, 1].

    The initial latents come from a CPU generator, so every device starts from the
    same noise.
    """
    generator = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        out = pipe(
            prompt=PIPELINE_PROMPT, height=resolution, width=resolution,
            num_inference_steps=PIPELINE_STEPS, guidance_scale=PIPELINE_GUIDANCE,
            generator=generator, output_type="np",
        )
    return np.ascontiguousarray(out.images[0], dtype=np.float32)
