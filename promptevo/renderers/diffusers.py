"""Text-to-image rendering with diffusers: batched, one generator per image seed, images kept
in memory as tensors so the scorer takes them without a PNG round trip."""

from __future__ import annotations

import copy
import dataclasses
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from promptevo.config import TINY, RenderConfig
from promptevo.devices import (
    is_out_of_memory,
    quiet_libraries,
    resolve_device,
    resolve_dtype,
)
from promptevo.errors import ModelNotFound, UserError
from promptevo.registry import RenderBatch, register_renderer


def model_source(model: str) -> str:
    if model == TINY:
        from promptevo.renderers.tiny import tiny_sd_path

        return str(tiny_sd_path())
    from promptevo.renderers.tiny_dit import TINY_MODELS

    if model in TINY_MODELS:
        return str(TINY_MODELS[model]())
    return model


def text_window(pipe, config: RenderConfig) -> tuple[Any, int]:
    """The tokenizer and window the prompt reaches the model through: a pipeline that takes
    `max_sequence_length` (FLUX, SD3, SANA, PixArt) reads its long encoder (T5, Gemma) up to
    that many tokens (the config's, else the model table's, else the pipeline's default); a CLIP-only pipeline (SD,
    SDXL) reads `text_window` CLIP tokens."""
    import inspect

    param = inspect.signature(pipe.__call__).parameters.get("max_sequence_length")
    if param is None:
        return pipe.tokenizer, config.text_window
    long = [t for t in (getattr(pipe, "tokenizer_3", None), getattr(pipe, "tokenizer_2", None), pipe.tokenizer)
            if t is not None and "CLIP" not in type(t).__name__]
    from promptevo.render_models import known

    entry = known(config.model)  # FLUX.1-schnell reads 256 T5 tokens where its pipeline's default is 512
    window = config.max_sequence_length or (entry.window if entry else int(param.default))
    return (long[0] if long else pipe.tokenizer), window


def load_pipeline(model: str, dtype, device: str):
    from diffusers import AutoPipelineForText2Image

    quiet_libraries()
    source = model_source(model)
    local = Path(source).expanduser()
    if local.exists():
        source = str(local)
    elif source.startswith((".", "/", "~")):
        raise ModelNotFound(f"render model folder {source} does not exist; pass --render-model PATH")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch_dtype is renamed in newer diffusers
            pipe = AutoPipelineForText2Image.from_pretrained(source, torch_dtype=dtype)
    except (OSError, ValueError) as exc:
        raise ModelNotFound(
            f"cannot load render model {source!r}: {str(exc).splitlines()[0]}\n"
            f"Download it first (`huggingface-cli download {source}`) or pass --render-model PATH "
            "to a local diffusers folder; `--profile tiny` needs no download."
        ) from None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def apply_speed_settings(pipe, config: RenderConfig, dtype, device: str) -> None:
    """channels_last, torch.compile and the TAESD decoder, as the render config asks. diffusers
    already uses scaled-dot-product attention on torch 2."""
    import torch

    if config.tiny_vae:
        from diffusers import AutoencoderTiny

        source = config.tiny_vae
        if source == TINY:
            from promptevo.renderers.tiny import tiny_taesd_path

            source = str(tiny_taesd_path())
        try:
            tiny = AutoencoderTiny.from_pretrained(source, torch_dtype=dtype)
        except (OSError, ValueError) as exc:
            raise ModelNotFound(f"cannot load tiny VAE {source!r}: {str(exc).splitlines()[0]} "
                                "(`--tiny-vae auto` picks the model's own: TAESD, TAESDXL, TAEF1 or TAESD3)") from None
        if tiny.config.latent_channels != pipe.vae.config.latent_channels:
            raise UserError(f"tiny VAE {source!r} decodes {tiny.config.latent_channels}-channel latents, {config.model} makes "
                            f"{pipe.vae.config.latent_channels}: `--tiny-vae auto` picks the matching one")
        pipe._promptevo_full_vae = pipe.vae  # kept for the final evaluation (see full_decoder)
        pipe.vae = tiny.to(device)
    denoiser = "unet" if getattr(pipe, "unet", None) is not None else "transformer"  # SD/SDXL, or a DiT
    if config.channels_last:
        getattr(pipe, denoiser).to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if config.compile:
        setattr(pipe, denoiser, torch.compile(getattr(pipe, denoiser), mode="reduce-overhead", fullgraph=False))
    if config.attention_slicing:
        pipe.enable_attention_slicing()
    if config.cpu_offload:
        if not device.startswith("cuda"):
            raise ModelNotFound("--cpu-offload moves a model between a GPU and the CPU: it needs a CUDA device")
        pipe.to("cpu")
        pipe.enable_model_cpu_offload()


