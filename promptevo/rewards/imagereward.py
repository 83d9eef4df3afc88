"""ImageReward: BLIP ViT-L/16 and a BERT with cross-attention, an MLP head; the official checkpoint
loads into transformers' BLIP modules by a fixed renaming (the image-reward package's old timm and
fairscale pins stay out)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from promptevo.config import TINY, ScorerConfig
from promptevo.errors import ModelNotFound
from promptevo.images import image_batch
from promptevo.model_cache import build_once
from promptevo.registry import register_reward
from promptevo.rewards.aesthetic import aesthetic_mlp
from promptevo.rewards.base import ConfiguredReward, weights_file
from promptevo.rewards.clip import clip_batches
from promptevo.rewards.pickscore import tiny_config

IMAGEREWARD_HUB = ("THUDM/ImageReward", "ImageReward.pt")
IMAGEREWARD_MEAN, IMAGEREWARD_STD = 0.16717362830052426, 1.0333394966054072  # the official standardisation
IMAGEREWARD_SIZES: dict[str, dict[str, dict[str, Any]]] = {  # BLIP ViT-L/16 at 224 and BERT-base with cross-attention; the tiny one at toy size
    "v1.0": {"vision": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                            image_size=224, patch_size=16),
             "text": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                          max_position_embeddings=512)},
    TINY: {"vision": dict(hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                          image_size=224, patch_size=32),  # widths 4x, as in the real one
           "text": dict(hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                        max_position_embeddings=64)},
}
_NAMES = [  # the official checkpoint's BLIP names <-> transformers' BLIP module names ({n}: a layer)
    ("blip.visual_encoder.cls_token", "vision.embeddings.class_embedding"),
    ("blip.visual_encoder.pos_embed", "vision.embeddings.position_embedding"),
    ("blip.visual_encoder.patch_embed.proj.", "vision.embeddings.patch_embedding."),
    ("blip.visual_encoder.blocks.{n}.norm1.", "vision.encoder.layers.{n}.layer_norm1."),
    ("blip.visual_encoder.blocks.{n}.norm2.", "vision.encoder.layers.{n}.layer_norm2."),
    ("blip.visual_encoder.blocks.{n}.attn.qkv.", "vision.encoder.layers.{n}.self_attn.qkv."),
    ("blip.visual_encoder.blocks.{n}.attn.proj.", "vision.encoder.layers.{n}.self_attn.projection."),
    ("blip.visual_encoder.blocks.{n}.mlp.", "vision.encoder.layers.{n}.mlp."),
    ("blip.visual_encoder.norm.", "vision.post_layernorm."),
    ("blip.text_encoder.", "text."),  # BLIP's BERT and transformers' BlipTextModel share their names
    ("mlp.layers.", "head.layers."),
]


def rename(key: str, *, to_official: bool = False) -> str | None:
    """One parameter's name in the other naming, or None when the other side has no such part."""
    import re

    for official, ours in _NAMES:
        source, target = (ours, official) if to_official else (official, ours)
        m = re.match(re.escape(source).replace(re.escape("{n}"), r"(\d+)"), key)
        if m is None:
            continue
        head = target.replace("{n}", m.group(1)) if m.groups() else target
        if source.endswith("."):  # a prefix: the rest of the name carries over
            return head + key[m.end():]
        if m.end() == len(key):
            return head
    return None


def imagereward_tokenizer():
    """bert-base-uncased's WordPiece vocabulary (the copy the bundled all-MiniLM-L6-v2 carries,
    so nothing is downloaded) with BLIP's [DEC] and [ENC] tokens, as ImageReward tokenises."""
    from transformers import BertTokenizer

    from promptevo.embed import embedder_path

    tok = BertTokenizer(str(Path(embedder_path("all-MiniLM-L6-v2")) / "vocab.txt"), do_lower_case=True)
    tok.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    return tok


