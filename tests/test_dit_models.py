"""FLUX and SD3 at toy size (issue 30, part): the real pipeline classes built from configs
offline, rendered, scored and optimised; each model's own text window (CLIP 77 for SD, the long
T5-like encoder for FLUX and SD3); the model table's defaults and the settings it refuses."""

import dataclasses

import pytest

from promptevo.config import PROFILES, RenderConfig
from promptevo.errors import UserError
from promptevo.render_models import MODELS, check

LONG = ("a lone samurai standing on a misty mountain ridge at dawn, cherry blossoms drifting in the cold wind, "
        "ornate lacquered armour with gold inlays, a katana resting on his shoulder, distant pagodas below the clouds, "
        "volumetric golden light, cinematic composition, ultra detailed, sharp focus, dramatic rim lighting, "
        "muted earthy palette with crimson accents, shot on a medium format camera, award winning photograph")


@pytest.fixture(scope="module")
def dit_renderers():
    from promptevo.renderers.diffusers import DiffusersRenderer

    tiny = PROFILES["tiny"].render
    out = {}
    for name in ("tiny-flux", "tiny-sd3"):
        config = dataclasses.replace(tiny, model=name, kind="diffusers", steps=2, width=64, height=64)
        out[name] = DiffusersRenderer(config)
    return out


def test_tiny_flux_and_sd3_render_deterministic_images(dit_renderers):
    import torch

    for name, r in dit_renderers.items():
        assert type(r.pipe).__name__ == {"tiny-flux": "FluxPipeline", "tiny-sd3": "StableDiffusion3Pipeline"}[name]
        a = r.render(["a fox", "a waterfall"], [1, 2]).images
        b = r.render(["a fox"], [1]).images
        assert a.shape == (2, 3, 64, 64) and torch.isfinite(a).all()
        assert torch.allclose(a[0], b[0], atol=1e-5)  # (prompt, seed) defines the image, batched or not
        assert not torch.allclose(a[0], r.render(["a fox"], [3]).images[0])


def test_a_long_rewrite_is_kept_whole_for_flux_and_cut_for_sd(dit_renderers, renderer):
    """CLIP's real tokenizer says the rewrite is over 77 tokens; FLUX and SD3 read it through their
    long encoder (window 256), so the generator keeps it whole for them and cuts it for SD."""
    from promptevo.optimise.generator import fit_window

    clip_tokens = renderer.token_count(LONG)
    assert renderer.window == 77 and clip_tokens > 77
    cut, was_cut = fit_window(LONG, renderer.token_count, renderer.window)
    assert was_cut and renderer.token_count(cut) <= 77 and LONG.startswith(cut)
    for r in dit_renderers.values():
        assert r.window == 256 and r.reads_long_text
        assert 77 < r.token_count(LONG) <= 256
        assert fit_window(LONG, r.token_count, r.window) == (LONG, False)


def test_a_two_round_optimisation_on_tiny_flux(store, repo, dit_renderers, scorer):
    from promptevo.evaluation.evaluator import LocalEvaluator
    from promptevo.llms.backends import ScriptedLLM
    from promptevo.optimise.optimizer import Optimizer
    from promptevo.optimise.run_config import OptimizeConfig, create_run

    from .scripted import script

    r = dit_renderers["tiny-flux"]
    profile = dataclasses.replace(PROFILES["tiny"], render=r.config)
    run_id = create_run(store, profile, OptimizeConfig(rounds=2, batch_size=2), ["a waterfall", "a samurai", "a fox", "a city"])
    summary = Optimizer(store, run_id, llm=ScriptedLLM(script), evaluator=LocalEvaluator(r, [scorer])).run_all()
    assert summary["status"] == "finished" and summary["heldout"]
    assert all("hps-tiny" in t.scores for t in repo.trials(run_id))


