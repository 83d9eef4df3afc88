"""The real loading path, offline: a local hub cache in huggingface_hub's layout (refs, snapshots
linked to blobs) resolves the published hub ids of the profiles and rewards.

The fast test writes the FLUX.1-schnell and SD3.5 Large Turbo snapshots (toy widths), their tiny
autoencoders and the aesthetic head, and renders through the `flux-schnell` and `sd35-turbo`
profiles by hub id with `--tiny-vae auto`. The
full run (`optimize --profile gpu --device cpu` on full-size SD-Turbo and HPS v2.1, and every real
reward scoring a photograph) writes about 8 GB and takes about 10 minutes: it runs when
PROMPTEVO_HUB_CACHE_TEST names a folder to write the cache in (kept there for the next run).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from promptevo.lab import hub_cache

RENDER_BY_HUB_ID = """
import hashlib, json, sys
from huggingface_hub import hf_hub_download
from promptevo.config import get_profile
from promptevo.registry import build_renderer, load
load()
out = {}
for name in ("flux-schnell", "sd35-turbo"):
    profile = get_profile(name).with_overrides(device="cpu", tiny_vae="auto", render_settings={"width": 32, "height": 32})
    renderer = build_renderer(profile.render)
    batch = renderer.render(["a lighthouse at dusk"], [0])
    out[name] = {"shape": list(batch.images.shape), "window": renderer.window, "class": type(renderer.pipe).__name__,
                 "decoder": type(renderer.pipe.vae).__name__, "tiny_vae": profile.render.tiny_vae}
head = hf_hub_download("camenduru/improved-aesthetic-predictor", "sac+logos+ava1-l14-linearMSE.pth")
out["head_sha256"] = hashlib.sha256(open(head, "rb").read()).hexdigest()
print(json.dumps(out))
"""


def test_hub_cache_layout_resolves_the_new_profiles_by_hub_id(tmp_path):
    import json

    root = tmp_path / "hub"
    snaps = hub_cache.write(root, ["flux-schnell", "sd35-turbo", "aesthetic", "tiny-vaes"], say=lambda _: None)
    flux = hub_cache.snapshot_dir(root, "black-forest-labs/FLUX.1-schnell")
    assert flux in snaps
    assert (flux.parent.parent / "refs" / "main").read_text() == hub_cache.REVISION
    index = flux / "model_index.json"
    assert index.is_symlink() and index.resolve().parent.name == "blobs"  # as huggingface_hub lays files out
    assert json.loads(index.read_text())["_class_name"] == "FluxPipeline"
    assert hub_cache.write(root, ["flux-schnell"], say=pytest.fail) == [flux]  # written once

    run = subprocess.run([sys.executable, "-c", RENDER_BY_HUB_ID], env=hub_cache.offline_env(root),
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["flux-schnell"] == {"shape": [1, 3, 32, 32], "window": 256, "class": "FluxPipeline",
                                   "decoder": "AutoencoderTiny", "tiny_vae": "madebyollin/taef1"}
    assert out["sd35-turbo"]["class"] == "StableDiffusion3Pipeline" and out["sd35-turbo"]["shape"] == [1, 3, 32, 32]
    assert out["sd35-turbo"]["tiny_vae"] == "madebyollin/taesd3" and out["sd35-turbo"]["decoder"] == "AutoencoderTiny"
    head = hub_cache.snapshot_dir(root, "camenduru/improved-aesthetic-predictor") / "sac+logos+ava1-l14-linearMSE.pth"
    assert out["head_sha256"] == head.resolve().name


def test_an_unknown_entry_is_one_line(tmp_path):
    from promptevo.errors import UserError

    with pytest.raises(UserError, match="unknown hub-cache entry 'sd-99'"):
        hub_cache.write(tmp_path, ["sd-99"])


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("PROMPTEVO_HUB_CACHE_TEST"),
                    reason="writes ~8 GB and runs ~10 min: set PROMPTEVO_HUB_CACHE_TEST=DIR to run it")
def test_every_real_profile_loading_path_runs_offline():
    root = Path(os.environ["PROMPTEVO_HUB_CACHE_TEST"])
    module = [sys.executable, "-m", "promptevo.lab.hub_cache"]
    subprocess.run([*module, "write", str(root)], check=True, timeout=3600)
    run = subprocess.run([*module, "check", str(root)], capture_output=True, text=True, timeout=3600)
    assert run.returncode == 0, run.stderr[-3000:]
    for name in ("hps-v2.1", "clip-ViT-L-14", "aesthetic-v2", "pickscore-v1", "imagereward-v1.0"):
        assert name in run.stdout
    assert "optimize --profile gpu --device cpu: exit 0" in run.stdout
