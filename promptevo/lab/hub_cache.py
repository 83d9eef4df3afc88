"""A local Hugging Face hub cache of random weights in the published layouts, so the real loading
path of every real profile and reward runs offline: hub ids resolved through `refs/main`, snapshot
files as symlinks into content-addressed blobs (the layout `huggingface_hub` writes and reads with
`HF_HUB_OFFLINE=1`), the published file names and parameter names.

Full-size (the published shapes) wherever promptevo's loading code depends on them: SD-Turbo and
SDXL-Turbo (built as `bench --faithful` builds them), HPS v2.0/v2.1 (open_clip ViT-H-14), CLIP
ViT-L-14 (OpenAI's, QuickGELU), the aesthetic head (768 wide), PickScore (CLIP-H in transformers)
and ImageReward (BLIP ViT-L/16 and BERT-base). FLUX.1-schnell (12 B) and SD3.5 Large Turbo (8 B)
cannot be written here: their snapshots hold the tiny FLUX and SD3 (the same pipeline and
component classes, diffusers' folder layout, toy widths), which diffusers loads by its configs.
Weights are stored in float16 (the published repositories also hold float32 files).

    python -m promptevo.lab.hub_cache write DIR [--only sd-turbo,hps]
    python -m promptevo.lab.hub_cache check DIR     # every reward scores a photograph; then
                                                    # `optimize --profile gpu --device cpu`
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from promptevo.hashing import file_sha256

REVISION = hashlib.sha1(b"promptevo-hub-cache-v1").hexdigest()  # what refs/main names, as a commit would


@dataclass(frozen=True)
class Entry:
    """One hub repository: where it lives and how its snapshot is written."""

    name: str
    repo: str
    write: Callable[[Path], None]
    full_size: bool


def snapshot_dir(root: Path, repo: str) -> Path:
    return Path(root) / f"models--{repo.replace('/', '--')}" / "snapshots" / REVISION


def _seeded(seed: int = 0) -> None:
    import torch

    torch.manual_seed(seed)


def _pipeline(name: str) -> Callable[[Path], None]:
    def write(dest: Path) -> None:
        from promptevo.renderers.faithful import save_faithful_pipeline

        save_faithful_pipeline(name, dest)
    return write


def _copy_of(path: Callable[[], Path]) -> Callable[[Path], None]:
    def write(dest: Path) -> None:
        shutil.copytree(path(), dest)
    return write


def _hps(dest: Path) -> None:
    import torch

    from promptevo.renderers.faithful import faithful_hps_state
    from promptevo.rewards.hps import HPS_HUB_FILES

    dest.mkdir(parents=True)
    first, *rest = HPS_HUB_FILES.values()
    torch.save(faithful_hps_state(), dest / first)
    for name in rest:  # random weights alike: one blob, as the hub's cache keeps identical files
        os.link(dest / first, dest / name)


def _clip_openai(dest: Path) -> None:
    import open_clip
    from safetensors.torch import save_file

    from promptevo.devices import quiet_root_logger

    _seeded(1)
    with quiet_root_logger():
        model = open_clip.create_model("ViT-L-14-quickgelu", pretrained=None)
    dest.mkdir(parents=True)
    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()}, str(dest / "open_clip_model.safetensors"))


def _aesthetic(dest: Path) -> None:
    import torch

    from promptevo.rewards.aesthetic import AESTHETIC_HUB, aesthetic_mlp

    _seeded(2)
    dest.mkdir(parents=True)
    torch.save(aesthetic_mlp(768).state_dict(), dest / AESTHETIC_HUB[1])


def _pickscore(dest: Path) -> None:
    import torch
    from transformers import CLIPConfig, CLIPModel

    _seeded(3)
    config = CLIPConfig(  # CLIP-H/14 as laion/CLIP-ViT-H-14-laion2B-s32B-b79K publishes it
        text_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                         max_position_embeddings=77, vocab_size=49408, hidden_act="gelu"),
        vision_config=dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                           image_size=224, patch_size=14, hidden_act="gelu"),
        projection_dim=1024)
    CLIPModel(config).to(torch.float16).save_pretrained(dest)


def _clip_h_tokenizer(dest: Path) -> None:
    from transformers import CLIPTokenizer

    from promptevo.model_cache import write_clip_tokenizer

    write_clip_tokenizer(dest)
    CLIPTokenizer(str(dest / "vocab.json"), str(dest / "merges.txt"), model_max_length=77).save_pretrained(dest)


def _taesd(dest: Path) -> None:
    from diffusers import AutoencoderTiny

    _seeded(5)
    AutoencoderTiny().save_pretrained(dest)  # its default configuration is TAESD's (and TAESDXL's)


def _imagereward(dest: Path) -> None:
    import torch

    from promptevo.rewards.imagereward import IMAGEREWARD_HUB, imagereward_model, rename

    _seeded(4)
    state = imagereward_model("v1.0").state_dict()
    dest.mkdir(parents=True)
    torch.save({name: v.half() for k, v in state.items() if (name := rename(k, to_official=True))}, dest / IMAGEREWARD_HUB[1])


def entries() -> dict[str, list[Entry]]:
    """What `--only` names -> the repositories it writes."""
    from promptevo.renderers.tiny import tiny_taesd_path
    from promptevo.renderers.tiny_dit import tiny_flux_path, tiny_sd3_path
    from promptevo.rewards.aesthetic import AESTHETIC_HUB
    from promptevo.rewards.hps import HPS_HUB_REPO
    from promptevo.rewards.imagereward import IMAGEREWARD_HUB
    from promptevo.rewards.pickscore import PICKSCORE_HUB, PICKSCORE_PROCESSOR_HUB

    return {
        "sd-turbo": [Entry("sd-turbo", "stabilityai/sd-turbo", _pipeline("sd-turbo"), True)],
        "sdxl-turbo": [Entry("sdxl-turbo", "stabilityai/sdxl-turbo", _pipeline("sdxl-turbo"), True)],
        "flux-schnell": [Entry("flux-schnell", "black-forest-labs/FLUX.1-schnell", _copy_of(tiny_flux_path), False)],
        "sd35-turbo": [Entry("sd35-turbo", "stabilityai/stable-diffusion-3.5-large-turbo", _copy_of(tiny_sd3_path), False)],
        "tiny-vaes": [Entry("tiny-vaes", "madebyollin/taesd", _taesd, True), Entry("tiny-vaes", "madebyollin/taesdxl", _taesd, True),
                      Entry("tiny-vaes", "madebyollin/taef1", _copy_of(tiny_taesd_path), False),  # the toy FLUX's and SD3's latents
                      Entry("tiny-vaes", "madebyollin/taesd3", _copy_of(tiny_taesd_path), False)],
        "hps": [Entry("hps", HPS_HUB_REPO, _hps, True)],
        "clip": [Entry("clip", "timm/vit_large_patch14_clip_224.openai", _clip_openai, True)],
        "aesthetic": [Entry("aesthetic", AESTHETIC_HUB[0], _aesthetic, True),
                      Entry("clip", "timm/vit_large_patch14_clip_224.openai", _clip_openai, True)],
        "pickscore": [Entry("pickscore", PICKSCORE_HUB, _pickscore, True),
                      Entry("pickscore", PICKSCORE_PROCESSOR_HUB, _clip_h_tokenizer, True)],
        "imagereward": [Entry("imagereward", IMAGEREWARD_HUB[0], _imagereward, True)],
    }


DEFAULT = ("sd-turbo", "hps", "clip", "aesthetic", "pickscore", "imagereward", "flux-schnell", "sd35-turbo", "tiny-vaes")


def _commit(root: Path, repo: str, staged: Path) -> Path:
    """Move a staged snapshot into the cache: every file into blobs/SHA256, the snapshot's files
    as relative symlinks to them, refs/main naming the revision."""
    repo_dir = Path(root) / f"models--{repo.replace('/', '--')}"
    blobs, snap = repo_dir / "blobs", snapshot_dir(root, repo)
    blobs.mkdir(parents=True, exist_ok=True)
    for file in sorted(p for p in staged.rglob("*") if p.is_file()):
        blob = blobs / file_sha256(file)
        if blob.exists():
            file.unlink()
        else:
            os.replace(file, blob)
        link = snap / file.relative_to(staged)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(REVISION, encoding="utf-8")
    shutil.rmtree(staged)
    return snap


def write(root: Path, names: Sequence[str] = DEFAULT, say: Callable[[str], None] = print) -> list[Path]:
    """Write the named repositories into the hub cache `root` (those already there are kept)."""
    from promptevo.devices import quiet_libraries

    quiet_libraries()
    table = entries()
    unknown = [n for n in names if n not in table]
    if unknown:
        from promptevo.errors import UserError

        raise UserError(f"unknown hub-cache entry {unknown[0]!r}; choose from {', '.join(table)}")
    done: list[Path] = []
    for entry in dict.fromkeys(e for n in names for e in table[n]):
        snap = snapshot_dir(root, entry.repo)
        if not (snap.parent.parent / "refs" / "main").exists():
            started = time.perf_counter()
            staged = Path(root) / f".staging-{entry.repo.replace('/', '--')}-{os.getpid()}"
            shutil.rmtree(staged, ignore_errors=True)
            entry.write(staged)
            _commit(root, entry.repo, staged)
            size = sum(p.stat().st_size for p in (snap.parent.parent / "blobs").iterdir())
            say(f"{entry.repo}: {'full size' if entry.full_size else 'toy widths'}, {size / 1e9:.2f} GB, "
                f"{time.perf_counter() - started:.0f} s")
        done.append(snap)
    return done


def offline_env(root: Path) -> dict[str, str]:
    """The environment of a process that reads `root` as its hub cache and never the network."""
    return {**os.environ, "HF_HUB_CACHE": str(Path(root).resolve()), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def score_rewards(kinds: Sequence[str]) -> list[tuple[str, float, float]]:
    """(name, mean score, seconds to load and score) of each reward on two photographs, each loaded
    as `--objective KIND=1` loads it on a real profile (run inside `offline_env`)."""
    import numpy as np
    import torch
    from skimage import data

    from promptevo.registry import build_reward, load, reward_info, reward_name

    load()
    photos = torch.from_numpy(np.stack([data.astronaut()[:400, 56:456], data.coffee()[:, 100:500]])).permute(0, 3, 1, 2).float() / 255
    out = []
    for kind in kinds:
        started = time.perf_counter()
        config = reward_info(kind).config(tiny=False, device="cpu")
        scores = build_reward(config).score(photos, ["an astronaut", "a cup of coffee"])
        out.append((reward_name(config), float(np.mean(scores)), time.perf_counter() - started))
    return out


def optimize_command(db: Path, url: str, profile: str, *extra: str) -> list[str]:
    """`promptevo optimize` on a real profile, on the CPU, small images, one round, the LLM on `url`."""
    return [sys.executable, "-m", "promptevo", "optimize", "a waterfall", "a samurai", "a lighthouse at dusk",
            "--profile", profile, "--device", "cpu", "--size", "64x64", "--rounds", "1", "--batch-size", "2",
            "--eval-seeds", "1", "--db", str(db), "--llm-base-url", url, "--json", *extra]


app = typer.Typer(help=__doc__.split("\n\n")[0], no_args_is_help=True, add_completion=False)
RootArg = Annotated[Path, typer.Argument(help="The hub cache folder (what HF_HUB_CACHE names).")]


@app.command("write")
def write_command(root: RootArg, only: Annotated[str | None, typer.Option(help="Comma-separated entries (default: all but sdxl-turbo, 7 GB).")] = None) -> None:
    """Write the hub cache."""
    names = [n.strip() for n in only.split(",") if n.strip()] if only else list(DEFAULT)
    write(root, names)


@app.command("check")
def check_command(root: RootArg, rewards: Annotated[str, typer.Option(help="Rewards to score with, comma-separated.")] = "hps,clip,aesthetic,pickscore,imagereward",
                  profile: Annotated[str, typer.Option(help="The profile whose optimisation runs offline.")] = "gpu") -> None:
    """Score with every real reward, then run `optimize --profile PROFILE --device cpu`, offline on ROOT."""
    import json
    import tempfile

    from promptevo.config import LLMConfig
    from promptevo.llms.backends import resolve_local_model
    from promptevo.llms.llama_server import LlamaServer

    env = offline_env(root)
    started = time.perf_counter()
    code = f"from promptevo.lab.hub_cache import score_rewards; print(score_rewards({rewards.split(',')!r}))"
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    print(f"rewards scored in {time.perf_counter() - started:.0f} s", flush=True)
    source, gguf = resolve_local_model(LLMConfig(backend="llamacpp", model="smollm2"))
    server = LlamaServer(Path(source) / str(gguf))
    try:
        url = server.start() + "/v1"
        runs = [(profile,), ("flux-schnell", "--tiny-vae", "auto")]  # the second: TAEF1 in the search rounds
        with tempfile.TemporaryDirectory() as tmp:
            for name, *extra in runs:
                started = time.perf_counter()
                run = subprocess.run(optimize_command(Path(tmp) / f"{name}.db", url, name, *extra), env=env, capture_output=True, text=True)
                if run.returncode:
                    sys.stderr.write(run.stderr[-4000:])
                    raise typer.Exit(run.returncode)
                summary = json.loads(run.stdout)
                spent = summary["budget"]
                print(f"optimize --profile {' '.join([name, *extra])} --device cpu: exit 0 in {time.perf_counter() - started:.0f} s, "
                      f"{spent.get('images')} images, {spent.get('llm_calls')} LLM calls, status {summary['status']}", flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    app()