def test_known_models_bring_their_defaults_and_refuse_what_they_cannot_take():
    flux = PROFILES["tiny"].with_overrides(render_model="black-forest-labs/FLUX.1-schnell").render
    assert (flux.steps, flux.guidance, flux.width, flux.dtype) == (4, 0.0, 1024, "bfloat16")
    dev = PROFILES["tiny"].with_overrides(render_model="black-forest-labs/FLUX.1-dev").render
    assert (dev.steps, dev.guidance) == (28, 3.5)
    assert {"flux-schnell", "sd35-turbo"} <= set(PROFILES)
    with pytest.raises(UserError, match="1 to 4 steps and guidance 0"):
        check("black-forest-labs/FLUX.1-schnell", 8, 0.0, 1024, 1024, None)
    with pytest.raises(UserError, match="multiples of 16"):
        RenderConfig(model="stabilityai/stable-diffusion-3.5-large-turbo", steps=4, guidance=0.0, width=1000, height=1024)
    with pytest.raises(UserError, match="at most 256"):
        check("black-forest-labs/FLUX.1-schnell", 4, 0.0, 1024, 1024, 512)
    with pytest.raises(UserError, match="CLIP-only"):
        check("stabilityai/sd-turbo", 1, 0.0, 512, 512, 256)
    assert MODELS["black-forest-labs/FLUX.1-schnell"].memory_gb() == pytest.approx(16.9 * 2 * 1.2, abs=0.1)
    # speed settings change the config hash only when set
    base = RenderConfig(model="tiny", steps=2, guidance=0.0, width=64, height=64)
    assert base.hash == RenderConfig(model="tiny", steps=2, guidance=0.0, width=64, height=64).hash
    assert dataclasses.replace(base, attention_slicing=True).hash != base.hash


def test_the_tiny_autoencoder_is_the_models_own_and_a_mismatch_is_one_line(tmp_path):
    import torch
    from diffusers import AutoencoderTiny

    from promptevo.render_models import tiny_vae_for
    from promptevo.renderers.diffusers import DiffusersRenderer

    assert [tiny_vae_for(m) for m in ("stabilityai/sd-turbo", "stabilityai/sdxl-turbo", "black-forest-labs/FLUX.1-schnell",
                                      "stabilityai/stable-diffusion-3.5-large-turbo", "tiny-flux")] == [
        "madebyollin/taesd", "madebyollin/taesdxl", "madebyollin/taef1", "madebyollin/taesd3", "tiny"]
    with pytest.raises(UserError, match="no known tiny autoencoder for my/model"):
        tiny_vae_for("my/model")
    profile = PROFILES["tiny"].with_overrides(render_model="tiny-flux", tiny_vae="auto")
    assert profile.render.tiny_vae == "tiny"
    torch.manual_seed(0)
    AutoencoderTiny(encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8), num_encoder_blocks=(1, 1),
                    num_decoder_blocks=(1, 1), latent_channels=16).save_pretrained(tmp_path / "taef1-like")
    with pytest.raises(UserError, match="decodes 16-channel latents, tiny-flux makes 4"):
        DiffusersRenderer(dataclasses.replace(profile.render, tiny_vae=str(tmp_path / "taef1-like")))


def test_render_settings_from_the_command_line(tmp_path):
    from typer.testing import CliRunner

    from promptevo.cli.common import build_profile
    from promptevo.cli.main import _register_subcommands, app

    _register_subcommands()
    p = build_profile("flux-schnell", size="512x768", max_sequence_length=128, cpu_offload=True, attention_slicing=True)
    assert (p.render.width, p.render.height, p.render.max_sequence_length, p.render.cpu_offload, p.render.attention_slicing) == (
        512, 768, 128, True, True)
    db = str(tmp_path / "r.db")
    for args, message in ((["--size", "65x64"], "multiples of 8"), (["--size", "big"], "--size is WIDTHxHEIGHT"),
                          (["--render-model", "tiny-flux", "--size", "72x72"], "multiples of 16"),
                          (["--render-model", "tiny-flux", "--max-sequence-length", "900"], "at most 256")):
        result = CliRunner().invoke(app, ["optimize", "a fox", "--db", db, *args])
        assert result.exit_code == 2 and message in result.output, (args, result.output)
