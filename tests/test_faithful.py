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
