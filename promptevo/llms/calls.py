"""One place where the roles talk to the LLM: fill a template per item, send the batch in one
call, and log every conversation (template name and hash included) to llm_calls. Each request
carries its role and the structured fields it was filled from."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from promptevo.llms.backends import LLMUnavailable
from promptevo.llms.templates import template
from promptevo.registry import LLM, Completion, Message, Request
from promptevo.storage.store import Store


@dataclass(frozen=True)
class Call:
    messages: list[Message]
    completion: Completion
    call_id: int | None


def ask(
    llm: LLM,
    template_name: str,
    fields: Sequence[Mapping[str, Any]],
    *,
    role: str,
    store: Store | None = None,
    run_id: str | None = None,
    seed: int | None = None,
    temperature: float | None = None,
    images: Sequence | None = None,
) -> list[Call]:
    """One call per fields dict; with `images` ([3, H, W] tensors, one per request), each user
    message carries its image too, for vision models (OpenAI's content parts)."""
    tpl = template(template_name)
    requests = [Request(role, tpl.messages(**f) if images is None else with_image(tpl.messages(**f), images[i]), dict(f))
                for i, f in enumerate(fields)]
    conversations = [r.messages for r in requests]
    completions = llm.complete(requests, seed=seed, temperature=temperature)
    calls = []
    for messages, comp in zip(conversations, completions):
        call_id = None
        if store is not None:
            call_id = store.log_llm_call(
                run_id=run_id, role=role, model=comp.model, messages=messages, response=comp.text,
                prompt_tokens=comp.prompt_tokens, completion_tokens=comp.completion_tokens,
                latency_s=comp.latency_s, attempts=comp.attempts, error=comp.error,
                template=tpl.name, template_hash=tpl.hash,
            )
        calls.append(Call(messages, comp, call_id))
    if completions and all(c.error for c in completions):
        raise LLMUnavailable(
            f"every {role} request failed after retries ({_short(completions[0].error)}); the calls are "
            "logged and finished work is saved: fix the LLM server, then `promptevo runs resume RUN`"
        )
    return calls


def with_image(messages: list[Message], image) -> list[dict[str, Any]]:
    """The conversation with `image` (a [3, H, W] tensor in [0, 1]) after the last message's text."""
    import base64

    from promptevo.images import png_bytes, to_uint8

    url = "data:image/png;base64," + base64.b64encode(png_bytes(to_uint8(image[None])[0])).decode()
    last = messages[-1]
    return [*messages[:-1], {"role": last["role"], "content": [{"type": "text", "text": last["content"]},
                                                               {"type": "image_url", "image_url": {"url": url}}]}]


def _short(text: str | None, n: int = 200) -> str:
    return (text or "")[:n]
