"""The GPU benchmark's random-weight models have the published architectures: built on the meta
device (no memory, no download), their parameter counts equal the released checkpoints'."""

from promptevo.renderers import faithful


def count(module):
    return sum(p.numel() for p in module.parameters())


def test_faithful_models_match_published_parameter_counts():
    import open_clip
    from accelerate import init_empty_weights

    from promptevo.devices import quiet_root_logger

    with init_empty_weights():
        assert count(faithful.sd_turbo_unet()) == 865_910_724  # SD 2.1 / SD-Turbo UNet
        assert count(faithful.sdxl_turbo_unet()) == 2_567_463_684  # SDXL / SDXL-Turbo UNet
        assert count(faithful._vae(0.18215)) == 83_653_863
        assert count(faithful._clip_text(1024, 23, 16, 4096, "gelu")) == 340_387_840  # OpenCLIP ViT-H text
        assert count(faithful._clip_text(768, 12, 12, 3072, "quick_gelu")) == 123_060_480  # CLIP ViT-L text
        assert count(faithful._clip_text(1280, 32, 20, 5120, "gelu", projection=1280)) == 694_659_840  # bigG
    with quiet_root_logger():
        assert count(open_clip.create_model("ViT-H-14", pretrained=None, device="meta")) == 986_109_441  # HPS v2


def test_faithful_flux_and_sd3_have_the_published_sizes():
    """FLUX.1-schnell's transformer (11.9 B), SD3.5 Large's (8.1 B) and T5-XXL's encoder (4.76 B,
    its embedding tied), built on the meta device; their latents have 16 channels."""
    import torch

    from promptevo.renderers import faithful_dit

    with torch.device("meta"):
        assert count(faithful_dit.flux_transformer()) == 11_891_178_560
        assert 8.0e9 < count(faithful_dit.sd35_large_transformer()) < 8.1e9
        assert count(faithful_dit.t5_xxl_encoder()) == 4_762_310_656
        assert faithful_dit.vae16(0.3611, 0.1159).config.latent_channels == 16
        flux, sd3 = faithful.build_flux_schnell(), faithful.build_sd35_turbo()  # the pipelines assemble
    assert (type(flux).__name__, type(sd3).__name__) == ("FluxPipeline", "StableDiffusion3Pipeline")
    assert flux.vae_scale_factor == sd3.vae_scale_factor == 8 and sd3.text_encoder_2.config.hidden_size == 1280
    assert set(faithful.FAITHFUL) == {"sd-turbo", "sdxl-turbo", "flux-schnell", "sd35-turbo"}
