"""What promptevo knows of the text-to-image models people render with: each model's own sampling
defaults (steps, guidance, size, text window, dtype), its parameters (for memory estimates), and
the settings it cannot take. `--render-model` with a name from this table starts from its
defaults; any other diffusers text-to-image pipeline loads too, with the profile's settings.

Parameter counts are the published ones (transformer or UNet, text encoders, VAE); memory is an
estimate from them, not a measurement.
"""

from __future__ import annotations

from dataclasses import dataclass

from promptevo.errors import UserError


@dataclass(frozen=True)
class RenderModel:
    name: str  # hub id, or a tiny stand-in's name
    family: str  # sd, sdxl, sd3, flux, sana, pixart
    steps: int
    guidance: float
    size: int
    dtype: str
    window: int  # text tokens the prompt reaches the model through (the longest encoder's window)
    encoders: str  # the text encoders and their windows, in words
    params_b: float  # billions of parameters, all components
    distilled: bool = False  # a few-step model: 1-4 steps, no classifier-free guidance
    max_window: int | None = None  # the longest max_sequence_length the pipeline accepts
    multiple: int = 8  # width and height must be multiples of this
    tiny_vae: str | None = None  # the matching tiny autoencoder on the hub

    def memory_gb(self) -> float:
        """Weights in the model's dtype plus about 20% for activations at batch 1 (an estimate)."""
        return round(self.params_b * (4 if self.dtype == "float32" else 2) * 1.2, 1)


MODELS = {m.name: m for m in [
    RenderModel("stabilityai/sd-turbo", "sd", 1, 0.0, 512, "float16", 77, "OpenCLIP-H (77)", 1.30, True,
                tiny_vae="madebyollin/taesd"),
    RenderModel("stabilityai/sdxl-turbo", "sdxl", 1, 0.0, 512, "float16", 77, "CLIP-L + OpenCLIP-bigG (77 each)", 3.47, True,
                tiny_vae="madebyollin/taesdxl"),
    RenderModel("black-forest-labs/FLUX.1-schnell", "flux", 4, 0.0, 1024, "bfloat16", 256, "CLIP-L (77, pooled) + T5-XXL (256)",
                16.9, True, max_window=256, multiple=16, tiny_vae="madebyollin/taef1"),
    RenderModel("black-forest-labs/FLUX.1-dev", "flux", 28, 3.5, 1024, "bfloat16", 512, "CLIP-L (77, pooled) + T5-XXL (512)",
                16.9, max_window=512, multiple=16, tiny_vae="madebyollin/taef1"),
    RenderModel("stabilityai/stable-diffusion-3.5-large-turbo", "sd3", 4, 0.0, 1024, "bfloat16", 256,
                "CLIP-L + OpenCLIP-bigG (77 each) + T5-XXL (256)", 13.6, True, max_window=512, multiple=16,
                tiny_vae="madebyollin/taesd3"),
    RenderModel("stabilityai/stable-diffusion-3.5-medium", "sd3", 40, 4.5, 1024, "bfloat16", 256,
                "CLIP-L + OpenCLIP-bigG (77 each) + T5-XXL (256)", 8.0, max_window=512, multiple=16,
                tiny_vae="madebyollin/taesd3"),
    RenderModel("Efficient-Large-Model/Sana_1600M_1024px_diffusers", "sana", 20, 4.5, 1024, "bfloat16", 300, "Gemma-2-2B (300)",
                4.3, max_window=300, multiple=32),
    RenderModel("PixArt-alpha/PixArt-XL-2-1024-MS", "pixart", 20, 4.5, 1024, "float16", 120, "T5-XXL (120)", 5.4,
                max_window=120, multiple=8),
    RenderModel("tiny-flux", "flux", 2, 0.0, 64, "float32", 256, "CLIP BPE (77, pooled) + T5-like (256)", 0.001, True,
                max_window=256, multiple=16, tiny_vae="tiny"),
    RenderModel("tiny-sd3", "sd3", 2, 0.0, 64, "float32", 256, "CLIP BPE (77) x2 + T5-like (256)", 0.001, True,
                max_window=512, multiple=16, tiny_vae="tiny"),
]}


def known(model: str) -> RenderModel | None:
    return MODELS.get(model)


def tiny_vae_for(model: str) -> str:
    """`--tiny-vae auto`: the tiny autoencoder that decodes this model's latents."""
    entry = known(model)
    if model == "tiny":
        return "tiny"
    if entry is None or entry.tiny_vae is None:
        raise UserError(f"--tiny-vae auto: no known tiny autoencoder for {model}; name one (a hub id or a folder)")
    return entry.tiny_vae


def check(model: str, steps: int, guidance: float, width: int, height: int, max_sequence_length: int | None) -> None:
    """Refuse, in one line and before anything loads, settings the model cannot take."""
    entry = known(model)
    distilled = entry.distilled if entry else any(k in model.lower() for k in ("turbo", "schnell"))
    if distilled and not (1 <= steps <= 4 and guidance == 0):
        raise UserError(f"{model} is a distilled few-step model: it needs 1 to 4 steps and guidance 0 "
                        f"(got {steps} steps, guidance {guidance})")
    if entry is None:
        return
    if width % entry.multiple or height % entry.multiple:
        raise UserError(f"{model} needs width and height in multiples of {entry.multiple} (got {width}x{height})")
    if max_sequence_length is not None and (entry.max_window is None or not 1 <= max_sequence_length <= entry.max_window):
        limit = f"at most {entry.max_window}" if entry.max_window else "not settable (a CLIP-only model reads 77 tokens)"
        raise UserError(f"{model}: --max-sequence-length is {limit} (got {max_sequence_length})")
