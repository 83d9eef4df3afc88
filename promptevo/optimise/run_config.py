"""A run's settings and its creation: the optimiser's configuration (stored with the run and
hashed, so runs that use the defaults keep the hash they had), the split into optimisation and
held-out prompts, and the stages a run goes through."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from promptevo.config import Profile
from promptevo.errors import UserError
from promptevo.hashing import config_hash
from promptevo.llms.templates import REFINE_INSTRUCTION, SEED_INSTRUCTIONS
from promptevo.optimise import bandit
from promptevo.promptdb.references import check_reference_db
from promptevo.registry import build_strategy
from promptevo.rewards.objective import objective_for
from promptevo.storage.repository import RunRepository
from promptevo.storage.store import Store

BASELINES = ("refine", "suffix", "reference")
PARENTS = ("weakest", "best")
EVAL_SEED_OFFSET = 1_000_003
PASS_SEED_OFFSET = 2_000_003  # held-out seeds never coincide with search seeds


@dataclass(frozen=True)
class OptimizeConfig:
    rounds: int = 3
    batch_size: int = 3
    seeds_per_prompt: int = 1
    population: int = 3
    arms_per_round: int = 2
    selector: str = "ucb"
    ucb_c: float = 1.0
    epsilon: float = 0.2
    new_per_gradient: int = 2
    gradient: bool = True
    parent: str = "weakest"  # which round arm the critic edits: weakest (the paper's) or best
    history: bool = False  # the updater sees the best/worst instructions so far and word hints
    merge: bool = False  # each round, also merge the two leading Pareto-front instructions
    pareto_set: int = 0  # > 0: every search round uses the same this many prompts and seeds (GEPA's Pareto set)
    heldout_fraction: float = 0.34
    eval_seeds: int = 2
    seed: int = 0
    initial_instructions: tuple[str, ...] = SEED_INSTRUCTIONS
    reference_db: str | None = None  # prompt database whose nearest prompts guide the gradient
    reference_k: int = 3
    baselines: tuple[str, ...] = ()  # extra held-out arms: refine, suffix, reference
    select_prompts: int = 8  # selection pass: live instructions compared on this many prompts (0: off)
    objective: dict[str, Any] | None = None  # a registered objective {"kind": ..., params}; None: the first reward
    goal: str | None = None  # the user's objective in words: the objective agent sets the weights
    agent_every: int = 2  # search rounds between the agent's decisions
    feedback_file: str | None = None  # a file of free-text feedback the agent reads at each decision
    retouch: Any = None  # None, "auto" (planned and refined on the first renders), or {"plan": [steps]}
    variants: tuple[dict[str, Any], ...] = ()  # candidate render variants (specs, named); arms become (instruction, variant)
    variant_search: str = "factored"  # factored: a selector per factor; joint: one selector over (instruction, variant) pairs
    route_groups: int = 3  # prompt groups of the routing table (with variants)
    cost_weight: float = 0.0  # objective units lost per second a variant takes per image
    strategy: str | None = None  # a registered optimiser strategy; None: "pareto-set" with a Pareto set, else "loop"
    recipes: tuple[dict[str, str], ...] = ()  # known recipes ({"name", "text"}) added to the first population
    critic_vision: bool = False  # the critic also sees the weak arm's worst and best images

    def validate(self) -> None:
        checks = [
            (self.rounds >= 0, "rounds must be >= 0"),
            (self.batch_size >= 1, "batch size must be >= 1"),
            (self.seeds_per_prompt >= 1, "seeds per prompt must be >= 1"),
            (self.population >= 1, "population must be >= 1"),
            (self.arms_per_round >= 1, "arms per round must be >= 1"),
            (self.ucb_c >= 0 and math.isfinite(self.ucb_c), f"--ucb-c must be a finite number >= 0 (got {self.ucb_c})"),
            (0 <= self.epsilon <= 1, f"--epsilon is a probability: between 0 and 1 (got {self.epsilon})"),
            (self.new_per_gradient >= 0, "new instructions per gradient must be >= 0"),
            (self.parent in PARENTS, f"--parent is one of {', '.join(PARENTS)} (got {self.parent!r})"),
            (self.agent_every >= 1, "--agent-every must be >= 1"),
            (not self.goal or (self.objective or {}).get("kind") == "weighted",
             "--goal needs a weighted objective over several rewards (--objective)"),
            (0 <= self.heldout_fraction < 1, f"--heldout-fraction must be in [0, 1) (got {self.heldout_fraction})"),
            (self.eval_seeds >= 1, "eval seeds must be >= 1"),
            (self.reference_k >= 1, "reference k must be >= 1"),
            (self.select_prompts >= 0, "select prompts must be >= 0"),
            (self.pareto_set >= 0, "--pareto-set must be >= 0"),
            (set(self.baselines) <= set(BASELINES), f"baselines are {', '.join(BASELINES)}"),
            ("reference" not in self.baselines or bool(self.reference_db), "the reference baseline needs a reference database"),
            (len(self.initial_instructions) >= 1, "at least one initial instruction"),
            (self.retouch in (None, "auto") or isinstance(self.retouch, dict), "--retouch is auto or a plan file"),
            (self.variant_search in ("factored", "joint"), f"--variant-search is factored or joint (got {self.variant_search!r})"),
            (self.route_groups >= 1, "--route-groups must be >= 1"),
            (self.cost_weight >= 0 and math.isfinite(self.cost_weight), f"--cost-weight must be a finite number >= 0 (got {self.cost_weight})"),
            (not self.cost_weight or bool(self.variants), "--cost-weight weighs the variants' cost: give candidate variants (--variant)"),
            (self.strategy_name != "pareto-set" or self.pareto_set > 0, "the pareto-set strategy needs --pareto-set N > 0"),
            (bool(self.reference_db) or not any("{reference}" in r["text"] for r in self.recipes),
             "a recipe with {reference} needs a reference database (--reference-db)"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        bandit.make_selector(self.selector)
        build_strategy(self.strategy_name)

    @property
    def strategy_name(self) -> str:
        return self.strategy or ("pareto-set" if self.pareto_set else "loop")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["initial_instructions"] = list(self.initial_instructions)
        d["baselines"] = list(self.baselines)
        d["variants"] = [dict(v) for v in self.variants]
        d["recipes"] = [dict(r) for r in self.recipes]
        for key, default in (("objective", None), ("goal", None), ("agent_every", 2), ("feedback_file", None),
                             ("retouch", None), ("parent", "weakest"), ("history", False), ("merge", False),
                             ("pareto_set", 0), ("variants", []), ("variant_search", "factored"), ("route_groups", 3),
                             ("cost_weight", 0.0), ("strategy", None), ("recipes", []),
                             ("critic_vision", False)):
            if d[key] == default:
                d.pop(key)  # runs that use the defaults keep the hash they had
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OptimizeConfig:
        d = dict(d)
        d["initial_instructions"] = tuple(d.get("initial_instructions") or SEED_INSTRUCTIONS)
        d["baselines"] = tuple(d.get("baselines") or ())
        d["variants"] = tuple(dict(v) for v in d.get("variants") or ())
        d["recipes"] = tuple(dict(r) for r in d.get("recipes") or ())
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(cls)}})


def split_prompts(prompts: Sequence[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic split into (optimisation, held-out); both non-empty when there are 2+ prompts."""
    order = list(np.random.default_rng([seed, 7]).permutation(len(prompts)))
    n_held = int(round(len(prompts) * fraction))
    if fraction > 0 and len(prompts) >= 2:
        n_held = min(max(n_held, 1), len(prompts) - 1)
    held = [prompts[i] for i in order[:n_held]]
    opt = [prompts[i] for i in order[n_held:]]
    return opt, held


