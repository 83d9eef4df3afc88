"""The objective agent (LossAgent): an LLM reads the user's goal in words, the reward
repository's descriptions, the run's trajectory (each reward's gain per round) and the user's
feedback, and sets the weights of the run's rewards, revisited every K search rounds.

Weights are bounded to [0, 1] and normalised to sum 1; every decision is stored as an
`objective_set` event with its reasoning, so the objective of any moment is recomputable and
shown in `runs show` and the report. Malformed output keeps the previous weights and is stored
as `objective_rejected`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from promptevo.llms.calls import ask
from promptevo.llms.parsing import clean_text
from promptevo.registry import LLM
from promptevo.rewards.objective import RewardObjective, mean, paired_gains
from promptevo.storage.repository import RunRepository


class Lines(tuple):
    """A structured template field (a tuple of dicts or strings) that renders as lines of text."""

    def __format__(self, spec: str) -> str:
        if not self:
            return "(none yet)"
        return "\n".join(x if isinstance(x, str) else "; ".join(f"{k}: {v}" for k, v in x.items()) for x in self)

    def __str__(self) -> str:
        return self.__format__("")


@dataclass(frozen=True)
class Decision:
    weights: dict[str, float] | None  # reward name -> weight, normalised; None when rejected
    reason: str
    llm_call_id: int | None


# "name: 0.5" pairs. A name starts at a letter no letter precedes and is taken whole (possessive):
# the same matches as `([A-Za-z][\w.-]*)\s*[:=]...`, without its quadratic backtracking over a long
# run of letters in a hostile reply.
_PAIR = re.compile(r"(?<![A-Za-z])([A-Za-z][\w.-]*+)\s*[:=]\s*(-?[0-9]*\.?[0-9]+)")


def parse_reply(text: str, names: Sequence[str], aliases: Mapping[str, str] | None = None) -> tuple[dict[str, float], str] | None:
    """Weights and a reason from the agent's reply: a JSON object, or lines `name: weight`.
    A reward may be named by its stored name (clip-tiny) or by an alias (its kind, clip). Every
    weight is clipped to [0, 1]; the result sums to 1. None when nothing usable is in the text."""
    text = text if isinstance(text, str) else ""
    by_kind = {k.lower(): n for k, n in (aliases or {}).items()}
    raw: dict[str, Any] = {}
    reason = ""
    head = text[:20000]
    start, end = head.find("{"), head.rfind("}")  # the span `\{.*\}` matches, found in linear time
    if 0 <= start < end:
        try:
            data = json.loads(head[start : end + 1])
            if isinstance(data, dict):
                given, why = data.get("weights"), data.get("reason")
                raw = given if isinstance(given, dict) else data
                reason = why if isinstance(why, str) else ""
        except (ValueError, RecursionError):
            raw = {}
    if not raw:
        raw = dict(_PAIR.findall(head))
    weights: dict[str, float] = {}
    for key, value in raw.items():
        name = key if key in names else by_kind.get(str(key).strip().lower())
        try:
            w = float(value)
        except (TypeError, ValueError):
            continue
        if name and math.isfinite(w):
            weights[name] = min(1.0, max(0.0, w))
    total = sum(weights.values())
    if total <= 0:
        return None
    return {n: weights.get(n, 0.0) / total for n in names}, clean_text(reason, 300)


def trajectory(repo: RunRepository, run_id: str, names: Sequence[str], scales: Mapping[str, float],
               signs: Mapping[str, float]) -> Lines:
    """Per finished search round: each reward's mean gain over the naive prompt, in units."""
    trials = repo.trials(run_id, phase="search", finished=True)
    rows: dict[int, dict[str, Any]] = {}
    for name in names:
        by_round: dict[int, list[float]] = {}
        for g in paired_gains(trials, RewardObjective(name)):
            by_round.setdefault(g.trial.round, []).append(signs[name] * g.gain / scales[name])
        for rnd, values in by_round.items():
            rows.setdefault(rnd, {"round": rnd})[name] = f"{mean(values):+.2f}"
    return Lines(rows[r] for r in sorted(rows))


def decide(llm: LLM, repo: RunRepository, run_id: str, round: int, *, goal: str, spec: dict[str, Any],
           describe: Mapping[str, str], seed: int) -> Decision:
    """One decision: ask, parse, and store it (`objective_set`, or `objective_rejected`)."""
    names = list(spec["scales"])
    feedback = Lines(e["data"]["text"] for e in repo.events(run_id, "feedback")[-5:])
    fields = {"goal": goal, "rewards": Lines({"reward": n, "measures": describe[n]} for n in names),
              "trajectory": trajectory(repo, run_id, names, spec["scales"], spec["signs"]),
              "feedback": feedback, "current": json.dumps({n: round_(spec["weights"].get(n, 0.0)) for n in names})}
    [call] = ask(llm, "objective_agent", [fields], role="objective_agent", store=repo.store, run_id=run_id, seed=seed)
    aliases = {kind: name for name, kind in spec.get("kinds", {}).items()}
    parsed = parse_reply(call.completion.text, names, aliases) if call.completion.ok else None
    repo.store.set_parses([(call.call_id, "fallback" if parsed is None else "ok")])
    if parsed is None:
        repo.event(run_id, "objective_rejected", {"llm_call_id": call.call_id, "reason": "no usable weights"}, round=round)
        return Decision(None, "", call.call_id)
    weights, reason = parsed
    new = {**spec, "weights": weights}
    repo.event(run_id, "objective_set", {"spec": new, "reason": reason, "llm_call_id": call.call_id, "source": "agent"},
               round=round)
    return Decision(weights, reason, call.call_id)


def round_(x: float) -> float:
    return float(f"{x:.3f}")


def read_feedback_file(repo: RunRepository, run_id: str, path: str | None, round: int) -> None:
    """New text in the feedback file becomes a feedback event (what `runs feedback` adds)."""
    if not path:
        return
    try:
        text = open(path, encoding="utf-8").read().strip()[:2000]
    except OSError:
        return
    seen = {e["data"]["text"] for e in repo.events(run_id, "feedback")}
    if text and text not in seen:
        repo.event(run_id, "feedback", {"text": text, "source": path}, round=round)
