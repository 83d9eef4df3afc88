"""The critic and the updater, the two LLM roles that evolve instructions (textgrad's split).

- The critic reads the weakest instruction's low-scoring rewrites next to better prompts for the
  same subjects (and, with a reference database, professional prompts for similar subjects) and
  writes a textual gradient: numbered inferences and improvements. It never rewrites.
- The updater turns one improvement at a time into a new instruction.

Examples reach the meta-prompt as structured fields (`CritiqueExample`); the template renders
them as text, and stand-in LLMs read the fields themselves.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from promptevo.llms.calls import ask
from promptevo.llms.parsing import gradient_outcome, instruction_outcome, parse_gradient, parse_instruction
from promptevo.llms.templates import NO_GRADIENT_IMPROVEMENT
from promptevo.registry import LLM
from promptevo.rewards.objective import Objective, mean
from promptevo.storage.repository import RunRepository


@dataclass(frozen=True)
class CritiqueExample:
    naive: str  # the user's short prompt
    low: str  # what the weak instruction made of it
    low_score: float  # the objective's mean score of `low` over the round's seeds
    better: str | None = None  # the best other prompt the run has scored for this subject
    better_score: float | None = None
    references: tuple[str, ...] = ()  # professional prompts for similar subjects

    def text(self) -> str:
        lines = [f"Short prompt: {self.naive}", f"Low-scoring prompt (score {self.low_score:.2f}): {self.low}"]
        if self.better is not None:
            lines.append(f"Better prompt (score {self.better_score:.2f}): {self.better}")
        lines += [f"Professional prompt for a similar subject: {ref}" for ref in self.references]
        return "\n".join(lines)


class Examples(tuple):
    """Critique examples as a template field: structured for code, text inside the meta-prompt."""

    def __format__(self, spec: str) -> str:
        return "\n\n".join(e.text() for e in self)

    def __str__(self) -> str:
        return self.__format__("")


def critique_examples(repo: RunRepository, run_id: str, round: int, weak: int, objective: Objective,
                      references=None, limit: int = 3) -> Examples:
    """For the weakest arm's lowest-scoring prompts of this round: its rewrite, the best prompt the
    run has seen for the same subject, and (with a reference database) the nearest reference
    prompts. The references used are recorded as an event."""
    rewrites = {(r["instruction_id"], r["prompt_id"]): r["text"] for r in repo.rewrites(run_id, round)}
    scores: dict[str, list[float]] = {}
    for t in repo.trials(run_id, round=round, instruction_id=weak):
        if t.arm != "naive" and (weak, t.prompt_id) in rewrites:
            scores.setdefault(t.prompt_id, []).append(objective.score(t.scores))
    lows = sorted(((pid, mean(v)) for pid, v in sorted(scores.items())), key=lambda x: x[1])
    naive_texts = repo.prompt_texts([pid for pid, _ in lows])
    examples, used = [], []
    for pid, low_score in lows:
        low = rewrites[(weak, pid)]
        others: dict[str, list[float]] = {}
        for t in repo.trials(run_id, prompt_id=pid):
            if t.rendered != low:
                others.setdefault(t.rendered, []).append(objective.score(t.scores))
        better = max(((text, mean(v)) for text, v in sorted(others.items())), key=lambda x: x[1], default=None)
        if better is not None and better[1] <= low_score:
            better = None
        refs = references.nearest(naive_texts[pid]) if references else []
        if better is None and not refs:
            continue
        examples.append(CritiqueExample(
            naive=naive_texts[pid], low=low, low_score=low_score,
            better=better[0] if better else None, better_score=better[1] if better else None,
            references=tuple(ref["text"] for ref in refs)))
        used += [{"prompt_id": pid, "reference_id": ref["id"], "similarity": ref["similarity"]} for ref in refs]
        if len(examples) >= limit:
            break
    if used:
        repo.event(run_id, "reference_prompts", {"instruction_id": weak, "references": used}, round=round)
    return Examples(examples)


@dataclass(frozen=True)
class Critique:
    improvements: list[str]
    text: str
    llm_call_id: int | None


def critique(llm: LLM, instruction: str, examples: Examples, n: int, *, repo: RunRepository, run_id: str,
             seed: int) -> Critique:
    """The critic's textual gradient: up to n improvements (the blind request when none parse)."""
    [call] = ask(llm, "gradient", [{"instruction": instruction, "examples": examples, "n": n}],
                 role="gradient", store=repo.store, run_id=run_id, seed=seed)
    items = parse_gradient(call.completion.text if call.completion.ok else "", limit=n)
    repo.store.set_parses([(call.call_id, gradient_outcome(call.completion.text, items) if call.completion.ok else "fallback")])
    return Critique([i.improvement for i in items] or blind_improvements(n), call.completion.text, call.call_id)


@dataclass(frozen=True)
class ShownImage:
    """An image the critic that sees is shown: its pixels, what made it and how it scored."""

    image: Any  # [3, H, W] in [0, 1], downscaled
    naive: str
    rendered: str
    score: float
    content_hash: str

    def line(self, k: int) -> str:
        return f"Image {k} (score {self.score:.2f}), short prompt: {self.naive}; rendered from: {self.rendered}"


class Lines(tuple):
    """Image descriptions as a template field: one line each."""

    def __format__(self, spec: str) -> str:
        return "\n".join(str(x) for x in self)


