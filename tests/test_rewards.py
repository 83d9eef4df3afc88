"""The reward repository: each reward loads offline (tiny random weights of its architecture, or
the real model a package ships), scores like the official code on the same weights, BRISQUE
ranks real photographs sensibly, and weighted objectives with guards are stored, applied and
recomputable from stored scores."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from promptevo import registry
from promptevo.cli.main import _register_subcommands, app
from promptevo.llms.backends import ScriptedLLM
from promptevo.registry import build_reward, reward_infos
from promptevo.storage.repository import RunRepository
from promptevo.storage.store import Store

from .lazy import torch
from .scripted import script

_register_subcommands()
runner = CliRunner()
PROMPTS = ["a waterfall", "a samurai", "a lighthouse at night", "a fox in the snow", "an old library", "a city street in the rain"]


def photos(size=224):
    """Real photographs shipped inside scikit-image, as a [N, 3, size, size] batch in [0, 1]."""
    import skimage.data as data
    from PIL import Image

    from promptevo.images import pil_to_tensor

    return pil_to_tensor([Image.fromarray(f()).convert("RGB").resize((size, size)) for f in (data.astronaut, data.coffee, data.chelsea)])


def tiny_reward(kind):
    return build_reward(reward_infos()[kind].config(tiny=True, device="cpu"))


def test_rewards_command_lists_the_repository():
    r = runner.invoke(app, ["rewards", "--json"])
    assert r.exit_code == 0, r.output
    rows = {row["kind"]: row for row in json.loads(r.stdout)}
    builtin = {"hps", "clip", "pickscore", "aesthetic", "brisque", "fidelity", "imagereward", "exposure", "contrast",
               "colourfulness", "noise", "human", "synthetic", "synthetic-fidelity"}
    assert builtin <= set(rows)  # (test modules register kinds of their own beside them)
    assert all(rows[k]["measures"] and rows[k]["scale"] and rows[k]["needs"] for k in builtin)
    assert rows["hps"]["installed"] and rows["brisque"]["installed"] and rows["brisque"]["higher_is_better"] is False
    assert rows["imagereward"]["installed"] and "fairscale" in rows["imagereward"]["needs"]  # pins kept out


def test_clip_score_equals_open_clip_on_the_same_weights():
    import open_clip
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from torchvision.transforms import Normalize

    reward = tiny_reward("clip")
    images, prompts = photos(224), ["an astronaut", "a cup of coffee", "a cat"]
    ours = reward.score(images, prompts)
    tokenizer = open_clip.get_tokenizer("promptevo-tiny-hps")
    with torch.inference_mode():  # open_clip's own encoders, normalisation as its transform does it
        img = reward.model.encode_image(Normalize(OPENAI_DATASET_MEAN, OPENAI_DATASET_STD)(images), normalize=True)
        txt = reward.model.encode_text(tokenizer(prompts), normalize=True)
    assert ours == pytest.approx((100 * (img * txt).sum(-1)).tolist(), abs=1e-3)
    assert reward.name == "clip-tiny" and ours != tiny_reward("hps").score(images, prompts)  # its own weights


def test_pickscore_equals_the_models_own_logits():
    from transformers import CLIPImageProcessor

    reward = tiny_reward("pickscore")
    images, prompts = photos(32), ["an astronaut", "a cup of coffee", "a cat"]
    ours = reward.score(images, prompts)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, do_rescale=False)
    pixels = processor(images=list(images), return_tensors="pt")["pixel_values"]
    tokens = reward.tokenizer(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        logits = reward.model(pixel_values=pixels, **tokens).logits_per_image  # logit scale x cosine
    assert ours == pytest.approx(torch.diagonal(logits).tolist(), abs=2e-2)


def test_aesthetic_is_the_mlp_on_normalised_clip_features_and_ignores_the_prompt():
    reward = tiny_reward("aesthetic")
    images = photos(224)
    a = reward.score(images, ["x", "y", "z"])
    assert a == pytest.approx(reward.score(images, ["a", "b", "c"]), abs=1e-6)
    with torch.inference_mode():
        feats = reward.image_features(images).float()
        assert torch.allclose(feats.norm(dim=-1), torch.ones(3), atol=1e-4)
        assert a == pytest.approx(reward.head(feats).reshape(-1).tolist(), abs=1e-5)


def test_imagereward_equals_imscores_port_on_the_same_weights():
    """The official checkpoint's names load into transformers' BLIP modules; imscore's port of the
    official code (its own ViT and cross-attention BERT) on the same tiny weights gives the same
    rewards."""
    import torchvision.transforms as T
    from imscore.imreward.bert import BertModel
    from imscore.imreward.vit import VisionTransformer
    from transformers import BertConfig

    from promptevo.rewards.aesthetic import aesthetic_mlp
    from promptevo.rewards.imagereward import (
        IMAGEREWARD_MEAN,
        IMAGEREWARD_STD,
        imagereward_tokenizer,
        tiny_imagereward_checkpoint,
    )

    reward = tiny_reward("imagereward")
    images, prompts = photos(224), ["an astronaut in a white suit", "a cup of coffee", "a cat"]
    ours = reward.score(images, prompts)
    official = torch.load(tiny_imagereward_checkpoint(), weights_only=True)
    part = lambda prefix: {k[len(prefix):]: v for k, v in official.items() if k.startswith(prefix)}  # noqa: E731
    vit = VisionTransformer(img_size=224, patch_size=32, embed_dim=32, depth=2, num_heads=2)
    vit.load_state_dict(part("blip.visual_encoder."))
    config = BertConfig(vocab_size=30524, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                        max_position_embeddings=64, layer_norm_eps=1e-12, pad_token_id=0)
    config.encoder_width, config.add_cross_attention = 32, True
    bert = BertModel(config)
    bert.load_state_dict(part("blip.text_encoder."), strict=False)
    head = aesthetic_mlp(32)
    head.load_state_dict(part("mlp."))
    vit.eval(), bert.eval(), head.eval()
    preprocess = T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224),
                            T.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))])
    tokens = imagereward_tokenizer()(prompts, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
    with torch.inference_mode():  # imscore's ImageReward.score, step by step
        embeds = vit(preprocess(images))
        mask = torch.ones(embeds.shape[:2], dtype=torch.bool)
        text = bert(tokens.input_ids, attention_mask=tokens.attention_mask, encoder_hidden_states=embeds,
                    encoder_attention_mask=mask)
        expected = (head(text[:, 0, :]).reshape(-1) - IMAGEREWARD_MEAN) / IMAGEREWARD_STD
    assert ours == pytest.approx(expected.tolist(), abs=1e-4)
    assert reward.name == "imagereward-tiny" and len(set(ours)) == 3


@pytest.mark.parametrize("kind", ["brisque", "niqe", "piqe"])
def test_no_reference_measures_rank_clean_photographs_above_noisy_and_blurred_ones(kind):
    """The real models (BRISQUE's SVM and NIQE's pristine parameters ship in their packages; PIQE
    needs none): lower is better, so clean < degraded."""
    import skimage.data as data
    from skimage.filters import gaussian
    from skimage.util import random_noise

    reward = tiny_reward(kind)
    clean, noisy, blurred = [], [], []
    for f in (data.astronaut, data.coffee, data.chelsea):
        # NIQE compares 96-pixel patches' statistics: it needs large images (a 256-pixel
        # crop has 4 patches and can rank noise below the clean crop; 300 x 400 has 12)
        img = f()[:300, :400] if kind == "niqe" else f()[:256, :256]
        clean.append(img)
        noisy.append((random_noise(img, var=0.02, rng=0) * 255).astype(np.uint8))
        blurred.append((gaussian(img, sigma=3, channel_axis=-1) * 255).astype(np.uint8))
    as_batch = lambda arrays: torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255  # noqa: E731
    c, n, b = (reward.score(as_batch(x), ["-"] * 3) for x in (clean, noisy, blurred))
    assert all(ci < ni for ci, ni in zip(c, n)), (c, n)
    assert all(ci < bi for ci, bi in zip(c, b)), (c, b)


def test_niqe_is_the_published_algorithm_with_scikit_videos_parameters(monkeypatch):
    """scikit-video's own NIQE (its 2018 code, run here with the two names current numpy and scipy
    removed put back) and ours agree on the shipped photographs to float32 precision."""
    import sys
    import types

    import scipy
    import skimage.data as data
    from PIL import Image

    from promptevo.rewards.naturalness import luminance_255, niqe_grey

    def imresize(arr, size, interp="bicubic", mode=None):  # scipy.misc.imresize(mode="F"), gone since scipy 1.3
        im = Image.fromarray(arr.astype(np.float32), mode="F")
        return np.asarray(im.resize((int(im.size[0] * size), int(im.size[1] * size)), Image.BICUBIC))

    misc = types.ModuleType("scipy.misc")
    misc.imresize = imresize
    monkeypatch.setitem(sys.modules, "scipy.misc", misc)
    monkeypatch.setattr(scipy, "misc", misc, raising=False)
    monkeypatch.setattr(np, "int", int, raising=False)
    from skvideo.measure.niqe import niqe as reference

    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        grey = luminance_255(getattr(data, name)())
        assert niqe_grey(grey) == pytest.approx(float(reference(grey)[0]), rel=1e-5), name


def test_text_fidelity_reads_the_rewrite_against_the_prompt():
    reward = tiny_reward("fidelity")
    images = torch.zeros(3, 3, 8, 8)
    values = reward.score(images, ["a fox", "a fox", "a fox"],
                          texts=["a fox", "a red fox in the snow, golden light", "a spaceship over a neon city"])
    assert values[0] == pytest.approx(100, abs=1e-3) and values[0] > values[1] > values[2]
    with pytest.raises(ValueError):
        reward.score(images, ["a fox"] * 3)


def test_weighted_objective_scales_signs_and_guards():
    from promptevo.registry import build_objective
    from promptevo.rewards.objective import (
        WeightedObjective,
        gain_of,
        parse_weights,
        weighted_spec,
    )

    assert parse_weights("hps=1, clip=0.5,brisque") == {"hps": 1.0, "clip": 0.5, "brisque": 1.0}
    spec = weighted_spec({"hps": 1, "brisque": 1}, {"clip": 1.0}, {"hps": "hps-x", "brisque": "brisque-0.2", "clip": "clip-x"})
    obj = build_objective(spec)
    assert isinstance(obj, WeightedObjective) and obj.spec() == spec
    naive = {"hps-x": 30.0, "brisque-0.2": 40.0, "clip-x": 25.0}
    better = {"hps-x": 31.0, "brisque-0.2": 35.0, "clip-x": 25.5}  # +1 HPS unit, BRISQUE 5 lower: +1 unit
    assert gain_of(obj, better, naive) == pytest.approx(2.0)
    drifted = {**better, "clip-x": 23.0}  # left the subject: CLIP 2 below the naive prompt's, tolerance 1
    assert gain_of(obj, drifted, naive) == pytest.approx(2.0 - obj.penalty)


def test_optimize_with_an_objective_and_a_guard_stores_every_reward_and_reranks(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "build_llm", lambda config: ScriptedLLM(script))
    db = tmp_path / "run.db"
    r = runner.invoke(app, ["optimize", *PROMPTS, "--rounds", "2", "--objective", "hps=1,clip=0.5", "--guard", "clip",
                            "--db", str(db), "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["objective"]["weights"] == {"hps-tiny": 1.0, "clip-tiny": 0.5}
    assert summary["objective"]["guards"] == {"clip-tiny": 1.0}
    assert set(summary["heldout_by_reward"]) == {"hps-tiny", "clip-tiny"}
    with Store(db, readonly=True) as s:
        repo = RunRepository(s)
        trials = repo.trials(summary["run_id"])
        assert trials and all(set(t.scores) == {"hps-tiny", "clip-tiny"} for t in trials)  # every reward, every image
        profile = repo.run_config(summary["run_id"])["profile"]
        assert [x["kind"] for x in profile["extra_rewards"]] == ["clip"]
    # re-ranked from stored scores under other weights: nothing rendered, other numbers
    shown = runner.invoke(app, ["runs", "show", summary["run_id"], "--db", str(db), "--objective", "clip=1", "--json"])
    assert shown.exit_code == 0, shown.output
    clip_only = json.loads(shown.stdout)
    assert clip_only["objective"]["weights"] == {"clip-tiny": 1.0}
    best_clip = next(row for row in clip_only["heldout"] if row["arm"] == "best")
    best_by_reward = next(row for row in summary["heldout_by_reward"]["clip-tiny"] if row["arm"] == "best")
    assert best_clip["diff_vs_naive"]["mean"] == pytest.approx(best_by_reward["diff_vs_naive"]["mean"])
    bad = runner.invoke(app, ["runs", "show", summary["run_id"], "--db", str(db), "--objective", "aesthetic=1"])
    assert bad.exit_code == 2 and "no scores for aesthetic" in bad.output
    report = runner.invoke(app, ["runs", "report", summary["run_id"], "--db", str(db), "-o", str(tmp_path / "r.html")])
    assert report.exit_code == 0, report.output
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<h2>Rewards</h2>" in page and "Trade-off per instruction" in page and page.count("<svg") >= 2
