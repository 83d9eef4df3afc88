"""Architecture-faithful models with random weights, for GPU benchmarks without downloads:
SD-Turbo (the Stable Diffusion 2.1 architecture), SDXL-Turbo (SDXL) and the ViT-H-14 HPS model,
built from their published configurations. Their FLOPs and memory traffic are those of the real
models; their pictures are noise. Built once into the cache (fp16 on disk) and loaded through
the same loaders as real checkpoints.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from promptevo.config import Profile, RenderConfig, ScorerConfig, get_profile

FAITHFUL = ("sd-turbo", "sdxl-turbo", "flux-schnell", "sd35-turbo")  # the last two: renderers/faithful_dit.py


def _clip_text(hidden: int, layers: int, heads: int, intermediate: int, act: str, projection: int | None = None):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(vocab_size=49408, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                         num_attention_heads=heads, max_position_embeddings=77, hidden_act=act,
                         projection_dim=projection or 512, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    return CLIPTextModelWithProjection(cfg) if projection else CLIPTextModel(cfg)


def _vae(scaling_factor: float):
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
                         layers_per_block=2, latent_channels=4, sample_size=512, scaling_factor=scaling_factor)


def _scheduler():
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                  timestep_spacing="trailing", prediction_type="epsilon", steps_offset=1)


def _tokenizer():
    from transformers import CLIPTokenizer

    from promptevo.renderers.tiny import tiny_sd_path

    return CLIPTokenizer.from_pretrained(tiny_sd_path() / "tokenizer")  # the real CLIP BPE vocabulary


def sd_turbo_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
    )


def sdxl_turbo_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
    )


def build_sd_turbo():
    """stabilityai/sd-turbo: the SD 2.1 UNet (865M), OpenCLIP ViT-H text encoder (23 layers)."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=_vae(0.18215), text_encoder=_clip_text(1024, 23, 16, 4096, "gelu"), tokenizer=_tokenizer(), unet=sd_turbo_unet(),
        scheduler=_scheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def build_sdxl_turbo():
    """stabilityai/sdxl-turbo: the SDXL UNet (2.6B), CLIP ViT-L and OpenCLIP bigG text encoders."""
    from diffusers import StableDiffusionXLPipeline

    return StableDiffusionXLPipeline(
        vae=_vae(0.13025), text_encoder=_clip_text(768, 12, 12, 3072, "quick_gelu"),
        text_encoder_2=_clip_text(1280, 32, 20, 5120, "gelu", projection=1280), tokenizer=_tokenizer(),
        tokenizer_2=_tokenizer(), unet=sdxl_turbo_unet(), scheduler=_scheduler(), force_zeros_for_empty_prompt=True,
    )


def build_flux_schnell():
    from promptevo.renderers.faithful_dit import build_flux_schnell as build

    return build(_clip_text(768, 12, 12, 3072, "quick_gelu"), _tokenizer())


def build_sd35_turbo():
    from promptevo.renderers.faithful_dit import build_sd35_turbo as build

    return build(_clip_text(768, 12, 12, 3072, "quick_gelu", projection=768),
                 _clip_text(1280, 32, 20, 5120, "gelu", projection=1280), _tokenizer())


def save_faithful_pipeline(name: str, dest: Path) -> None:
    """Build `name` with seeded random weights and save it as a diffusers folder: SD-Turbo and
    SDXL-Turbo in float16, FLUX and SD3.5 made in bfloat16 from the start."""
    import torch

    from promptevo.renderers.faithful_dit import default_dtype

    builders = {"sd-turbo": build_sd_turbo, "sdxl-turbo": build_sdxl_turbo, "flux-schnell": build_flux_schnell,
                "sd35-turbo": build_sd35_turbo}
    torch.manual_seed(0)
    if name in ("flux-schnell", "sd35-turbo"):
        with default_dtype(torch.bfloat16):
            builders[name]().save_pretrained(dest)
    else:
        builders[name]().to(torch.float16).save_pretrained(dest)


def faithful_pipeline_path(name: str) -> Path:
    """The model's folder in the cache, built on first use."""
    from promptevo.model_cache import build_once

    return build_once(f"faithful-{name}-v1", lambda dest: save_faithful_pipeline(name, dest))


def faithful_hps_state() -> dict:
    """Random ViT-H-14 open_clip weights (float16) in the layout of HPS_v2_compressed.pt."""
    import open_clip
    import torch

    from promptevo.devices import quiet_root_logger

    torch.manual_seed(0)
    with quiet_root_logger():
        model = open_clip.create_model("ViT-H-14", pretrained=None)
    return {"state_dict": {k: v.half() for k, v in model.state_dict().items()}}


def faithful_hps_checkpoint() -> Path:
    from promptevo.model_cache import build_once

    def build(dest: Path) -> None:
        import torch

        torch.save(faithful_hps_state(), dest)

    return build_once("faithful-hps-vit-h-14-v1.pt", build)


def faithful_profile(name: str, device: str = "auto") -> Profile:
    """The model's own profile's sampling (SD-Turbo and SDXL-Turbo: 1 step, 512x512, fp16; FLUX
    and SD3.5: 4 steps, 1024x1024, bf16, their T5 window) on random weights, HPS ViT-H-14."""
    if name in ("flux-schnell", "sd35-turbo"):
        from promptevo.render_models import MODELS

        base = get_profile(name)
        render = dataclasses.replace(base.render, model=str(faithful_pipeline_path(name)), device=device,
                                     max_sequence_length=MODELS[base.render.model].window)
    else:
        base = get_profile("paper" if name == "sdxl-turbo" else "gpu")
        render = RenderConfig(model=str(faithful_pipeline_path(name)), steps=1, guidance=0.0, width=512, height=512,
                              dtype="float16", device=device, max_batch=base.render.max_batch)
    scorer = ScorerConfig(version="v2.0", arch="ViT-H-14", checkpoint=str(faithful_hps_checkpoint()), device=device,
                          dtype="float16", max_batch=base.scorer.max_batch)
    return dataclasses.replace(base, name=f"faithful-{name}", description=f"{name} and HPS ViT-H-14, random weights",
                               render=render, scorer=scorer)
