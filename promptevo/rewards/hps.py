"""HPS v2 / v2.1 scoring on open_clip: the model is loaded once, images are scored in batches,
and each prompt's text features are computed once.

Score = 100 x cosine(image features, text features), the scale of the HPS leaderboard and of
the seed paper (the official `hpsv2.score` returns the raw cosine). Preprocessing follows the
official evaluation transform: RGB, ToTensor, bicubic resize of the longest side to the model's
size with zero padding to a square, then normalisation. open_clip's default Resize+CenterCrop
moves scores by about 0.03 on this scale, so it is not used.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from promptevo.config import TINY, ScorerConfig
from promptevo.devices import (
    quiet_libraries,
    quiet_root_logger,
    resolve_device,
    resolve_dtype,
)
from promptevo.errors import ModelNotFound
from promptevo.images import image_batch
from promptevo.model_cache import build_once
from promptevo.registry import RewardInfo, RewardModel, register_reward

HPS_HUB_REPO = "xswu/HPSv2"
TINY_HPS_NAME = "tiny-hps-v1.pt"
TINY_HPS_ARCH = "promptevo-tiny-hps"
_CONFIGS = Path(__file__).parent / "tiny_configs"
HPS_HUB_FILES = {"v2.0": "HPS_v2_compressed.pt", "v2.1": "HPS_v2.1_compressed.pt"}


def checkpoint_path(config: ScorerConfig) -> Path:
    if config.checkpoint:
        path = Path(config.checkpoint).expanduser()
        if not path.is_file():
            raise ModelNotFound(f"HPS checkpoint {path} does not exist; pass --hps-checkpoint PATH")
        return path
    if config.version == TINY:
        return tiny_hps_checkpoint()
    filename = HPS_HUB_FILES.get(config.version)
    if filename is None:
        raise ModelNotFound(f"unknown HPS version {config.version!r}; use one of {', '.join(HPS_HUB_FILES)}")
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(HPS_HUB_REPO, filename))
    except Exception as exc:  # noqa: BLE001 - any hub failure means the same thing to the user
        raise ModelNotFound(
            f"cannot get the HPS {config.version} checkpoint ({type(exc).__name__}). Download "
            f"{filename} from the hub repository {HPS_HUB_REPO} and pass --hps-checkpoint PATH."
        ) from None


def hps_preprocess(images, image_size: int, mean: Sequence[float], std: Sequence[float]):
    """[N, 3, H, W] floats in [0, 1] -> normalised [N, 3, S, S]: resize the longest side to S
    (bicubic, antialiased, as torchvision does on tensors) and pad to a square with zeros."""
    import torch
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    height, width = images.shape[-2:]
    scale = image_size / float(max(height, width))
    if scale != 1.0:
        new_h, new_w = round(height * scale), round(width * scale)
        images = TF.resize(images, [new_h, new_w], InterpolationMode.BICUBIC, antialias=True)
        pad_h, pad_w = image_size - new_h, image_size - new_w
        images = TF.pad(images, [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=0)
    mean_t = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - mean_t) / std_t


class HPSScorer(RewardModel):
    def __init__(self, config: ScorerConfig):
        import open_clip
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        quiet_libraries()
        device = resolve_device(config.device)
        dtype = resolve_dtype(config.dtype, device)
        self.config = dataclasses.replace(config, device=device, dtype=str(dtype).replace("torch.", ""))
        model = self._build_model(self.config)
        self.model = model.to(device=device, dtype=dtype).eval()
        self.tokenizer = open_clip.get_tokenizer(config.arch)
        size = model.visual.image_size
        self.image_size = size[0] if isinstance(size, (tuple, list)) else int(size)
        self.mean, self.std = OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
        self.device, self.dtype = device, dtype
        self._text_features: dict[str, Any] = {}
        self.image_forwards = 0

    def _build_model(self, config: ScorerConfig):
        """The open_clip model with its weights: here the HPS checkpoint (subclasses load others)."""
        import open_clip
        import torch

        if config.version == TINY:
            register_tiny_open_clip_config()
        ckpt = checkpoint_path(config)
        with quiet_root_logger():
            model = open_clip.create_model(config.arch, pretrained=None)
        try:
            state = torch.load(ckpt, map_location="cpu", weights_only=True)
            model.load_state_dict(state.get("state_dict", state))
        except (RuntimeError, OSError, ValueError, AttributeError) as exc:
            raise ModelNotFound(
                f"HPS checkpoint {ckpt} does not fit the {config.arch} model ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200]})"
            ) from None
        return model

    def preprocess(self, chunk):
        """[N, 3, H, W] in [0, 1] -> the model's normalised input (HPS's evaluation transform)."""
        return hps_preprocess(chunk, self.image_size, self.mean, self.std)

    def image_features(self, images):
        """Normalised image features of a [N, 3, H, W] batch in [0, 1], in chunks of max_batch."""
        import torch

        out = []
        step = self.config.max_batch
        for i in range(0, len(images), step):
            chunk = images[i : i + step].to(self.device, torch.float32)
            chunk = (chunk.clamp(0, 1) * 255).round() / 255  # what a PNG would hold
            with torch.inference_mode():
                out.append(self.model.encode_image(self.preprocess(chunk).to(self.dtype), normalize=True))
                self.image_forwards += 1
        return torch.cat(out)

    @property
    def name(self) -> str:
        return f"hps-{self.config.version}"

    @property
    def version(self) -> str:
        return self.config.version

    def clear_cache(self) -> None:
        self._text_features.clear()

    def text_features(self, prompts: Sequence[str]):
        """Normalised text features, computed once per distinct prompt."""
        import torch

        missing = [p for p in dict.fromkeys(prompts) if p not in self._text_features]
        if missing:
            with torch.inference_mode():
                tokens = self.tokenizer(missing).to(self.device)
                feats = self.model.encode_text(tokens, normalize=True)
            for p, f in zip(missing, feats):
                self._text_features[p] = f
        return torch.stack([self._text_features[p] for p in prompts])

    def score(self, images, prompts: Sequence[str]) -> list[float]:
        """Score each image against its prompt. `images`: a [N, 3, H, W] tensor in [0, 1]
        (the renderer's output, on any device) or a list of PIL images."""
        import torch

        img = self.image_features(image_batch(images, prompts))
        with torch.inference_mode():
            txt = self.text_features(list(prompts))
            cos = (img.float() * txt.float()).sum(dim=-1)
        return [100.0 * float(v) for v in cos.cpu()]


def register_tiny_open_clip_config() -> None:
    import open_clip

    if TINY_HPS_ARCH not in open_clip.list_models():
        open_clip.add_model_config(_CONFIGS / f"{TINY_HPS_ARCH}.json")


def _build_tiny_hps(dest: Path) -> None:
    import open_clip
    import torch

    from promptevo.devices import quiet_root_logger

    register_tiny_open_clip_config()
    torch.manual_seed(0)
    with quiet_root_logger():
        model = open_clip.create_model(TINY_HPS_ARCH, pretrained=None)
    # Same layout as the HPS checkpoints: {"state_dict": ...}
    torch.save({"state_dict": model.state_dict()}, dest)


def tiny_hps_checkpoint() -> Path:
    """Checkpoint file of the tiny HPS-architecture scorer, built on first use."""
    return build_once(TINY_HPS_NAME, _build_tiny_hps)


def tiny_open_clip_config(info: RewardInfo, device: str, dtype: str) -> ScorerConfig:
    """The toy stand-in of an open_clip reward: the tiny open_clip architecture (its own seeded weights)."""
    return ScorerConfig(version=TINY, arch=TINY_HPS_ARCH, device=device, kind=info.kind)


register_reward("hps", measures="human preference for the image given the prompt (HPS v2/v2.1, open_clip ViT-H-14)",
                scale_note="100 x cosine; images of one prompt differ by about 1-3", scale=1.0,
                needs="hub file xswu/HPSv2 HPS_v2.1_compressed.pt (or a local checkpoint)", version="v2.1",
                arch="ViT-H-14", modules=("open_clip",), tiny=tiny_open_clip_config)(HPSScorer)
