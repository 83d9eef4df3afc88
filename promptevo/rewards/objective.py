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
from dataclasses import dataclass, field
from typing import Any

from promptevo.config import ScorerConfig, profile_from_dict
from promptevo.errors import UserError
from promptevo.registry import (
    Objective,
    build_objective,
    register_objective,
    reward_info,
    reward_name,
)
from promptevo.storage.repository import TrialRecord


def gain_of(objective: Objective, scores: Mapping[str, float], naive: Mapping[str, float]) -> float:
    return objective.gain(scores, naive)


@dataclass(frozen=True)
class RewardObjective(Objective):
    """One reward's value as it is: today's objective (HPS, paired against the naive prompt)."""

    reward: str

    def score(self, scores: Mapping[str, float]) -> float:
        return scores[self.reward]

    def spec(self) -> dict[str, Any]:
        return {"kind": "reward", "reward": self.reward}


def objective_for(run_config: dict[str, Any]) -> Objective:
    """The objective a run was made with: its stored spec, else (runs made before objectives
    were configurable) the value of its profile's first reward."""
    spec = run_config.get("optimize", {}).get("objective")
    if not spec:
        spec = {"kind": "reward", "reward": reward_name(profile_from_dict(run_config["profile"]).scorer)}
    return build_objective(spec)


def run_objective(repo, run_id: str) -> Objective:
    """The objective a run optimises now: the objective agent's latest decision, if it made one,
    else the one the run was made with."""
    decisions = repo.events(run_id, "objective_set")
    if decisions:
        return build_objective(decisions[-1]["data"]["spec"])
    return objective_for(repo.run_config(run_id))


def mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


@dataclass(frozen=True)
class Gain:
    trial: TrialRecord
    gain: float  # the objective's paired gain over the naive prompt (same round, prompt and seed)


def paired_gains(trials: Iterable[TrialRecord], objective: Objective) -> list[Gain]:
    """Every non-naive trial that has its naive partner, with its gain."""
    trials = list(trials)
    naive = {(t.round, t.prompt_id, t.seed): t.scores for t in trials if t.arm == "naive"}
    return [Gain(t, gain_of(objective, t.scores, naive[(t.round, t.prompt_id, t.seed)]))
            for t in trials if t.arm != "naive" and (t.round, t.prompt_id, t.seed) in naive]


@dataclass(frozen=True)
class WeightedObjective(Objective):
    """A weighted sum of rewards, each divided by its scale (the size of a gain that matters on
    it) and signed so higher is better; guards penalise a trial whose gain on a guarded reward
    falls more than its tolerance below the naive prompt's: the run cannot win by leaving the
    user's subject. Every parameter is stored, so the value is recomputable from stored scores."""

    weights: dict[str, float]  # reward name -> weight
    scales: dict[str, float]  # reward name -> scale
    signs: dict[str, float]  # reward name -> +1 (higher is better) or -1
    guards: dict[str, float] = field(default_factory=dict)  # reward name -> tolerance in its own units
    penalty: float = 10.0  # subtracted (in objective units) from a gain that breaks a guard
    kinds: dict[str, str] = field(default_factory=dict)  # reward name -> repository kind (descriptions)

    def score(self, scores: Mapping[str, float]) -> float:
        return math.fsum(w * self.signs[r] * scores[r] / self.scales[r] for r, w in self.weights.items())

    def gain(self, scores: Mapping[str, float], naive: Mapping[str, float]) -> float:
        value = self.score(scores) - self.score(naive)
        for r, tol in self.guards.items():
            if self.signs[r] * (scores[r] - naive[r]) < -tol:
                value -= self.penalty
        return value

    def spec(self) -> dict[str, Any]:
        return {"kind": "weighted", "weights": dict(self.weights), "scales": dict(self.scales), "signs": dict(self.signs),
                "guards": dict(self.guards), "penalty": self.penalty, "kinds": dict(self.kinds)}


def _judged(name: str, kinds: Mapping[str, str]) -> bool:
    """Whether a stored reward name is judgement-based (the same value on every image of an arm,
    fitted from people's judgements, so it says nothing about an image nobody judged)."""
    try:
        return reward_info(kinds.get(name, name)).judged
    except UserError:  # a stored name that is not a kind (hps-v2.1, ...): measured on the image
        return False


def measured_part(objective: Objective) -> Objective | None:
    """The objective restricted to the rewards measured on each image: judgement-based rewards
    (and their guards) dropped, the others' weights kept. None when nothing measured is left.
    Held-out images are never judged, so held-out evidence is only ever this part."""
    if isinstance(objective, RewardObjective):
        return None if _judged(objective.reward, {}) else objective
    if isinstance(objective, WeightedObjective):
        drop = {n for n in [*objective.weights, *objective.guards] if _judged(n, objective.kinds)}
        if not drop:
            return objective
        weights = {n: w for n, w in objective.weights.items() if n not in drop}
        if not any(weights.values()):
            return None
        keep = set(weights) | (set(objective.guards) - drop)
        return WeightedObjective(weights, {n: v for n, v in objective.scales.items() if n in keep},
                                 {n: v for n, v in objective.signs.items() if n in keep},
                                 {n: t for n, t in objective.guards.items() if n not in drop}, objective.penalty,
                                 {n: k for n, k in objective.kinds.items() if n in keep})
    return objective


