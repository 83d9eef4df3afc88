"""Offline stand-in models: the real architectures at toy size with seeded random weights.

They are built from configs once, saved to the cache folder, and then loaded back through the
same `from_pretrained` / checkpoint code that loads real weights, so the tiny profile exercises
the real loading path. Nothing here touches the network.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
from pathlib import Path

TINY_SD_NAME = "tiny-sd-v1"
TINY_HPS_NAME = "tiny-hps-v1.pt"
TINY_HPS_ARCH = "promptevo-tiny-hps"
_CONFIGS = Path(__file__).parent / "tiny_configs"


def cache_dir() -> Path:
    root = os.environ.get("PROMPTEVO_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "promptevo"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def register_tiny_open_clip_config() -> None:
    import open_clip

    if TINY_HPS_ARCH not in open_clip.list_models():
        open_clip.add_model_config(_CONFIGS / f"{TINY_HPS_ARCH}.json")


def _write_clip_tokenizer(folder: Path) -> None:
    """CLIP's real BPE tokenizer, written as vocab.json + merges.txt from the vocabulary file that
    open_clip ships, so tokenisation (and the 77-token window) behaves as in Stable Diffusion."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    with gzip.open(default_bpe()) as fh:
        lines = fh.read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    base = list(bytes_to_unicode().values())
    vocab = base + [b + "</w>" for b in base] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def _build_tiny_sd(dest: Path) -> None:
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
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
        _write_clip_tokenizer(Path(tmp))
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
    pipe.save_pretrained(dest)


def _build_tiny_hps(dest: Path) -> None:
    import open_clip
    import torch

    from promptevo.devices import quiet_root_logger

    register_tiny_open_clip_config()
    torch.manual_seed(0)
    with quiet_root_logger():
        model = open_clip.create_model(TINY_HPS_ARCH, pretrained=None)
    # Same layout as the HPS checkpoints: {"state_dict": ...}
    torch.save({"state_dict": model.state_dict()}, dest)


def _build_once(name: str, builder) -> Path:
    dest = cache_dir() / name
    if dest.exists():
        return dest
    tmp = dest.with_name(f".{name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
    builder(tmp)
    try:
        os.replace(tmp, dest)  # atomic: a concurrent builder may have won; either copy is identical
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def tiny_sd_path() -> Path:
    """Folder of the tiny Stable Diffusion pipeline, built on first use."""
    return _build_once(TINY_SD_NAME, _build_tiny_sd)


def tiny_hps_checkpoint() -> Path:
    """Checkpoint file of the tiny HPS-architecture scorer, built on first use."""
    return _build_once(TINY_HPS_NAME, _build_tiny_hps)


def _build_tiny_taesd(dest: Path) -> None:
    """A tiny random AutoencoderTiny (the TAESD architecture) matching the tiny SD latents."""
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    AutoencoderTiny(
        encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8), num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1), latent_channels=4, upsampling_scaling_factor=2,
    ).save_pretrained(dest)


def tiny_taesd_path() -> Path:
    """Folder of the tiny TAESD decoder (`--tiny-vae tiny`), built on first use."""
    return _build_once("promptevo-tiny-taesd-v1", _build_tiny_taesd)


def _build_tiny_clip(dest: Path) -> None:
    """Random weights of the tiny open_clip architecture, seeded apart from the tiny HPS, for the
    CLIP-score reward (the real one is ViT-L-14 with OpenAI's weights)."""
    import open_clip
    import torch

    from promptevo.devices import quiet_root_logger

    register_tiny_open_clip_config()
    torch.manual_seed(1)
    with quiet_root_logger():
        model = open_clip.create_model(TINY_HPS_ARCH, pretrained=None)
    torch.save({"state_dict": model.state_dict()}, dest)


def _build_tiny_aesthetic(dest: Path) -> None:
    """The LAION aesthetic predictor v2's MLP at the tiny CLIP's width, random and seeded."""
    import torch

    from promptevo.rewards import aesthetic_mlp

    torch.manual_seed(2)
    torch.save(aesthetic_mlp(32).state_dict(), dest)


def _build_tiny_pickscore(dest: Path) -> None:
    """A tiny random transformers CLIPModel (PickScore's architecture, CLIP-H at toy size) with
    CLIP's real tokenizer, saved as a folder like the hub's."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    torch.manual_seed(3)
    config = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2,
                     "vocab_size": 49408, "max_position_embeddings": 77},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(dest)
    _write_clip_tokenizer(dest / "tok")
    CLIPTokenizer(str(dest / "tok" / "vocab.json"), str(dest / "tok" / "merges.txt")).save_pretrained(dest)


def tiny_clip_checkpoint() -> Path:
    return _build_once("promptevo-tiny-clip-v1.pt", _build_tiny_clip)


def tiny_aesthetic_checkpoint() -> Path:
    return _build_once("promptevo-tiny-aesthetic-v1.pt", _build_tiny_aesthetic)


def tiny_pickscore_path() -> Path:
    return _build_once("promptevo-tiny-pickscore-v1", _build_tiny_pickscore)


def _build_tiny_imagereward(dest: Path) -> None:
    """ImageReward's architecture at toy size, random and seeded, saved under the official
    checkpoint's names so it loads through the same renaming as the real file."""
    import torch

    from promptevo.rewards import imagereward_model, rename

    torch.manual_seed(4)
    state = imagereward_model("tiny").state_dict()
    torch.save({rename(k, to_official=True): v for k, v in state.items() if rename(k, to_official=True)}, dest)


def tiny_imagereward_checkpoint() -> Path:
    return _build_once("promptevo-tiny-imagereward-v1.pt", _build_tiny_imagereward)
