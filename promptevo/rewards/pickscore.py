"""PickScore: logit scale x cosine of a CLIP-H image and text embedding (transformers), trained
on Pick-a-Pic preferences."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from promptevo.config import TINY, ScorerConfig
from promptevo.errors import ModelNotFound
from promptevo.images import image_batch
from promptevo.model_cache import build_once, write_clip_tokenizer
from promptevo.registry import RewardInfo, register_reward
from promptevo.rewards.base import ConfiguredReward
from promptevo.rewards.clip import clip_batches

PICKSCORE_HUB = "yuvalkirstain/PickScore_v1"
PICKSCORE_PROCESSOR_HUB = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"


class PickScore(ConfiguredReward):
    """PickScore: logit scale x cosine of a CLIP-H image and text embedding (transformers)."""

    def __init__(self, config: ScorerConfig):
        import torch
        from transformers import CLIPModel, CLIPTokenizer

        from promptevo.devices import quiet_libraries, resolve_device, resolve_dtype

        quiet_libraries()
        device = resolve_device(config.device)
        dtype = resolve_dtype(config.dtype, device)
        self.config = dataclasses.replace(config, device=device, dtype=str(dtype).replace("torch.", ""))
        if config.version == TINY:
            model_src = tok_src = str(tiny_pickscore_path())
        else:
            model_src = config.checkpoint or PICKSCORE_HUB
            tok_src = config.checkpoint or PICKSCORE_PROCESSOR_HUB
        try:
            self.model = CLIPModel.from_pretrained(model_src, torch_dtype=dtype).to(device).eval()  # type: ignore[arg-type]
            self.tokenizer = CLIPTokenizer.from_pretrained(tok_src)
        except (OSError, ValueError) as exc:
            raise ModelNotFound(f"cannot load PickScore {model_src!r}: {str(exc).splitlines()[0][:200]}") from None
        self.size = int(self.model.config.vision_config.image_size)
        self.device, self.dtype = device, dtype
        self._torch = torch

    @property
    def name(self) -> str:
        return f"pickscore-{self.config.version}"

    def score(self, images, prompts: Sequence[str]) -> list[float]:
        torch = self._torch
        out: list[float] = []
        for pixels, tokens in clip_batches(image_batch(images, prompts), prompts, self, max_length=77):
            with torch.inference_mode():
                img = torch.nn.functional.normalize(_projected(self.model.get_image_features(pixel_values=pixels)), dim=-1)
                txt = torch.nn.functional.normalize(_projected(self.model.get_text_features(**tokens)), dim=-1)
                values = self.model.logit_scale.exp().float() * (img * txt).sum(-1)
            out += [float(v) for v in values.cpu()]
        return out


def _projected(output):
    """The projected embedding: a tensor (transformers 4) or the output's pooler_output, which
    transformers 5 sets to the projection."""
    import torch

    return (output if torch.is_tensor(output) else output.pooler_output).float()


def _build_tiny_pickscore(dest: Path) -> None:
    """A tiny random transformers CLIPModel (PickScore's architecture, CLIP-H at toy size) with
    CLIP's real tokenizer, saved as a folder like the hub's."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    torch.manual_seed(3)
    config = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2,
                     "vocab_size": 49408, "max_position_embeddings": 77},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(dest)
    write_clip_tokenizer(dest / "tok")
    CLIPTokenizer(str(dest / "tok" / "vocab.json"), str(dest / "tok" / "merges.txt")).save_pretrained(dest)


def tiny_pickscore_path() -> Path:
    return build_once("promptevo-tiny-pickscore-v1", _build_tiny_pickscore)


def tiny_config(info: RewardInfo, device: str, dtype: str) -> ScorerConfig:
    """The toy stand-in: the same architecture at toy size."""
    return ScorerConfig(version=TINY, arch=info.arch, device=device, dtype=dtype, kind=info.kind)


register_reward("pickscore", measures="human preference from Pick-a-Pic (PickScore, CLIP-H via transformers)",
                scale_note="logit scale x cosine, about 18-23", scale=1.0,
                needs=f"hub model {PICKSCORE_HUB} and processor {PICKSCORE_PROCESSOR_HUB} (or a local folder)",
                version="v1", arch="CLIP-H", modules=("transformers",), tiny=tiny_config)(PickScore)
