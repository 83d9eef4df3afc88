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
    """One call per fields dict; with `images` (per request a [3, H, W] tensor in [0, 1], or a
    list of them), the last user message carries them too, for vision models (OpenAI's content
    parts). The log keeps each image as its content hash, not its pixels."""
    tpl = template(template_name)
    requests = [Request(role, tpl.messages(**f) if images is None else with_images(tpl.messages(**f), images[i]), dict(f))
                for i, f in enumerate(fields)]
    conversations = [loggable(r.messages) for r in requests]
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


def with_images(messages: list[Message], images) -> list[dict[str, Any]]:
    """The conversation with `images` (a [3, H, W] tensor in [0, 1], or a list of them) after the
    last message's text, as PNG data URLs."""
    import base64

    from promptevo.images import png_bytes, to_uint8

    parts = [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(
        png_bytes(to_uint8(image[None])[0])).decode()}} for image in (images if isinstance(images, (list, tuple)) else [images])]
    last = messages[-1]
    return [*messages[:-1], {"role": last["role"], "content": [{"type": "text", "text": last["content"]}, *parts]}]


def loggable(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The conversation as logged: each data-URL image replaced by `sha256:` and the hash of its
    bytes (what was sent stays identifiable; the log does not fill with base64)."""
    import base64

    from promptevo.hashing import sha256_hex

    out: list[dict[str, Any]] = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                url = (part.get("image_url") or {}).get("url", "") if part.get("type") == "image_url" else ""
                if url.startswith("data:"):
                    data = base64.b64decode(url.partition(",")[2] or "", validate=False)
                    part = {"type": "image_url", "image_url": {"url": "sha256:" + sha256_hex(data)}}
                parts.append(part)
            content = parts
        out.append({**m, "content": content})
    return out


def _short(text: str | None, n: int = 200) -> str:
    return (text or "")[:n]