class DiffusersRenderer:
    _decoder: Any = None  # a view's VAE decoder in place of the pipeline's (the full one when the pipe has a tiny one)
    _scheduler: Any = None  # a view's scheduler for its calls (a variant's), else the model's own

    def __init__(self, config: RenderConfig):
        device = resolve_device(config.device)
        dtype = resolve_dtype(config.dtype, device)
        self.config = dataclasses.replace(config, device=device, dtype=str(dtype).replace("torch.", ""))
        self.pipe = load_pipeline(config.model, dtype, device)
        apply_speed_settings(self.pipe, self.config, dtype, device)
        tokenizer, self.window = text_window(self.pipe, self.config)
        self.reads_long_text = tokenizer is not self.pipe.tokenizer or self.window != self.config.text_window
        self._count_tokenizer = copy.deepcopy(tokenizer)
        self._lock = threading.Lock()  # one pipeline call at a time (views share the pipeline)
        self.pipeline_calls = 0
        self.batch_limit = config.max_batch

    def full_decoder(self) -> DiffusersRenderer:
        """This renderer with the full VAE decoder (itself when no tiny VAE is in use): the same
        pipeline, its config without tiny_vae, so its images are cached apart."""
        if not self.config.tiny_vae:
            return self
        view = copy.copy(self)
        view.config = dataclasses.replace(self.config, tiny_vae=None)
        view._decoder = self.pipe._promptevo_full_vae
        return view

    def with_settings(self, config: RenderConfig) -> DiffusersRenderer:
        """A view of this pipeline that draws with another variant's call settings (steps,
        guidance, size, scheduler, decoder): variants of one model share its components, so a
        second variant costs no memory. Used by the model pool."""
        view = self.full_decoder() if config.tiny_vae is None else self
        view = copy.copy(view)
        view.config = dataclasses.replace(self.config, steps=config.steps, guidance=config.guidance, width=config.width,
                                          height=config.height, scheduler=config.scheduler, tiny_vae=config.tiny_vae)
        view._scheduler = None
        if config.scheduler:
            view._scheduler = make_scheduler(config.scheduler, self.pipe.scheduler.config)
        return view

    def token_count(self, text: str) -> int:
        """Tokens of the encoder the prompt reaches the model through (CLIP, or the long T5 of
        FLUX and SD3), markers included; over `window` the encoder truncates.
        Uses its own copy of the tokenizer: a fast tokenizer keeps its padding and truncation
        settings between calls, so sharing one with a pipeline running on another thread (the
        render overlapped with the LLM) corrupts that pipeline's batch."""
        return len(self._count_tokenizer(text, truncation=False).input_ids)

    def _call(self, prompts: Sequence[str], seeds: Sequence[int]):
        import torch

        generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        self.pipeline_calls += 1
        kwargs = dict(
            prompt=list(prompts),
            num_inference_steps=self.config.steps,
            guidance_scale=self.config.guidance,
            width=self.config.width,
            height=self.config.height,
            generator=generators,
            output_type="pt",
            **({"max_sequence_length": self.window} if self.reads_long_text else {}),
        )
        decoder, scheduler = getattr(self, "_decoder", None), getattr(self, "_scheduler", None)
        with self._lock, torch.inference_mode():
            if decoder is None and scheduler is None:
                return self.pipe(**kwargs).images
            own = self.pipe.vae, self.pipe.scheduler  # a view's parts, swapped in for this call only
            self.pipe.vae, self.pipe.scheduler = decoder or own[0], scheduler or own[1]
            try:
                return self.pipe(**kwargs).images
            finally:
                self.pipe.vae, self.pipe.scheduler = own

    def render(self, prompts: Sequence[str], seeds: Sequence[int]) -> RenderBatch:
        """Render in chunks of at most `batch_limit`; on out-of-memory halve the chunk and retry."""
        import torch

        if len(prompts) != len(seeds):
            raise ValueError("one seed per prompt")
        out, sizes, i = [], [], 0
        while i < len(prompts):
            n = min(self.batch_limit, len(prompts) - i)
            try:
                images = self._call(prompts[i : i + n], seeds[i : i + n])
            except Exception as exc:  # noqa: BLE001 - only OOM is handled, the rest re-raised
                if not is_out_of_memory(exc) or n == 1:
                    raise
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                self.batch_limit = max(1, n // 2)
                continue
            out.append(images)
            sizes += [n] * n
            i += n
        images = torch.cat(out) if out else torch.empty(0, 3, self.config.height, self.config.width)
        return RenderBatch(images=images, batch_sizes=sizes)


def make_scheduler(name: str, config):
    """A diffusers scheduler by class name, from a pipeline's scheduler config."""
    import diffusers

    cls = getattr(diffusers, name, None)
    if cls is None or not name.endswith("Scheduler"):
        raise ModelNotFound(f"unknown scheduler {name!r}; use a diffusers class name such as EulerDiscreteScheduler, "
                            "DDIMScheduler or DPMSolverMultistepScheduler")
    return cls.from_config(config)


@register_renderer("diffusers")
def build_diffusers(config: RenderConfig) -> DiffusersRenderer:
    return DiffusersRenderer(config)


@register_renderer("tiny")
def build_tiny(config: RenderConfig) -> DiffusersRenderer:
    return DiffusersRenderer(dataclasses.replace(config, model=TINY))