def round_images(repo: RunRepository, run_id: str, round: int, weak: int, objective: Objective, k: int = 2) -> list[ShownImage]:
    """The weak arm's `k` worst and `k` best images of the round (worst first), downscaled."""
    from promptevo.images import load_image_tensor
    from promptevo.llms.vision import downscale

    trials = [t for t in repo.trials(run_id, round=round, instruction_id=weak) if t.arm != "naive"]
    ranked = sorted(trials, key=lambda t: (objective.score(t.scores), t.id))
    picked = ranked[:k] + [t for t in ranked[-k:] if t not in ranked[:k]]
    naive = repo.prompt_texts([t.prompt_id for t in picked])
    hashes = repo.content_hashes([t.image_id for t in picked])
    shown = []
    for t in picked:
        row = repo.store.image(t.image_id)
        if row is None:
            continue
        shown.append(ShownImage(downscale(load_image_tensor(repo.store.image_path(row))), naive[t.prompt_id], t.rendered,
                                objective.score(t.scores), hashes.get(t.image_id, "")))
    return shown


_SEEN = re.compile(r"(?im)^\W*(shows|misses)\s*:\s*(.+)$")


def critique_seeing(vlm: LLM, instruction: str, examples: Examples, shown: Sequence[ShownImage], n: int, *,
                    repo: RunRepository, run_id: str, round: int, weak: int, seed: int) -> Critique:
    """The critic with eyes: the same gradient, from a vision model that also sees `shown`.
    What it says the images show and miss is stored with the images' content hashes (event
    `vision_critique`); the call's log keeps the images as hashes."""
    from promptevo.llms.parsing import clean_text

    lines = Lines(s.line(k) for k, s in enumerate(shown, 1))
    [call] = ask(vlm, "gradient_vision", [{"instruction": instruction, "examples": examples, "images": lines, "n": n}],
                 role="gradient", store=repo.store, run_id=run_id, seed=seed, images=[[s.image for s in shown]])
    text = call.completion.text if call.completion.ok else ""
    items = parse_gradient(text, limit=n)
    repo.store.set_parses([(call.call_id, gradient_outcome(text, items) if call.completion.ok else "fallback")])
    seen = {kind.lower(): clean_text(body, 300) for kind, body in _SEEN.findall(text)}
    repo.event(run_id, "vision_critique", {
        "instruction_id": weak, "llm_call_id": call.call_id, "shows": seen.get("shows"), "misses": seen.get("misses"),
        "images": [{"content_hash": s.content_hash, "score": s.score, "prompt": s.naive} for s in shown],
        "prompt_tokens": call.completion.prompt_tokens, "completion_tokens": call.completion.completion_tokens}, round=round)
    return Critique([i.improvement for i in items] or blind_improvements(n), text, call.call_id)


def blind_improvements(n: int) -> list[str]:
    """What the updater is asked without a critique (the no-gradient ablation, or no parse)."""
    return [NO_GRADIENT_IMPROVEMENT] * n


@dataclass(frozen=True)
class Update:
    text: str | None  # the new instruction, or None when rejected
    llm_call_id: int | None
    rejected: str | None = None  # unusable, duplicate


def update(llm: LLM, instruction: str, improvements: Sequence[str], existing: set[str], *,
           repo: RunRepository, run_id: str, seed: int, history=None, hints=None) -> list[Update]:
    """One new instruction per improvement, in one batch; unusable answers and instructions the
    run already has are rejected (and say why). With `history` and `hints` (promptevo.optimise.hints) the
    updater also sees the best and worst instructions so far and which words scored."""
    if history is None:
        fields = [{"instruction": instruction, "improvement": imp} for imp in improvements]
        name = "modifier"
    else:
        fields = [{"instruction": instruction, "improvement": imp, "history": history, "hints": hints}
                  for imp in improvements]
        name = "modifier_history"
    return _instructions(ask(llm, name, fields, role="modifier", store=repo.store, run_id=run_id, seed=seed), existing, repo)


def merge(llm: LLM, first, second, existing: set[str], *, repo: RunRepository, run_id: str, seed: int) -> Update:
    """GEPA's merge: one instruction that combines two from the Pareto front (`first`, `second`:
    promptevo.optimise.hints.Ranked)."""
    calls = ask(llm, "merge", [{"first": first, "second": second}], role="merge", store=repo.store,
                run_id=run_id, seed=seed)
    return _instructions(calls, existing, repo)[0]


def _instructions(calls, existing: set[str], repo: RunRepository) -> list[Update]:
    out: list[Update] = []
    seen = set(existing)
    parsed = [parse_instruction(c.completion.text) if c.completion.ok else None for c in calls]
    repo.store.set_parses([(c.call_id, instruction_outcome(c.completion.text, text) if c.completion.ok else "fallback")
                           for c, text in zip(calls, parsed)])
    for call, text in zip(calls, parsed):
        if text is None or text in seen:
            out.append(Update(None, call.call_id, "unusable" if text is None else "duplicate"))
            continue
        seen.add(text)
        out.append(Update(text, call.call_id))
    return out


def vision_critic(opt: Any) -> LLM:
    """The run's vision model for the critic (`llms.vision`), made once per optimiser: on the tiny
    profile the tiny LLaVA served in-process, else the configured VLM server."""
    vlm = getattr(opt, "_vision_critic", None)
    if vlm is None:
        from promptevo.config import TINY
        from promptevo.llms.vision import vision_llm

        tiny = opt.repo.run_config(opt.run_id)["profile"]["scorer"]["version"] == TINY
        vlm = opt._vision_critic = vision_llm(tiny)
    return vlm
