"""The vision-language model the critic that sees and the alignment rewards ask: any
OpenAI-compatible server that takes image parts (gpt-4o-mini, Qwen2.5-VL on vLLM, llama.cpp with a
projector), named by the environment like the API key, so a resumed run finds it again:

- `PROMPTEVO_VLM_BASE_URL`: the server (unset: OpenAI itself, with `OPENAI_API_KEY`);
- `PROMPTEVO_VLM_MODEL`: the model name (default gpt-4o-mini).

On the tiny profile the VLM is the tiny random LLaVA served in-process (`llms.vlm_server`): the
calls, images, logprobs and parsing are real, the answers are noise.
"""

from __future__ import annotations

import os

from promptevo.config import LLMConfig
from promptevo.llms.backends import OpenAIChatLLM

DEFAULT_VLM = "gpt-4o-mini"
MAX_SIDE = 384  # images go to the VLM downscaled to this longest side


def vlm_config(tiny: bool, *, max_new_tokens: int = 400) -> LLMConfig:
    if tiny:
        from promptevo.llms.vlm_server import TINY_VLM, tiny_vlm_url

        return LLMConfig(backend="openai", model=TINY_VLM, base_url=tiny_vlm_url(), temperature=0.0,
                         max_new_tokens=max_new_tokens, max_concurrency=1, max_retries=1)
    return LLMConfig(backend="openai", model=os.environ.get("PROMPTEVO_VLM_MODEL") or DEFAULT_VLM,
                     base_url=os.environ.get("PROMPTEVO_VLM_BASE_URL") or None, temperature=0.0,
                     max_new_tokens=max_new_tokens, max_concurrency=4)


def vision_llm(tiny: bool, *, top_logprobs: int = 0, max_new_tokens: int = 400) -> OpenAIChatLLM:
    return OpenAIChatLLM(vlm_config(tiny, max_new_tokens=max_new_tokens), top_logprobs=top_logprobs)


def downscale(image, max_side: int = MAX_SIDE):
    """A [3, H, W] image with its longest side at most `max_side` (antialiased)."""
    import torch.nn.functional as F

    h, w = image.shape[-2:]
    if max(h, w) <= max_side:
        return image
    scale = max_side / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.interpolate(image[None].float(), size=size, mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)