class Phase(str, enum.Enum):
    """The stages of a run, stored with each round."""

    search = "search"
    selection = "selection"
    evaluation = "evaluation"


def create_run(store: Store, profile: Profile, config: OptimizeConfig, prompts: Sequence[str]) -> str:
    config.validate()
    if not prompts:
        raise UserError("no prompts to optimise on")
    if config.reference_db:
        config = dataclasses.replace(config, reference_db=check_reference_db(config.reference_db))
    opt, held = split_prompts(list(prompts), config.heldout_fraction, config.seed)
    full = {"profile": profile.to_dict(), "optimize": config.to_dict()}
    objective_for(full)  # an unknown objective fails here, before the run exists
    run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)
    instructions = [(text, "seed") for text in config.initial_instructions[: max(config.population, 1)]]
    starting = {text for text, _ in instructions}
    instructions += [(r["text"], "recipe") for r in config.recipes if r["text"] not in starting]
    if "refine" in config.baselines:  # never in the population: evaluated on held-out prompts only
        instructions.append((REFINE_INSTRUCTION, "baseline"))
    repo = RunRepository(store)
    with repo.atomic():
        repo.create_run(run_id=run_id, profile=profile.name, config=full, config_hash=config_hash(full),
                        seed=config.seed, splits={"optimize": opt, "heldout": held}, instructions=instructions)
        if config.variants:  # their image hashes are set by the optimiser, which knows the resolved render config
            repo.add_variants(run_id, [{"name": v["name"], "spec": v, "search_hash": "", "final_hash": ""}
                                       for v in config.variants])
    return run_id