def describe(spec: Mapping[str, Any]) -> str:
    """An objective's stored spec in words for people: "hps-v2.1 x1 + clip x0.5, guard clip"."""
    if spec.get("kind") == "reward":
        return str(spec.get("reward"))
    if spec.get("kind") == "weighted":
        terms = " + ".join(f"{name} x{w:g}" for name, w in spec.get("weights", {}).items())
        guards = ", ".join(f"{name} (tolerance {t:g})" for name, t in (spec.get("guards") or {}).items())
        return terms + (f"; guards {guards}" if guards else "")
    return ", ".join(f"{k}={v}" for k, v in spec.items())


def parse_weights(text: str) -> dict[str, float]:
    """"hps=1,clip=0.5" -> {"hps": 1.0, "clip": 0.5} (kinds of the reward repository)."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind, sep, value = part.partition("=")
        if kind.strip() in out:
            raise UserError(f"--objective names {kind.strip()!r} twice; give each reward one weight")
        try:
            out[kind.strip()] = float(value) if sep else 1.0
        except ValueError:
            raise UserError(f"--objective takes KIND=WEIGHT,... (got {part!r})") from None
        if not math.isfinite(out[kind.strip()]) or out[kind.strip()] < 0:
            raise UserError(f"--objective weights must be finite and >= 0 (got {part!r})")
    if not out or not any(out.values()):
        raise UserError("--objective needs at least one reward with a positive weight, e.g. hps=1,clip=0.5")
    return out


def parse_guards(items) -> dict[str, float]:
    """["clip", "fidelity:3"] -> {"clip": one scale unit, "fidelity": 3.0} (tolerances in the reward's units)."""
    out = {}
    for item in items:
        kind, _, tol = item.partition(":")
        if kind.strip() in out:
            raise UserError(f"--guard names {kind.strip()!r} twice; give each reward one tolerance")
        try:
            out[kind.strip()] = float(tol) if tol else reward_info(kind.strip()).scale
        except ValueError:
            raise UserError(f"--guard takes KIND or KIND:TOLERANCE (got {item!r})") from None
        if not out[kind.strip()] >= 0:
            raise UserError(f"--guard tolerance must be >= 0 (got {item!r})")
    return out


def weighted_spec(weights: Mapping[str, float], guards: Mapping[str, float], names: Mapping[str, str]) -> dict[str, Any]:
    """The stored spec of a weighted objective over reward kinds, given each kind's stored name."""
    used = list(dict.fromkeys([*weights, *guards]))
    return {"kind": "weighted",
            "weights": {names[k]: float(w) for k, w in weights.items()},
            "scales": {names[k]: reward_info(k).scale for k in used},
            "signs": {names[k]: 1.0 if reward_info(k).higher_is_better else -1.0 for k in used},
            "guards": {names[k]: float(t) for k, t in guards.items()}, "penalty": 10.0,
            "kinds": {names[k]: k for k in used}}


def round_rewards(trials: Iterable[TrialRecord], objective: Objective) -> list[dict[str, Any]]:
    """Per (instruction, round): the mean gain over the naive prompt, and how many pairs."""
    return rewards_by_round(paired_gains(trials, objective))


def rewards_by_round(gains: Iterable[Gain]) -> list[dict[str, Any]]:
    """`round_rewards` from gains already paired (a caller that also needs them per prompt)."""
    groups: dict[tuple[int, int], list[float]] = {}
    for g in gains:
        if g.trial.instruction_id is not None:
            groups.setdefault((g.trial.round, g.trial.instruction_id), []).append(g.gain)
    return [{"arm": arm, "round": rnd, "reward": mean(v), "n": len(v)} for (rnd, arm), v in sorted(groups.items())]


def weighted_objective(text: str, guards: Sequence[str] = (), *, scored: Mapping[str, str] | None = None,
                       tiny: bool = False, device: str = "auto") -> tuple[dict[str, ScorerConfig], dict[str, Any]]:
    """"hps=1,clip=0.5" and guards ["clip"] as a weighted objective: the configs of the rewards it
    needs beyond `scored` (kind -> stored name of what is scored already), each on the profile's
    kind of model (`tiny`: the toy stand-ins), and the objective's stored spec. The one place that
    turns the words of `--objective` into rewards, for runs, experiments and retouching."""
    weights, tolerances = parse_weights(text), parse_guards(guards)
    names = dict(scored or {})
    configs: dict[str, ScorerConfig] = {}
    for kind in [*weights, *tolerances]:
        if kind in names:
            continue
        entry = reward_info(kind)
        if entry.judged:  # computed from judgements: no model to load
            names[kind] = kind
            continue
        if not entry.installed():
            raise UserError(f"reward {kind!r} is not installed: {entry.needs}")
        configs[kind] = entry.config(tiny=tiny, device=device)
        names[kind] = reward_name(configs[kind])
    return configs, weighted_spec(weights, tolerances, names)


@register_objective("reward")
def build_reward_objective(reward: str) -> RewardObjective:
    return RewardObjective(reward)


@register_objective("weighted")
def build_weighted_objective(weights, scales, signs, guards=None, penalty=10.0, kinds=None) -> WeightedObjective:
    return WeightedObjective(dict(weights), dict(scales), dict(signs), dict(guards or {}), float(penalty), dict(kinds or {}))
