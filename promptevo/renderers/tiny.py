"""The tiny Stable Diffusion pipeline and TAESD decoder: the real architectures at toy size with seeded random weights.

They are built from configs once, saved to the cache folder, and then loaded back through the
same `from_pretrained` / checkpoint code that loads real weights, so the tiny profile exercises
the real loading path (each reward builds its own stand-in beside its real loader). Nothing here touches the network.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from promptevo.model_cache import build_once, write_clip_tokenizer

TINY_SD_NAME = "tiny-sd-v1"


def _build_tiny_sd(dest: Path) -> None:
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="trailing",
        steps_offset=1,
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
            hidden_size=32,
            intermediate_size=37,
            layer_norm_eps=1e-05,
            num_attention_heads=4,
            num_hidden_layers=5,
            vocab_size=49408,
            max_position_embeddings=77,
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        write_clip_tokenizer(Path(tmp))
        tokenizer = CLIPTokenizer(
            str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"), model_max_length=77
        )
    pipe = StableDiffusionPipeline(
        unet=unet,
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(dest)  # type: ignore[attr-defined]


def tiny_sd_path() -> Path:
    """Folder of the tiny Stable Diffusion pipeline, built on first use."""
    return build_once(TINY_SD_NAME, _build_tiny_sd)


def _build_tiny_taesd(dest: Path) -> None:
    """A tiny random AutoencoderTiny (the TAESD architecture) matching the tiny SD latents."""
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    AutoencoderTiny(  # type: ignore[attr-defined]
        encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8), num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1), latent_channels=4, upsampling_scaling_factor=2,
    ).save_pretrained(dest)


def tiny_taesd_path() -> Path:
    """Folder of the tiny TAESD decoder (`--tiny-vae tiny`), built on first use."""
    return build_once("promptevo-tiny-taesd-v1", _build_tiny_taesd)
