"""What a running optimisation shows: the current stage, the arms, the answer so far, where the
time goes and what is left."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from promptevo.optimise.run_config import OptimizeConfig
from promptevo.registry import LLM
from promptevo.storage.repository import RunRepository


@dataclass
class Progress:
    """What the CLI shows: the current stage, the arms' statistics, the instruction the run would
    answer with now, where the time goes and what is left."""

    round: int = 0
    rounds: int = 0
    stage: str = ""
    arms: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    round_s: float = 0.0  # the last finished search round: wall seconds,
    llm_s: float = 0.0  # of which in LLM calls,
    eval_s: float = 0.0  # and in rendering and scoring
    eta_s: float | None = None  # search rounds left x the mean round time so far
    llm_calls_left: int = 0  # an estimate, selection pass and held-out evaluation included


class TimedLLM:
    """The run's LLM, with the seconds spent in it counted (for the per-round timing line)."""

    def __init__(self, llm: LLM):
        self.inner, self.model_name, self.seconds = llm, llm.model_name, 0.0

    def complete(self, requests, *, temperature=None, seed=None):
        t0 = time.perf_counter()
        try:
            return self.inner.complete(requests, temperature=temperature, seed=seed)
        finally:
            self.seconds += time.perf_counter() - t0


def llm_calls_left(cfg: OptimizeConfig, repo: RunRepository, run_id: str, round: int, stage: str) -> int:
    """LLM calls a run still makes, estimated: search rounds left, the selection pass and the
    held-out evaluation."""
    from promptevo.optimise.budget import stage_estimate

    search_left = max(0, cfg.rounds - round + (0 if stage == "round finished" else 1)) if stage not in (
        "selection", "held-out evaluation") else 0
    stages = [("search", search_left), ("selection", int(stage != "held-out evaluation")), ("evaluation", 1)]
    return sum(n * stage_estimate(cfg, repo, run_id, name)["llm_calls"] for name, n in stages if n)
