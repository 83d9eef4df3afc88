"""FLUX.1-schnell and SD3.5 Large Turbo at full size with random weights, for GPU figures without
downloads (`bench --faithful flux-schnell|sd35-turbo`): the published component configurations
(transformer, VAE with 16-channel latents, CLIP-L, OpenCLIP-bigG and T5-XXL encoders, the
flow-matching scheduler), built in bfloat16 straight away (FLUX alone is 12 B parameters: 48 GB in
float32) and saved once into the cache (`renderers/faithful.py`). The T5 side reads the T5-like stand-in tokenizer (no T5
vocabulary ships offline); its ids stay inside T5's 32,128."""

from __future__ import annotations

import contextlib


def flux_transformer():
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                                  num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
                                  guidance_embeds=False, axes_dims_rope=(16, 56, 56))


def sd35_large_transformer():
    from diffusers import SD3Transformer2DModel

    return SD3Transformer2DModel(sample_size=128, patch_size=2, in_channels=16, num_layers=38, attention_head_dim=64,
                                 num_attention_heads=38, joint_attention_dim=4096, caption_projection_dim=2432,
                                 pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=192, qk_norm="rms_norm")


def t5_xxl_encoder():
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                                   feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
                                   relative_attention_max_distance=128, is_encoder_decoder=False))


def vae16(scaling_factor: float, shift_factor: float):
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                         latent_channels=16, sample_size=1024, scaling_factor=scaling_factor, shift_factor=shift_factor,
                         use_quant_conv=False, use_post_quant_conv=False)


def build_flux_schnell(clip_l, tokenizer):
    """FLUX.1-schnell around the given CLIP-L text encoder (no projection) and its tokenizer."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    from promptevo.renderers.tiny_dit import _t5_like_tokenizer

    return FluxPipeline(transformer=flux_transformer(), vae=vae16(0.3611, 0.1159),
                        scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False),
                        text_encoder=clip_l, tokenizer=tokenizer, text_encoder_2=t5_xxl_encoder(),
                        tokenizer_2=_t5_like_tokenizer(512))


def build_sd35_turbo(clip_l, clip_g, tokenizer):
    """SD3.5 Large Turbo around the given CLIP-L and bigG text encoders (with projections)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    from promptevo.renderers.tiny_dit import _t5_like_tokenizer

    return StableDiffusion3Pipeline(
        transformer=sd35_large_transformer(), vae=vae16(1.5305, 0.0609), scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        text_encoder=clip_l, tokenizer=tokenizer, text_encoder_2=clip_g, tokenizer_2=tokenizer,
        text_encoder_3=t5_xxl_encoder(), tokenizer_3=_t5_like_tokenizer(512))


@contextlib.contextmanager
def default_dtype(dtype):
    """Parameters made in `dtype` from the start (no float32 copy of a 12 B model in memory)."""
    import torch

    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)
