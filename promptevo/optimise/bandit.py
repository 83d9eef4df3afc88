"""Arm statistics and selectors for the instruction population. Pure logic, no I/O: the
optimiser recomputes the statistics from stored trials, so a resumed run cannot double-count.

An arm's reward in a round is its mean improvement over the naive prompt on that round's
(prompt, seed) pairs; a pull is one round in which the arm was evaluated. Per-prompt gains (over
every round) feed the Pareto selector: an arm that is best on one prompt stays a candidate even
when its mean is not the best (GEPA, arXiv 2507.19457).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from promptevo.registry import Selector, build_selector, register_selector


@dataclass
class ArmStats:
    arm: int
    rewards: list[float] = field(default_factory=list)
    per_prompt: dict[str, list[float]] = field(default_factory=dict)  # prompt id -> paired gains

    @property
    def pulls(self) -> int:
        return len(self.rewards)

    @property
    def mean(self) -> float:
        return float(np.mean(self.rewards)) if self.rewards else float("nan")


def _unpulled_first(arms: Sequence[ArmStats], k: int) -> list[int]:
    return [a.arm for a in sorted(arms, key=lambda a: a.arm) if a.pulls == 0][:k]


def _top(arms: Sequence[ArmStats], k: int, value, rng: np.random.Generator) -> list[int]:
    chosen = _unpulled_first(arms, k)
    rest = [a for a in arms if a.pulls > 0]
    ties = rng.random(len(rest))  # random tie-break, reproducible through rng
    order = sorted(range(len(rest)), key=lambda i: (-value(rest[i]), ties[i]))
    return chosen + [rest[i].arm for i in order][: k - len(chosen)]


@dataclass(frozen=True)
class UCB1:
    c: float = 1.0
    name: str = "ucb"

    def select(self, arms, k, rng):
        total = sum(a.pulls for a in arms)
        return _top(arms, k, lambda a: a.mean + self.c * math.sqrt(2 * math.log(max(total, 1)) / a.pulls), rng)


@dataclass(frozen=True)
class Greedy:
    name: str = "greedy"

    def select(self, arms, k, rng):
        return _top(arms, k, lambda a: a.mean, rng)


@dataclass(frozen=True)
class EpsilonGreedy:
    epsilon: float = 0.2
    name: str = "epsilon-greedy"

    def select(self, arms: Sequence[ArmStats], k: int, rng: np.random.Generator) -> list[int]:
        greedy = _top(arms, len(arms), lambda a: a.mean, rng)
        chosen: list[int] = []
        for _ in range(min(k, len(arms))):
            pool = [a for a in greedy if a not in chosen]
            chosen.append(pool[int(rng.integers(len(pool)))] if rng.random() < self.epsilon else pool[0])
        return chosen


@dataclass(frozen=True)
class RandomSelector:
    name: str = "random"

    def select(self, arms, k, rng):
        ids = [a.arm for a in arms]
        return [int(x) for x in rng.choice(ids, size=min(k, len(ids)), replace=False)]


@dataclass(frozen=True)
class RoundRobin:
    name: str = "round-robin"

    def select(self, arms, k, rng):
        return [a.arm for a in sorted(arms, key=lambda a: (a.pulls, a.arm))][:k]


def pareto_front(arms: Sequence[ArmStats]) -> dict[int, int]:
    """Arm -> how many prompts it is best on (its mean gain there, among the arms evaluated on
    that prompt; ties share the prompt). Arms best on no prompt are not in the front."""
    by_prompt: dict[str, dict[int, float]] = {}
    for a in arms:
        for pid, gains in a.per_prompt.items():
            if gains:
                by_prompt.setdefault(pid, {})[a.arm] = float(np.mean(gains))
    wins: dict[int, int] = {}
    for scores in by_prompt.values():
        top = max(scores.values())
        for arm, v in scores.items():
            if v >= top - 1e-12:
                wins[arm] = wins.get(arm, 0) + 1
    return dict(sorted(wins.items()))


@dataclass(frozen=True)
class Pareto:
    """GEPA's candidate selection: unpulled arms first, then arms drawn from the Pareto front over
    per-prompt gains, each with probability proportional to the prompts it wins; the rest (if k
    asks for more) by mean."""

    name: str = "pareto"

    def select(self, arms, k, rng):
        chosen = _unpulled_first(arms, k)
        wins = {a: w for a, w in pareto_front(arms).items() if a not in chosen}
        while len(chosen) < k and wins:
            ids = list(wins)
            p = np.array([wins[i] for i in ids], dtype=float)
            pick = ids[int(rng.choice(len(ids), p=p / p.sum()))]
            chosen.append(pick)
            del wins[pick]
        if len(chosen) < k:
            chosen += _top([a for a in arms if a.arm not in chosen], k - len(chosen), lambda a: a.mean, rng)
        return chosen


SELECTORS = {"ucb": UCB1, "greedy": Greedy, "epsilon-greedy": EpsilonGreedy, "random": RandomSelector, "round-robin": RoundRobin,
             "pareto": Pareto}


def make_selector(name: str, *, ucb_c: float = 1.0, epsilon: float = 0.2) -> Selector:
    """A registered selector by kind (the built-ins below, or one registered elsewhere)."""
    return build_selector(name, ucb_c=ucb_c, epsilon=epsilon)


def _build(kind: str, ucb_c: float, epsilon: float) -> Selector:
    if kind == "ucb":
        return cast(Selector, UCB1(c=ucb_c))
    if kind == "epsilon-greedy":
        return cast(Selector, EpsilonGreedy(epsilon=epsilon))
    return SELECTORS[kind]()


for _kind in SELECTORS:
    register_selector(_kind)(lambda ucb_c, epsilon, _kind=_kind: _build(_kind, ucb_c, epsilon))


def weakest(arms: Sequence[ArmStats]) -> int | None:
    """The pulled arm with the lowest mean reward (fewest pulls breaks ties), or None."""
    pulled = [a for a in arms if a.pulls]
    if not pulled:
        return None
    return min(pulled, key=lambda a: (a.mean, a.pulls, -a.arm)).arm


def best(arms: Sequence[ArmStats]) -> int | None:
    pulled = [a for a in arms if a.pulls]
    if not pulled:
        return None
    return max(pulled, key=lambda a: (a.mean, a.pulls, -a.arm)).arm