def imagereward_model(version: str):
    """The architecture, randomly initialised: a BlipVisionModel, a BlipTextModel that attends to
    the image, and the reward MLP on the text's first token."""
    from torch import nn
    from transformers import (
        BlipTextConfig,
        BlipTextModel,
        BlipVisionConfig,
        BlipVisionModel,
    )

    sizes = IMAGEREWARD_SIZES[version]
    vision = BlipVisionModel(BlipVisionConfig(**sizes["vision"], layer_norm_eps=1e-6, hidden_act="gelu"))
    text = BlipTextModel(BlipTextConfig(**sizes["text"], vocab_size=30524, encoder_hidden_size=sizes["vision"]["hidden_size"],
                                        layer_norm_eps=1e-12, hidden_act="gelu"), add_pooling_layer=False)
    model = nn.Module()
    model.vision, model.text, model.head = vision, text, aesthetic_mlp(sizes["text"]["hidden_size"])
    return model


def imagereward_state(official: dict) -> dict:
    """An official ImageReward state dict in this module's names (unused parts dropped)."""
    return {ours: value for key, value in official.items() if (ours := rename(key))}


class ImageRewardScore(ConfiguredReward):
    """ImageReward: (MLP(BERT([CLS] | image)) - mean) / std, as the official `score` computes it.
    The official checkpoint loads into transformers' BLIP modules by a fixed renaming."""

    def __init__(self, config: ScorerConfig):
        import torch

        from promptevo.devices import quiet_libraries, resolve_device, resolve_dtype

        quiet_libraries()
        device = resolve_device(config.device)
        dtype = resolve_dtype(config.dtype, device)
        self.config = dataclasses.replace(config, device=device, dtype=str(dtype).replace("torch.", ""))
        version = TINY if config.version == TINY else "v1.0"
        self.model = imagereward_model(version)
        path = self._checkpoint(config)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            missing, _ = self.model.load_state_dict(imagereward_state(state.get("state_dict", state)), strict=False)
        except (RuntimeError, OSError, ValueError) as exc:
            raise ModelNotFound(f"ImageReward checkpoint {path} does not fit ({type(exc).__name__}: {str(exc)[:200]})") from None
        if [k for k in missing if not k.endswith("position_ids")]:
            raise ModelNotFound(f"ImageReward checkpoint {path} lacks {len(missing)} weights, e.g. {missing[0]}")
        self.model = self.model.to(device=device, dtype=dtype).eval()
        self.tokenizer = imagereward_tokenizer()
        self.size = IMAGEREWARD_SIZES[version]["vision"]["image_size"]
        self.device, self.dtype = device, dtype

    def _checkpoint(self, config: ScorerConfig) -> Path:
        return weights_file(config, tiny_imagereward_checkpoint, IMAGEREWARD_HUB, "ImageReward checkpoint")

    @property
    def name(self) -> str:
        return f"imagereward-{self.config.version}"

    def score(self, images, prompts: Sequence[str]) -> list[float]:
        import torch

        out: list[float] = []
        for pixels, tokens in clip_batches(image_batch(images, prompts), prompts, self, max_length=35):
            with torch.inference_mode():
                embeds = self.model.vision(pixel_values=pixels).last_hidden_state
                mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=self.device)
                text = self.model.text(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask,
                                       encoder_hidden_states=embeds, encoder_attention_mask=mask).last_hidden_state
                rewards = (self.model.head(text[:, 0, :].float()).reshape(-1) - IMAGEREWARD_MEAN) / IMAGEREWARD_STD
            out += [float(v) for v in rewards.cpu()]
        return out


def _build_tiny_imagereward(dest: Path) -> None:
    """ImageReward's architecture at toy size, random and seeded, saved under the official
    checkpoint's names so it loads through the same renaming as the real file."""
    import torch

    torch.manual_seed(4)
    state = imagereward_model("tiny").state_dict()
    torch.save({rename(k, to_official=True): v for k, v in state.items() if rename(k, to_official=True)}, dest)


def tiny_imagereward_checkpoint() -> Path:
    return build_once("promptevo-tiny-imagereward-v1.pt", _build_tiny_imagereward)


register_reward("imagereward", measures="human preference (ImageReward: BLIP ViT-L/16 and a BERT with cross-attention, MLP head)",
                scale_note="standardised, about -2 to 2", scale=0.25,
                needs=f"hub file {IMAGEREWARD_HUB[0]} {IMAGEREWARD_HUB[1]} (or a local file); built on transformers' BLIP "
                      "modules, not the image-reward package (its old timm and fairscale pins stay out)",
                version="v1.0", arch="BLIP", modules=("transformers",), tiny=tiny_config)(ImageRewardScore)
