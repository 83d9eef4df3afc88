"""With the same random weights, promptevo's scorer and the official HPS v2 code (the `hpsv2`
package's own open_clip copy and its evaluation transform) give the same scores."""

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .lazy import torch


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    spec = importlib.util.find_spec("hpsv2")
    if spec is None:
        pytest.fail("the hpsv2 package is missing: run scripts/setup.sh --test")
    # The wheel lacks its BPE vocabulary: give a private copy of its open_clip open_clip's file,
    # leaving site-packages alone. The copy is imported on its own (its imports are relative), since
    # the hpsv2 package's __init__ pulls in download helpers (clint, requests) that scoring never uses.
    root = tmp_path_factory.mktemp("official")
    shutil.copytree(Path(spec.origin).parent / "src" / "open_clip", root / "hpsv2_open_clip")
    from open_clip.tokenizer import default_bpe

    shutil.copy(default_bpe(), root / "hpsv2_open_clip" / "bpe_simple_vocab_16e6.txt.gz")
    sys.path.insert(0, str(root))
    try:
        import hpsv2_open_clip as official_clip
    finally:
        sys.path.remove(str(root))
    from promptevo.rewards.hps import _CONFIGS, TINY_HPS_ARCH, tiny_hps_checkpoint

    official_clip.add_model_config(_CONFIGS / f"{TINY_HPS_ARCH}.json")
    model, _, preprocess_val = official_clip.create_model_and_transforms(
        TINY_HPS_ARCH, None, precision="fp32", device="cpu", jit=False, force_quick_gelu=False,
        force_custom_text=False, force_patch_dropout=False, force_image_size=None, pretrained_image=False,
        image_mean=None, image_std=None, light_augmentation=True, aug_cfg={}, output_dict=True,
        with_score_predictor=False, with_region_predictor=False,
    )
    checkpoint = torch.load(tiny_hps_checkpoint(), map_location="cpu")
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()
    return model, preprocess_val, official_clip.get_tokenizer(TINY_HPS_ARCH)


def official_score(official, image, prompt):
    """The official hpsv2.score procedure, one image at a time, raw cosine."""
    model, preprocess_val, tokenizer = official
    with torch.no_grad():
        outputs = model(preprocess_val(image).unsqueeze(0), tokenizer([prompt]))
        logits = outputs["image_features"] @ outputs["text_features"].T
    return float(torch.diagonal(logits)[0])


@pytest.mark.parametrize("size", [(64, 64), (512, 512), (300, 200), (224, 224)])
def test_scores_match_official_hpsv2(official, scorer, size):
    rng = np.random.default_rng(sum(size))
    prompts = ["a waterfall", "a samurai in the rain, ink wash painting"]
    images = [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in prompts]
    ours = scorer.score(images, prompts)
    theirs = [100 * official_score(official, im, p) for im, p in zip(images, prompts)]
    assert ours == pytest.approx(theirs, abs=1e-4)
    assert abs(ours[0] - ours[1]) > 1e-3  # the comparison is not between constants
