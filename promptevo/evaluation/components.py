"""What a run needs from its profile: the LLM and the evaluator (renderer, post-ops, every
reward), each loaded once. A run stores its profile, so `runs resume`, `report` and `apply`
rebuild exactly the components it was made with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from promptevo import registry
from promptevo.config import Profile
from promptevo.evaluation.evaluator import EvaluatorSpec, LocalEvaluator


@dataclass
class Components:
    llm: Any
    evaluator: Any


def build_components(profile: Profile, *, llm: bool = True, max_models: int = 2) -> Components:
    """The models of a profile, each loaded once. The evaluator first: its weights are the ones
    most often missing, and it fails before the LLM spends time loading."""
    from promptevo import interrupts

    evaluator = LocalEvaluator.from_spec(EvaluatorSpec(render=profile.render, rewards=profile.rewards, max_models=max_models))
    interrupts.check()  # a stop asked for (and swallowed) while the evaluator loaded: not the LLM too
    return Components(llm=registry.build_llm(profile.llm) if llm else None, evaluator=evaluator)
