"""CLIP score: 100 x cosine between the image and the user's original prompt (open_clip ViT-L-14,
OpenAI weights), with CLIP's own evaluation transform."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from promptevo.config import TINY, ScorerConfig
from promptevo.errors import ModelNotFound
from promptevo.model_cache import build_once
from promptevo.registry import register_reward
from promptevo.rewards.hps import (
    TINY_HPS_ARCH,
    HPSScorer,
    register_tiny_open_clip_config,
    tiny_open_clip_config,
)


def clip_preprocess(images, size: int, mean: Sequence[float], std: Sequence[float]):
    """CLIP's evaluation transform on tensors: bicubic resize of the shorter side, centre crop,
    normalisation."""
    import torch
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    images = TF.resize(images, size, InterpolationMode.BICUBIC, antialias=True)
    images = TF.center_crop(images, [size, size])
    mean_t = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - mean_t) / std_t


def clip_batches(images, prompts: Sequence[str], reward: Any, max_length: int) -> Iterator[tuple[Any, Any]]:
    """(pixels, tokens) per chunk of `reward.config.max_batch` images: quantised as a PNG holds
    them, CLIP's OpenAI transform at `reward.size` in `reward.dtype`, prompts padded to
    `max_length` tokens by `reward.tokenizer`, both on `reward.device` (transformers rewards)."""
    import torch
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    step = reward.config.max_batch
    for i in range(0, len(images), step):
        chunk = (images[i : i + step].to(reward.device, torch.float32).clamp(0, 1) * 255).round() / 255
        pixels = clip_preprocess(chunk, reward.size, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD).to(reward.dtype)
        tokens = reward.tokenizer(list(prompts[i : i + step]), padding="max_length", truncation=True, max_length=max_length,
                                  return_tensors="pt").to(reward.device)
        yield pixels, tokens


class ClipScore(HPSScorer):
    """100 x cosine between the image and the prompt, with CLIP's own weights and transform."""

    def _build_model(self, config: ScorerConfig):
        import open_clip
        import torch

        from promptevo.devices import quiet_root_logger

        if config.version == TINY:
            register_tiny_open_clip_config()
            with quiet_root_logger():
                model = open_clip.create_model(config.arch, pretrained=None)
            model.load_state_dict(torch.load(tiny_clip_checkpoint(), map_location="cpu", weights_only=True)["state_dict"])
            return model
        source = self._weights(config)
        try:
            with quiet_root_logger():  # OpenAI's weights were trained with QuickGELU (open_clip's ViT-L-14 has GELU)
                return open_clip.create_model(config.arch, pretrained=source, force_quick_gelu=source == "openai")
        except Exception as exc:  # noqa: BLE001 - hub and file errors mean the same to the user
            raise ModelNotFound(f"cannot load CLIP {config.arch} weights {source!r} ({type(exc).__name__}); "
                                "download them once, or pass a local file as the reward's checkpoint") from None

    def _weights(self, config: ScorerConfig) -> str:
        return config.checkpoint or "openai"

    def preprocess(self, chunk):
        return clip_preprocess(chunk, self.image_size, self.mean, self.std)

    @property
    def name(self) -> str:
        return f"clip-{self.config.version}"


def _build_tiny_clip(dest: Path) -> None:
    """Random weights of the tiny open_clip architecture, seeded apart from the tiny HPS, for the
    CLIP-score reward (the real one is ViT-L-14 with OpenAI's weights)."""
    import open_clip
    import torch

    from promptevo.devices import quiet_root_logger

    register_tiny_open_clip_config()
    torch.manual_seed(1)
    with quiet_root_logger():
        model = open_clip.create_model(TINY_HPS_ARCH, pretrained=None)
    torch.save({"state_dict": model.state_dict()}, dest)


def tiny_clip_checkpoint() -> Path:
    return build_once("promptevo-tiny-clip-v1.pt", _build_tiny_clip)


register_reward("clip", measures="agreement of the image with the user's original prompt (CLIP score, open_clip ViT-L-14, OpenAI weights)",
                scale_note="100 x cosine, about 15-35", scale=1.0,
                needs="OpenAI CLIP ViT-L-14 weights through open_clip (or a local file)", version="ViT-L-14",
                arch="ViT-L-14", modules=("open_clip",), tiny=tiny_open_clip_config)(ClipScore)
