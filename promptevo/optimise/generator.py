"""The generator role: rewrite naive prompts under an instruction, in one batched LLM call,
logging every call and keeping each rewrite inside the renderer's text window."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from promptevo.llms.calls import ask
from promptevo.llms.parsing import parse_rewrite, rewrite_outcome
from promptevo.registry import LLM, Completion
from promptevo.storage.store import Store


@dataclass(frozen=True)
class GeneratedRewrite:
    prompt: str
    text: str
    raw: str
    handling: str | None
    llm_call_id: int | None
    completion: Completion


def fit_window(text: str, token_count: Callable[[str], int] | None, window: int) -> tuple[str, bool]:
    """Cut `text` at a word boundary until it fits the text encoder's window."""
    if token_count is None or token_count(text) <= window:
        return text, False
    words = text.split()
    lo, hi = 1, len(words)
    while lo < hi:  # longest prefix of words that fits
        mid = (lo + hi + 1) // 2
        if token_count(" ".join(words[:mid])) <= window:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo]).rstrip(",;:"), True


def rewrite(
    llm: LLM,
    instruction: str | Sequence[str],
    prompts: Sequence[str],
    *,
    store: Store | None = None,
    run_id: str | None = None,
    seed: int | None = None,
    token_count: Callable[[str], int] | None = None,
    window: int = 77,
) -> list[GeneratedRewrite]:
    """Rewrite each prompt under its instruction (one instruction for all, or one per prompt);
    all conversations go to the LLM as one batch."""
    instructions = [instruction] * len(prompts) if isinstance(instruction, str) else list(instruction)
    calls = ask(
        llm, "generator", [{"instruction": i, "prompt": p} for i, p in zip(instructions, prompts)],
        role="generator", store=store, run_id=run_id, seed=seed,
    )
    out, outcomes = [], []
    for prompt, call in zip(prompts, calls):
        comp = call.completion
        parsed = parse_rewrite(comp.text if comp.ok else "", prompt)
        outcomes.append((call.call_id, rewrite_outcome(comp.text, parsed) if comp.ok else "fallback"))
        handling = parsed.handling if comp.ok else "llm_error_used_naive_prompt"
        text, cut = fit_window(parsed.text, token_count, window)
        if cut:
            handling = ",".join(h for h in (handling, "truncated_to_text_window") if h)
        out.append(GeneratedRewrite(prompt, text, comp.text, handling, call.call_id, comp))
    if store is not None:
        store.set_parses(outcomes)
    return out
