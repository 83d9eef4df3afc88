"""The "human" reward: pairwise judgements made in `promptevo serve`, turned into a value per arm.

A judgement compares two images of one prompt and seed made under different arms (an
instruction, or the naive prompt) and says which one a person preferred, both, or neither. A
Bradley-Terry model gives each arm a strength s so that P(a preferred to b) = sigmoid(s_a - s_b);
ties ("both", "neither") count as half a win each way. It is fitted as a MAP estimate with a
standard normal prior on every strength, so an arm judged twice stays near "no preference" and an
arm that wins every comparison stays finite.

Values are log-odds against the naive prompt (pinned at 0; an arm nobody judged is 0 too): +1 means people prefer the arm's images
to the naive prompt's at odds e:1 (73%). Every trial of an arm carries its arm's value as its
"human" score, so the objective's paired gain over the naive prompt is the arm's value, and a
weighted objective (`--objective hps=1,human=2`) steers the run by judgements made while it runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

HUMAN = "human"  # the reward's stored name (scores["human"] on every trial, once judgements exist)
VERSION = "bradley-terry"
NAIVE = "naive"
CHOICES = ("left", "right", "both", "neither")
LEFT_WINS = {"left": 1.0, "right": 0.0, "both": 0.5, "neither": 0.5}


def arm_key(arm: str, instruction_id: int | None) -> str:
    """What a judgement credits: the instruction (any phase's trial of it), or the arm's name
    (the naive prompt, a baseline without an instruction)."""
    return str(instruction_id) if instruction_id is not None else arm


def bradley_terry(outcomes: Iterable[tuple[str, str, float]], prior_sd: float = 1.0,
                  pinned: str | None = None) -> dict[str, float]:
    """MAP strengths from (a, b, how much a won: 1, 0.5 or 0), by Newton's method on the
    log-posterior (concave, so it converges in a few steps). `pinned` is held at 0 (a prior
    so tight it cannot move): the others are measured against it."""
    outcomes = list(outcomes)
    items = sorted({x for a, b, _ in outcomes for x in (a, b)})
    if not items:
        return {}
    index = {k: i for i, k in enumerate(items)}
    a = np.array([index[o[0]] for o in outcomes])
    b = np.array([index[o[1]] for o in outcomes])
    y = np.array([o[2] for o in outcomes], dtype=float)
    n = len(items)
    precision = np.full(n, 1.0 / prior_sd**2)
    if pinned in index:
        precision[index[pinned]] = 1e9
    s = np.zeros(n)
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(s[a] - s[b])))
        w = p * (1 - p)
        grad = -precision * s
        np.add.at(grad, a, y - p)
        np.add.at(grad, b, p - y)
        hess = -np.diag(precision)
        np.add.at(hess, (a, a), -w)
        np.add.at(hess, (b, b), -w)
        np.add.at(hess, (a, b), w)
        np.add.at(hess, (b, a), w)
        step = np.linalg.solve(hess, grad)
        s -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return {k: 0.0 if k == pinned else float(s[i]) for k, i in index.items()}


@dataclass(frozen=True)
class Judged:
    """One stored judgement, reduced to what the model needs."""

    left: str  # arm keys
    right: str
    choice: str


def arm_values(judgements: Sequence[Judged]) -> dict[str, float]:
    """Each judged arm's value against the naive prompt, which is pinned at 0; an arm missing
    here has the prior's 0: no evidence that it differs from the naive prompt."""
    return bradley_terry(((j.left, j.right, LEFT_WINS[j.choice]) for j in judgements), pinned=NAIVE)


def next_pair(trials: Sequence, judged: set[frozenset[int]], counts: dict[str, int], live: set[str],
              rng: np.random.Generator):
    """The next two trials to show: same prompt and seed, different arms, different images, an
    image pair nobody has judged; both arms live if possible, then the arms judged least, then
    the latest round. Returns (left, right) in random order, or None when everything is judged."""
    groups: dict[tuple[str, int], dict[str, Any]] = {}
    for t in trials:  # one trial per arm and (prompt, seed): its latest
        slot = groups.setdefault((t.prompt_id, t.seed), {})
        key = arm_key(t.arm, t.instruction_id)
        if key not in slot or slot[key].round < t.round:
            slot[key] = t
    best, best_rank = None, None
    for slot in groups.values():
        members = list(slot.items())
        for i, (ka, a) in enumerate(members):
            for kb, b in members[i + 1:]:
                if a.image_id == b.image_id or frozenset((a.image_id, b.image_id)) in judged:
                    continue
                rank = (not (ka in live and kb in live), counts.get(ka, 0) + counts.get(kb, 0),
                        -max(a.round, b.round), rng.random())
                if best_rank is None or rank < best_rank:
                    best, best_rank = (a, b), rank
    if best is None:
        return None
    return best if rng.random() < 0.5 else best[::-1]
