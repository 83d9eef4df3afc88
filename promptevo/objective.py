"""The objective: what a trial is worth, computed in Python from its stored scores.

A trial's `score` is the objective applied to its rewards; its gain is that score minus the
naive prompt's on the same (round, prompt, seed), the paired comparison every statistic of a run
rests on. Round rewards, arm statistics, the selection pass, the held-out table, the critic's
examples, reports, exports and experiments all get their numbers from here, so another
objective (weights, guards) changes them all at once and can re-rank a finished run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from promptevo.repository import TrialRecord


class Objective(Protocol):
    def score(self, scores: Mapping[str, float]) -> float: ...

    def spec(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class RewardObjective:
    """One reward's value as it is: today's objective (HPS, paired against the naive prompt)."""

    reward: str

    def score(self, scores: Mapping[str, float]) -> float:
        return scores[self.reward]

    def spec(self) -> dict[str, Any]:
        return {"kind": "reward", "reward": self.reward}


def objective_for(run_config: dict[str, Any]) -> Objective:
    """The objective a run was made with: its stored spec, else (runs made before objectives
    were configurable) the value of its profile's first reward."""
    from promptevo.config import profile_from_dict
    from promptevo.registry import build_objective, reward_name

    spec = run_config.get("optimize", {}).get("objective")
    if not spec:
        spec = {"kind": "reward", "reward": reward_name(profile_from_dict(run_config["profile"]).scorer)}
    return build_objective(spec)


def mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


@dataclass(frozen=True)
class Gain:
    trial: TrialRecord
    score: float  # the objective on this trial
    naive: float  # the objective on the naive prompt's trial of the same round, prompt and seed

    @property
    def gain(self) -> float:
        return self.score - self.naive


def paired_gains(trials: Iterable[TrialRecord], objective: Objective) -> list[Gain]:
    """Every non-naive trial that has its naive partner, with both objective values."""
    trials = list(trials)
    naive = {(t.round, t.prompt_id, t.seed): objective.score(t.scores) for t in trials if t.arm == "naive"}
    return [Gain(t, objective.score(t.scores), naive[(t.round, t.prompt_id, t.seed)])
            for t in trials if t.arm != "naive" and (t.round, t.prompt_id, t.seed) in naive]


def round_rewards(trials: Iterable[TrialRecord], objective: Objective) -> list[dict[str, Any]]:
    """Per (instruction, round): the mean gain over the naive prompt, and how many pairs."""
    groups: dict[tuple[int, int], list[float]] = {}
    for g in paired_gains(trials, objective):
        if g.trial.instruction_id is not None:
            groups.setdefault((g.trial.round, g.trial.instruction_id), []).append(g.gain)
    return [{"arm": arm, "round": rnd, "reward": mean(v), "n": len(v)} for (rnd, arm), v in sorted(groups.items())]
