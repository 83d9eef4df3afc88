"""The LAION aesthetic predictor v2: an MLP on normalised CLIP ViT-L-14 image features; the prompt
is not used."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from promptevo.config import ScorerConfig
from promptevo.errors import ModelNotFound
from promptevo.images import image_batch
from promptevo.model_cache import build_once
from promptevo.registry import register_reward
from promptevo.rewards.base import weights_file
from promptevo.rewards.clip import ClipScore
from promptevo.rewards.hps import tiny_open_clip_config

AESTHETIC_HUB = ("camenduru/improved-aesthetic-predictor", "sac+logos+ava1-l14-linearMSE.pth")


def aesthetic_mlp(dim: int):
    """The LAION aesthetic predictor v2's head (its state dict keys are layers.N.*)."""
    from torch import nn

    class AestheticMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.Sequential(nn.Linear(dim, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                                        nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))

        def forward(self, x):
            return self.layers(x)

    return AestheticMLP()


class AestheticScore(ClipScore):
    """The LAION aesthetic predictor v2 on normalised CLIP ViT-L-14 image features; the prompt is
    not used. `checkpoint` is the MLP's file (default: fetched from the hub)."""

    def __init__(self, config: ScorerConfig):
        import torch

        super().__init__(config)
        dim = int(self.model.visual.output_dim)
        self.head = aesthetic_mlp(dim)
        path = self._head_path(config)
        try:
            self.head.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except (RuntimeError, OSError, ValueError) as exc:
            raise ModelNotFound(f"aesthetic predictor {path} does not fit a {dim}-wide CLIP ({type(exc).__name__})") from None
        self.head = self.head.to(self.device).eval()

    def _weights(self, config: ScorerConfig) -> str:
        return "openai"  # `checkpoint` names the head

    def _head_path(self, config: ScorerConfig) -> Path:
        return weights_file(config, tiny_aesthetic_checkpoint, AESTHETIC_HUB, "aesthetic predictor")

    @property
    def name(self) -> str:
        return f"aesthetic-{self.config.version}"

    def score(self, images, prompts: Sequence[str]) -> list[float]:
        import torch

        images = image_batch(images, prompts)
        with torch.inference_mode():
            values = self.head(self.image_features(images).float())
        return [float(v) for v in values.reshape(-1).cpu()]


def _build_tiny_aesthetic(dest: Path) -> None:
    """The LAION aesthetic predictor v2's MLP at the tiny CLIP's width, random and seeded."""
    import torch

    torch.manual_seed(2)
    torch.save(aesthetic_mlp(32).state_dict(), dest)


def tiny_aesthetic_checkpoint() -> Path:
    return build_once("promptevo-tiny-aesthetic-v1.pt", _build_tiny_aesthetic)


register_reward("aesthetic", measures="how beautiful the image is, prompt ignored (LAION aesthetic predictor v2: MLP on CLIP ViT-L-14)",
                scale_note="1-10", scale=0.25, needs=f"hub file {AESTHETIC_HUB[0]} {AESTHETIC_HUB[1]} plus CLIP ViT-L-14",
                version="v2", arch="ViT-L-14", modules=("open_clip",), tiny=tiny_open_clip_config)(AestheticScore)
