"""The optimisation loop: a bandit over instructions, paired rounds, textual gradients, then a
selection pass and a held-out evaluation, as three named stages.

Two configurations: the seed paper's loop (fresh prompts each round, UCB, the critic on the
weakest arm, a selection pass) and a GEPA-style one (`pareto_set`: every candidate on the same
prompts and seeds, the Pareto selector, no selection pass), with optional history-aware edits and
merges (`history`, `merge`).

Each stage's plan (prompts, seeds, arms) is stored before any work, with its phase; every
rewrite, image and score is stored as it is made, and arm statistics are recomputed from
finished rounds through the run's objective, so a run killed at any moment resumes without
losing or repeating finished work. The loop asks the evaluator for (text, seed, target,
variant) jobs and the run repository for everything stored; it writes no SQL.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import enum
import json
import math
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from promptevo import bandit
from promptevo.config import Profile
from promptevo.critic import blind_improvements, critique, critique_examples, update
from promptevo.errors import UserError
from promptevo.evaluation import CachedEvaluator, Evaluator, Job, Variant
from promptevo.generator import rewrite
from promptevo.hashing import config_hash
from promptevo.lease import RunLease
from promptevo.llm import LLM
from promptevo.objective import objective_for, run_objective
from promptevo.references import ReferencePrompts, check_reference_db
from promptevo.repository import NewTrial, RunRepository
from promptevo.stats import mean_ci
from promptevo.store import Store
from promptevo.summary import answer_id, arm_stats, round_rewards, summarize
from promptevo.templates import REFINE_INSTRUCTION, SEED_INSTRUCTIONS, STYLE_SUFFIX

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
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        bandit.make_selector(self.selector)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["initial_instructions"] = list(self.initial_instructions)
        d["baselines"] = list(self.baselines)
        d["variants"] = [dict(v) for v in self.variants]
        for key, default in (("objective", None), ("goal", None), ("agent_every", 2), ("feedback_file", None),
                             ("retouch", None), ("parent", "weakest"), ("history", False), ("merge", False),
                             ("pareto_set", 0), ("variants", []), ("variant_search", "factored"), ("route_groups", 3),
                             ("cost_weight", 0.0)):
            if d[key] == default:
                d.pop(key)  # runs that use the defaults keep the hash they had
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OptimizeConfig:
        d = dict(d)
        d["initial_instructions"] = tuple(d.get("initial_instructions") or SEED_INSTRUCTIONS)
        d["baselines"] = tuple(d.get("baselines") or ())
        d["variants"] = tuple(dict(v) for v in d.get("variants") or ())
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


class Optimizer:
    def __init__(
        self,
        store: Store,
        run_id: str,
        *,
        llm: LLM,
        evaluator: Evaluator,
        on_progress: Callable[[Progress], None] | None = None,
        references: ReferencePrompts | None = None,
        overlap: bool = True,
    ):
        self.repo = RunRepository(store)
        self.run = self.repo.require_run(run_id)
        self.store, self.run_id = store, run_id
        run_config = self.repo.run_config(run_id)
        self.config = OptimizeConfig.from_dict(run_config["optimize"])
        self.objective = run_objective(self.repo, run_id)
        self.llm = TimedLLM(llm)
        self.evaluator = CachedEvaluator(store, evaluator)
        self._round_times: list[float] = []
        # Search rounds may decode with a tiny VAE; the selection pass and the held-out
        # evaluation always use the full decoder, so the numbers a run reports are honest.
        self.search_variant: Variant = evaluator.search_variant
        self.final_variant: Variant = evaluator.final_variant
        self.selector = bandit.make_selector(self.config.selector, ucb_c=self.config.ucb_c, epsilon=self.config.epsilon)
        self.on_progress = on_progress or (lambda p: None)
        self.progress = Progress(rounds=self.config.rounds)
        self._references = references
        self._owns_references = False
        self.overlap = overlap
        self._specs: dict[int, dict[str, Any]] | None = None  # candidate variants' specs, by id

    @property
    def references(self) -> ReferencePrompts | None:
        """Opened on first use (the embedder loads only when a gradient needs it)."""
        if self._references is None and self.config.reference_db:
            self._references = ReferencePrompts(self.config.reference_db, self.config.reference_k)
            self._owns_references = True
        return self._references

    # -- state read through the repository ----------------------------------------------------

    def population(self) -> list[dict[str, Any]]:
        return self.repo.population(self.run_id)

    def arm_stats(self, ids: Sequence[int], include_round: int | None = None) -> list[bandit.ArmStats]:
        return arm_stats(self.repo, self.run_id, ids, include_round, self.objective)

    def _emit(self, stage: str, round: int) -> None:
        from promptevo import interrupts

        interrupts.check()  # a Ctrl-C that a library swallowed still stops the run here
        pop = self.population()
        # one pass over the stored trials for every instruction tried: the live ones' rows and
        # the run's current answer (possibly retired) come from the same statistics
        everything = [i for i in self.repo.instructions(self.run_id) if i["origin"] != "baseline"]
        stats = self._progress_stats([i["id"] for i in everything])
        self.progress.round, self.progress.stage = round, stage
        self.progress.arms = []
        for p in pop:
            s = stats[p["id"]]
            ci = mean_ci(s.rewards)
            self.progress.arms.append(
                {"id": p["id"], "text": p["text"], "pulls": s.pulls, "mean": s.mean, "ci_low": ci.low, "ci_high": ci.high}
            )
        self.progress.best = self.answer(stats)
        self.progress.llm_calls_left = self._llm_calls_left(round, stage)
        self.on_progress(self.progress)

    def _progress_stats(self, ids: list[int]) -> dict[int, bandit.ArmStats]:
        """Arm statistics for the progress display. They read finished rounds only, so between
        a round's stages they change only with new instructions, a finished round, a judgement
        or another objective: recomputed then, not at each of a round's five updates."""
        judged = self.repo.store.one("SELECT MAX(id) AS n FROM judgements WHERE run_id = ?", [self.run_id])["n"]
        key = (tuple(ids), len(self.repo.finished_rounds(self.run_id)), judged,
               json.dumps(self.objective.spec(), sort_keys=True))
        if getattr(self, "_stats_key", None) != key:
            self._stats_key, self._stats = key, {s.arm: s for s in self.arm_stats(ids)}
        return self._stats

    def answer(self, stats: dict[int, bandit.ArmStats]) -> dict[str, Any] | None:
        """The instruction the run would answer with now (what `runs show` and `apply` use):
        the selection pass's choice once made, else the best search mean of every instruction
        tried, retired ones included. `stats`: every non-baseline instruction's."""
        best_id = answer_id(self.repo, self.run_id, stats)
        if best_id is None:
            return None
        s = stats[best_id]
        return {"id": best_id, "text": self.repo.instruction(best_id)["text"], "pulls": s.pulls, "mean": s.mean}

    def _llm_calls_left(self, round: int, stage: str) -> int:
        cfg = self.config
        prompts = cfg.pareto_set or cfg.batch_size
        per_round = cfg.arms_per_round * prompts + (1 + cfg.new_per_gradient if cfg.new_per_gradient else 0) + int(cfg.merge)
        search_left = max(0, cfg.rounds - round + (0 if stage == "round finished" else 1)) if stage not in (
            "selection", "held-out evaluation") else 0
        n_opt = len(self.repo.prompts(self.run_id, "optimize"))
        n_held = len(self.repo.prompts(self.run_id, "heldout")) or n_opt
        selection = 0 if stage == "held-out evaluation" else min(cfg.select_prompts, n_opt) * (cfg.population * 2)
        evaluation = n_held * (3 if "refine" in cfg.baselines else 2)
        return search_left * per_round + selection + evaluation

    def _timed_round(self, r: int, started: float, llm0: float, eval0: float) -> None:
        p = self.progress
        p.round_s = time.perf_counter() - started
        p.llm_s, p.eval_s = self.llm.seconds - llm0, self.evaluator.compute_s - eval0
        self._round_times.append(p.round_s)
        p.eta_s = (self.config.rounds - r) * sum(self._round_times) / len(self._round_times)

    # -- the loop -----------------------------------------------------------------------------

    def run_all(self, *, wait: bool = False) -> dict[str, Any]:
        """Every stage not yet finished, in order, as the run's one owner (another live process
        on the same run makes this refuse, or wait with `wait`)."""
        with RunLease(self.repo, self.run_id, wait=wait):
            finished = self.repo.finished_rounds(self.run_id)
            try:
                if self.config.retouch is not None:
                    self.retouch_stage()
                if self.config.variants:
                    self._sync_variants()
                for r in range(1, self.config.rounds + 1):
                    if r not in finished:
                        self.search_round(r)
                for phase, stage in ((Phase.selection, self.selection_pass), (Phase.evaluation, self.heldout_evaluation)):
                    row = self.repo.stage_round(self.run_id, phase.value)
                    if row is None or row["status"] != "finished":
                        stage()
            finally:
                if self._owns_references:  # opened here, so closed here
                    self._references.close()
                    self._references, self._owns_references = None, False
            self.repo.set_status(self.run_id, "finished")
        return summarize(self.repo, self.run_id, self.objective)

    def retouch_stage(self) -> None:
        """The run's retouch plan, decided once and stored (event `retouch_plan`) before any round:
        a given plan, or ("auto") the planner and the search on naive renders of up to eight
        optimisation prompts. Every image of the run, the naive prompt's included, is then made
        with the plan as post-ops of its variant, so gains compare instructions under the same
        retouch and resumed runs find their retouched images in the cache."""
        from promptevo.retouch_plan import validate

        stored = self.repo.events(self.run_id, "retouch_plan")
        if stored:
            plan = validate(stored[-1]["data"]["plan"])
        elif self.config.retouch == "auto":
            plan = self._fit_retouch()
        else:
            plan = validate(self.config.retouch["plan"])
            self.repo.event(self.run_id, "retouch_plan", {"plan": plan.to_list(), "source": "given"})
        ops = plan.post_ops()
        self.search_variant = Variant(self.search_variant.render, ops)
        self.final_variant = Variant(self.final_variant.render, ops)

    def _fit_retouch(self):
        import torch

        from promptevo.retouch import RetouchSettings, retouch_set

        pool = self.repo.prompts(self.run_id, "optimize")[:8]
        seed = int(self._rng(0x7E7).integers(0, 2**31 - 1))
        jobs = [Job(p["text"], seed, p["text"], self.search_variant) for p in pool]
        images = torch.stack([e.image for e in self.evaluator.compute(jobs)]).float()
        texts = [p["text"] for p in pool]

        def score_fn(batch, members):
            targets = [texts[m] for m in members]
            values = self.evaluator.score(batch, targets, texts=targets)
            return [self.objective.score({n: v[i] for n, v in values.items()}) for i in range(len(members))]

        _, outcome = retouch_set(images, self.llm, score_fn, RetouchSettings(seed=self.config.seed),
                                 store=self.store, run_id=self.run_id)
        self.repo.event(self.run_id, "retouch_plan", {**outcome.to_dict(), "images": len(pool)})
        return outcome.plan

    def _stage_number(self, phase: Phase) -> int:
        """A one-off stage's round number: the one it was planned under, else the next free."""
        row = self.repo.stage_round(self.run_id, phase.value)
        return row["round"] if row else self.repo.next_round_number(self.run_id)

    def _plan(self, round: int, phase: Phase, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The stored plan of a round, or a new one stored before any of its work."""
        row = self.repo.round(self.run_id, round)
        if row:
            return json.loads(row["plan_json"])
        plan = make()
        self.repo.start_round(self.run_id, round, phase.value, plan)
        return plan

    def _rng(self, *keys: int) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, *keys])

    def _draw_prompts(self, r: int, rng: np.random.Generator) -> tuple[list[str], list[list[int]]]:
        """Round r's prompts and seeds: the first draws from the round's generator, so they are
        known before the round is planned (which lets the GPU render them early). With a Pareto
        set, the same prompts and seeds every round: every candidate is scored on the same pairs
        and the naive images are made once."""
        cfg = self.config
        pool = self.repo.prompts(self.run_id, "optimize")
        if cfg.pareto_set:
            fixed = self._rng(0x9A2E)
            picked = fixed.choice(len(pool), size=min(cfg.pareto_set, len(pool)), replace=False)
            return ([pool[int(i)]["id"] for i in picked],
                    [[int(s) for s in fixed.integers(0, 2**31 - 1, cfg.seeds_per_prompt)] for _ in picked])
        picked = rng.choice(len(pool), size=min(cfg.batch_size, len(pool)), replace=False)
        prompts = [pool[int(i)]["id"] for i in picked]
        seeds = [[int(s) for s in rng.integers(0, 2**31 - 1, cfg.seeds_per_prompt)] for _ in prompts]
        return prompts, seeds

    def _naive_jobs(self, prompt_ids: Sequence[str], seeds: Sequence[Sequence[int]], variant: Variant) -> list[Job]:
        texts = self.repo.prompt_texts(prompt_ids)
        return [Job(texts[pid], seed, texts[pid], variant) for pid, ss in zip(prompt_ids, seeds) for seed in ss]

    @contextlib.contextmanager
    def _gpu_meanwhile(self, jobs: Sequence[Job]) -> Iterator[None]:
        """Evaluate `jobs` on a worker thread while the caller waits on the LLM. Results land in
        the image/score cache, where the round's own evaluation finds them."""
        if not jobs or not self.overlap:
            yield
            return
        with ThreadPoolExecutor(1, thread_name_prefix="promptevo-gpu") as pool:
            future = pool.submit(self.evaluator.evaluate, list(jobs))
            try:
                yield
            finally:
                future.result()

    # -- stage 1: search rounds -----------------------------------------------------------------

    def search_round(self, r: int) -> None:
        cfg = self.config

        def make_plan() -> dict[str, Any]:
            rng = self._rng(r)
            prompts, seeds = self._draw_prompts(r, rng)
            if cfg.variants:
                pairs = self._pick_pairs(r, rng)
                return {"prompts": prompts, "seeds": seeds, "arms": list(dict.fromkeys(i for i, _ in pairs)), "pairs": pairs}
            pop = self.population()
            arms = self.selector.select(self.arm_stats([p["id"] for p in pop]), cfg.arms_per_round, rng)
            return {"prompts": prompts, "seeds": seeds, "arms": [int(a) for a in arms]}

        started, llm0, eval0 = time.perf_counter(), self.llm.seconds, self.evaluator.compute_s
        if cfg.goal and (r - 1) % cfg.agent_every == 0:
            self._emit("objective", r)
            self._set_objective(r)
        self._emit("planning", r)
        plan = self._plan(r, Phase.search, make_plan)
        arms = {a: self.repo.instruction(a)["text"] for a in plan["arms"]}
        self._emit("rewriting", r)
        variant = self.search_variant
        with self._gpu_meanwhile(self._naive_jobs(plan["prompts"], plan["seeds"], variant)):  # naive images need no LLM
            rewrites = self._rewrites(r, [(str(a), a, text) for a, text in arms.items()], plan["prompts"], variant)
        self._emit("rendering and scoring", r)
        self._evaluate_trials(r, plan, self._plan_arms(plan, final=False), rewrites, variant)

        self._emit("gradient", r)
        rewards = {row["arm"]: row["reward"] for row in round_rewards(self.repo, self.run_id, self.objective, r) if row["round"] == r}
        new_instructions: list[dict[str, Any]] = []
        if rewards and (cfg.new_per_gradient > 0 or cfg.merge):
            if cfg.parent == "best":
                parent = max(rewards, key=lambda a: (rewards[a], -a))
            else:
                parent = min(rewards, key=lambda a: (rewards[a], a))
            upcoming = self._naive_jobs(*self._draw_prompts(r + 1, self._rng(r + 1)), variant) if r < cfg.rounds else []
            with self._gpu_meanwhile(upcoming):  # next round's naive images while the LLM critiques
                new_instructions = self._evolve(r, parent) if cfg.new_per_gradient > 0 else []
                if cfg.merge:
                    new_instructions += self._merge(r, new_instructions)
        self._finish_search_round(r, new_instructions)
        self._timed_round(r, started, llm0, eval0)
        self._emit("round finished", r)

    def _set_objective(self, r: int) -> None:
        """The objective agent's decision for this round (made once: a resumed round reuses it)."""
        from promptevo import agent
        from promptevo.rewards import info

        if self.repo.round(self.run_id, r) is not None or any(
                e["round"] == r for e in self.repo.events(self.run_id) if e["kind"] in ("objective_set", "objective_rejected")):
            return
        self._read_feedback_file(r)
        spec = self.objective.spec()
        describe = {n: info(kind).measures for n, kind in spec.get("kinds", {}).items()}
        agent.decide(self.llm, self.repo, self.run_id, r, goal=self.config.goal, spec=spec, describe=describe,
                     seed=self.config.seed * 1000 + r)
        self.objective = run_objective(self.repo, self.run_id)

    def _read_feedback_file(self, r: int) -> None:
        """New text in the feedback file becomes a feedback event (what `runs feedback` adds)."""
        path = self.config.feedback_file
        if not path:
            return
        try:
            text = open(path, encoding="utf-8").read().strip()[:2000]
        except OSError:
            return
        seen = {e["data"]["text"] for e in self.repo.events(self.run_id, "feedback")}
        if text and text not in seen:
            self.repo.event(self.run_id, "feedback", {"text": text, "source": path}, round=r)

    def _rewrites(self, r: int, arms: Sequence[tuple[str, int, str]], prompt_ids: Sequence[str],
                  variant: Variant) -> dict[tuple[int, str], str]:
        """Stored rewrites for this round, generating (in one batch) only the missing ones."""
        have = {(row["instruction_id"], row["prompt_id"]): row["text"] for row in self.repo.rewrites(self.run_id, r)}
        texts = self.repo.prompt_texts(prompt_ids)
        todo = [(iid, text, pid) for _, iid, text in arms for pid in prompt_ids if (iid, pid) not in have]
        if todo:
            results = rewrite(
                self.llm, [t for _, t, _ in todo], [texts[pid] for _, _, pid in todo],
                store=self.store, run_id=self.run_id, seed=self.config.seed * 1000 + r,
                token_count=lambda text: self.evaluator.token_count(text, variant),
                window=self.evaluator.text_window(variant),
            )
            self.repo.add_rewrites(self.run_id, r, [
                {"instruction_id": iid, "prompt_id": pid, "text": res.text, "raw_text": res.raw[:20000],
                 "handling": res.handling, "llm_call_id": res.llm_call_id}
                for (iid, _, pid), res in zip(todo, results)])
            for (iid, _, pid), res in zip(todo, results):
                have.setdefault((iid, pid), res.text)
        return have

    def _evaluate_trials(
        self, r: int, plan: dict[str, Any], arms: Sequence[tuple], rewrites: dict[tuple[int, str], str],
        variant: Variant, fixed: dict[str, dict[str, str]] | None = None,
        routed: dict[str, tuple[int, Variant]] | None = None,
    ) -> None:
        """Evaluate the naive prompts (on `variant`, the profile's own settings) and every arm's
        rewrites on the plan's seeds (paired), all against the naive prompt, and store the trials
        with every reward's score. An arm is (name, instruction id) drawn on `variant`, or
        (name, instruction id, its variant); `routed` gives each prompt its group's arm."""
        texts = self.repo.prompt_texts(plan["prompts"])
        entries: list[tuple[str, int | None, str, int, Job]] = []
        for pid, seeds in zip(plan["prompts"], plan["seeds"]):
            naive = texts[pid]
            for seed in seeds:
                entries.append(("naive", None, pid, seed, Job(naive, seed, naive, variant)))
                for name, iid, *own in arms:
                    text = fixed[name][pid] if fixed and name in fixed else rewrites[(iid, pid)]
                    entries.append((name, iid, pid, seed, Job(text, seed, naive, own[0] if own else variant)))
                if routed and pid in routed:
                    iid, v = routed[pid]
                    entries.append(("routed", iid, pid, seed, Job(rewrites[(iid, pid)], seed, naive, v)))
        results = self.evaluator.evaluate([e[4] for e in entries])
        self._record_costs()
        for (name, iid, pid, seed, job), res in zip(entries, results):
            if res.error is not None:  # a worker failed on it: recorded, the rest of the round goes on
                self.repo.event(self.run_id, "job_failed", {"arm": name, "instruction_id": iid, "prompt_id": pid, "seed": seed,
                                                            "text": job.text, "error": res.error}, round=r)
                self._retire_variant(job.variant, res.error, r)
        self.repo.add_trials(self.run_id, r, [
            NewTrial(arm=name, instruction_id=iid, prompt_id=pid, seed=seed, image_id=res.image_id, score_ids=res.score_ids)
            for (name, iid, pid, seed, _), res in zip(entries, results) if res.error is None])

    # -- render variants ------------------------------------------------------------------------

    def _sync_variants(self) -> None:
        """Each candidate variant's image hashes (search and final form) from this evaluator's
        resolved render configs, so stored trials can be credited to their variant."""
        for row in self.repo.variants(self.run_id):
            search, final = self._variant(row["id"], False), self._variant(row["id"], True)
            if (row["search_hash"], row["final_hash"]) != (search.hash, final.hash):
                self.repo.set_variant_hashes(row["id"], search.hash, final.hash)

    def _variant(self, variant_id: int, final: bool) -> Variant:
        from promptevo.variants import variant_of

        if self._specs is None:  # a variant's spec never changes: read once
            self._specs = {v["id"]: v["spec"] for v in self.repo.variants(self.run_id)}
        return variant_of(self.final_variant if final else self.search_variant, self._specs[variant_id])

    def _plan_arms(self, plan: dict[str, Any], final: bool) -> list[tuple]:
        """A plan's arms as `_evaluate_trials` takes them: instructions on the profile's settings,
        or (with variants) each pair as "INSTRUCTION@vVARIANT" drawn with its variant."""
        if "pairs" not in plan:
            return [(str(a), a) for a in plan["arms"]]
        return [(f"{i}@v{v}", i, self._variant(v, final)) for i, v in plan["pairs"]]

    def _record_costs(self) -> None:
        costs = self.evaluator.take_costs()
        if costs and self.config.variants:
            self.repo.add_variant_cost(self.run_id, costs)

    def _retire_variant(self, variant: Variant, error: str, r: int) -> None:
        """A candidate variant whose jobs failed (its model did not load, or drawing failed) is
        retired with the reason; the run goes on with the others."""
        if variant.hash in (self.search_variant.hash, self.final_variant.hash):
            return  # the profile's own settings: not a candidate to retire
        for row in self.repo.variants(self.run_id, live=True):
            if variant.hash in (row["search_hash"], row["final_hash"]):
                self.repo.fail_variant(row["id"], error)
                self.repo.event(self.run_id, "variant_failed", {"variant_id": row["id"], "name": row["name"], "error": error},
                                round=r)

    def _search_gains(self, include_round: int | None = None):
        from promptevo.objective import paired_gains

        return paired_gains(self.repo.trials(self.run_id, phase="search", finished=True, also_round=include_round),
                            self.objective)

    def _pick_pairs(self, r: int, rng: np.random.Generator) -> list[list[int]]:
        """A search round's (instruction, variant) pairs. factored: the instruction selector over
        instructions (their gains over every variant) and the variant selector over variants
        (over every instruction), zipped; joint: one selector over every live pair."""
        from promptevo.variants import pair_stats, variant_ids, variant_stats

        cfg = self.config
        live = self.repo.variants(self.run_id, live=True)
        if not live:
            failed = "; ".join(f"{v['name']}: {v['error']}" for v in self.repo.variants(self.run_id))
            raise UserError(f"every render variant failed ({failed})")
        pop = [p["id"] for p in self.population()]
        gains, vids = self._search_gains(), variant_ids(self.repo.variants(self.run_id))
        if cfg.variant_search == "joint":
            ids = [self.repo.arm(self.run_id, i, v["id"], r) for i in pop for v in live]
            arms = [a for a in self.repo.arms(self.run_id) if a["id"] in ids]
            chosen = self.selector.select(pair_stats(gains, vids, arms, live, cfg.cost_weight), cfg.arms_per_round, rng)
            by_id = {a["id"]: a for a in arms}
            return [[by_id[c]["instruction_id"], by_id[c]["variant_id"]] for c in chosen]
        instructions = self.selector.select(self.arm_stats(pop), cfg.arms_per_round, rng)
        picked = self.selector.select(variant_stats(gains, vids, live, cfg.cost_weight), min(len(instructions), len(live)), rng)
        pairs = [[int(i), int(picked[n % len(picked)])] for n, i in enumerate(instructions)]
        for i, v in pairs:
            self.repo.arm(self.run_id, i, v, r)
        return pairs

    def _best_variant(self, instruction_id: int) -> int:
        """The live variant an instruction did best with in the search rounds (cost-adjusted),
        else the best variant over every instruction, else the first live one."""
        from promptevo.variants import pair_stats, variant_ids, variant_stats

        live = self.repo.variants(self.run_id, live=True) or self.repo.variants(self.run_id)
        vids = variant_ids(self.repo.variants(self.run_id))
        gains = self._search_gains()
        arms = [a for a in self.repo.arms(self.run_id) if a["instruction_id"] == instruction_id
                and any(v["id"] == a["variant_id"] for v in live)]
        best = bandit.best(pair_stats(gains, vids, arms, live, self.config.cost_weight)) if arms else None
        if best is not None:
            return next(a["variant_id"] for a in arms if a["id"] == best)
        best = bandit.best(variant_stats(gains, vids, live, self.config.cost_weight))
        return best if best is not None else live[0]["id"]

    def _routing(self, held: Sequence[str]) -> dict[str, list[int]]:
        """The routing table (computed once from the search and selection trials, stored), and
        the held-out prompts' arms by their nearest group."""
        from promptevo.embed import shared_embedder
        from promptevo.objective import paired_gains
        from promptevo.routing import assign, group_count, kmeans, route_table
        from promptevo.variants import cost_of, variant_ids

        embedder = shared_embedder()
        routes = self.repo.routes(self.run_id)
        if not routes:
            opt = self.repo.prompts(self.run_id, "optimize")
            vectors = embedder.encode([p["text"] for p in opt])
            centroids = kmeans(vectors, group_count(len(opt), self.config.route_groups), self.config.seed)
            labels = assign(vectors, centroids)
            rows = {v["id"]: v for v in self.repo.variants(self.run_id)}
            vids, live = variant_ids(rows.values()), {i for i, v in rows.items() if v["status"] == "live"}
            # routed by variant: a group's variant is the one with the best gain on its prompts over
            # every instruction (a pair seen in one group rests on a handful of images), drawn with
            # the run's chosen instruction
            gains = []
            for phase in ("search", "selection"):
                for g in paired_gains(self.repo.trials(self.run_id, phase=phase, finished=True), self.objective):
                    vid = vids.get(g.trial.variant_hash)
                    if g.trial.instruction_id is not None and vid in live:
                        gains.append((vid, g.trial.prompt_id, g.gain - cost_of(rows[vid], self.config.cost_weight)))
            chosen = self.selected_instruction()["id"]
            table = route_table(gains, {p["id"]: int(g) for p, g in zip(opt, labels)}, len(centroids),
                                self._selected_variant(chosen))
            for row in table:
                row["arm_id"] = self.repo.arm(self.run_id, chosen, row["arm_id"], 0)
            texts = [p["text"] for p in opt]
            for row in table:
                members = [i for i, g in enumerate(labels) if g == row["group"]]
                members.sort(key=lambda i: -float(vectors[i] @ centroids[row["group"]]))
                row.update(centroid=[round(float(x), 6) for x in centroids[row["group"]]],
                           examples=[texts[i] for i in members[:3]])
            self.repo.set_routes(self.run_id, table)
            routes = self.repo.routes(self.run_id)
        texts = self.repo.prompt_texts(list(held))
        labels = assign(embedder.encode([texts[p] for p in held]), np.array([r["centroid"] for r in routes]))
        return {pid: [routes[int(g)]["instruction_id"], routes[int(g)]["variant_id"]] for pid, g in zip(held, labels)}

    def _selected_variant(self, instruction_id: int) -> int:
        chosen = [e for e in self.repo.events(self.run_id, "selected") if e["data"].get("variant_id")]
        if chosen and chosen[-1]["data"]["instruction_id"] == instruction_id:
            return chosen[-1]["data"]["variant_id"]
        return self._best_variant(instruction_id)

    def _evolve(self, r: int, parent: int) -> list[dict[str, Any]]:
        """The critic's gradient on the round's weakest arm (or, `parent = "best"`, its best),
        then the updater's new instructions, one per improvement, seeing the run's history when
        `history` is on. Returns the new instructions, not yet stored."""
        cfg = self.config
        parent_text = self.repo.instruction(parent)["text"]
        gradient = self.repo.gradient(self.run_id, r)
        if gradient is None:
            if cfg.gradient:
                examples = critique_examples(self.repo, self.run_id, r, parent, self.objective, self.references)
                if not examples:
                    self.repo.event(self.run_id, "gradient_skipped",
                                    {"reason": "no better prompts to contrast", "instruction_id": parent}, round=r)
                    return []
                found = critique(self.llm, parent_text, examples, cfg.new_per_gradient, repo=self.repo,
                                 run_id=self.run_id, seed=cfg.seed * 1000 + r)
                improvements, text, call_id = found.improvements, found.text, found.llm_call_id
            else:
                improvements, text, call_id = blind_improvements(cfg.new_per_gradient), "(no gradient: ablation)", None
            self.repo.add_gradient(self.run_id, r, instruction_id=parent, text=text[:20000],
                                   improvements=improvements, llm_call_id=call_id)
            gradient = self.repo.gradient(self.run_id, r)
        improvements = json.loads(gradient["improvements_json"])
        existing = {i["text"] for i in self.repo.instructions(self.run_id)}
        history = hints = None
        if cfg.history:
            from promptevo.hints import run_hints, run_history

            tried = [i["id"] for i in self.repo.instructions(self.run_id) if i["origin"] != "baseline"]
            history = run_history(self.repo, self.run_id, self.arm_stats(tried, include_round=r))
            hints = run_hints(self.repo, self.run_id, self.objective, also_round=r)
        new = []
        for u in update(self.llm, parent_text, improvements, existing, repo=self.repo, run_id=self.run_id,
                        seed=cfg.seed * 1000 + r, history=history, hints=hints):
            if u.text is None:
                self.repo.event(self.run_id, "instruction_rejected", {"llm_call_id": u.llm_call_id, "reason": u.rejected}, round=r)
                continue
            new.append({"text": u.text, "parent_id": parent, "gradient_id": gradient["id"], "llm_call_id": u.llm_call_id})
        return new

    def _merge(self, r: int, new: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """GEPA's merge: the two live instructions that win the most prompts of the Pareto front
        (ties: higher mean), combined by the LLM into one new instruction, if that pair was not
        merged before. Returns it (not yet stored), or nothing."""
        from promptevo.critic import merge
        from promptevo.hints import Ranked

        stats = {s.arm: s for s in self.arm_stats([p["id"] for p in self.population()], include_round=r)}
        wins = bandit.pareto_front(list(stats.values()))
        ranked = sorted(wins, key=lambda a: (-wins[a], -stats[a].mean, a))
        done = {tuple(e["data"]["pair"]) for e in self.repo.events(self.run_id, "merged") if e["round"] != r}
        pair = next(((a, b) for i, a in enumerate(ranked) for b in ranked[i + 1:] if (a, b) not in done), None)
        if pair is None:
            return []
        a, b = (Ranked(self.repo.instruction(i)["text"], stats[i].mean, stats[i].pulls) for i in pair)
        existing = {i["text"] for i in self.repo.instructions(self.run_id)} | {n["text"] for n in new}
        u = merge(self.llm, a, b, existing, repo=self.repo, run_id=self.run_id, seed=self.config.seed * 1000 + r)
        self.repo.event(self.run_id, "merged", {"pair": list(pair), "llm_call_id": u.llm_call_id, "rejected": u.rejected},
                        round=r)
        if u.text is None:
            return []
        return [{"text": u.text, "parent_id": pair[0], "gradient_id": None, "llm_call_id": u.llm_call_id,
                 "origin": "merge"}]

    def _finish_search_round(self, r: int, new: list[dict[str, Any]]) -> None:
        """Add the new instructions, retire the weakest down to the population size and mark the
        round finished, all in one transaction."""
        pop = self.population()
        stats = self.arm_stats([p["id"] for p in pop], include_round=r)
        retire: list[int] = []
        excess = len(pop) + len(new) - self.config.population
        pulled = [s for s in stats if s.pulls]
        front = bandit.pareto_front(stats) if self.config.selector == "pareto" else {}
        # with the Pareto selector, instructions off the front go first
        for candidates in ([s for s in pulled if s.arm not in front], [s for s in pulled if s.arm in front]):
            while excess > 0 and candidates:
                w = bandit.weakest(candidates)
                retire.append(w)
                candidates = [s for s in candidates if s.arm != w]
                excess -= 1
        with self.repo.atomic():
            for n in new:
                self.repo.add_instruction(self.run_id, text=n["text"], origin=n.get("origin", "modifier"), created_round=r,
                                          parent_id=n["parent_id"], gradient_id=n["gradient_id"], llm_call_id=n["llm_call_id"])
            self.repo.retire(retire, r)
            self.repo.finish_round(self.run_id, r)

    # -- stage 2: the selection pass ------------------------------------------------------------

    def best_instruction(self) -> dict[str, Any]:
        """The best mean reward in the final population (retired arms lost their place), or with
        a Pareto set, of every instruction tried: all were scored on the same pairs."""
        rows = self.population()
        if self.config.pareto_set:
            rows = [i for i in self.repo.instructions(self.run_id) if i["origin"] != "baseline"]
        stats = self.arm_stats([row["id"] for row in rows])
        best = bandit.best(stats)
        return next(row for row in rows if row["id"] == (best if best is not None else rows[0]["id"]))

    def selection_pass(self) -> None:
        """Every live instruction rewrites the same optimisation prompts on fresh seeds, paired
        with the naive prompt, and the best mean gain becomes the run's best. Search-round means
        compare arms on different prompts and one to three rounds each, which under noise too
        often crowns a lucky newcomer; this compares them on equal terms."""
        r = self._stage_number(Phase.selection)
        # candidates: the live population plus the best retired instructions by search mean
        # (retirement judged them on one or two noisy rounds)
        live = [p["id"] for p in self.population()]
        tried = [i["id"] for i in self.repo.instructions(self.run_id) if i["origin"] != "baseline"]
        stats = [s for s in self.arm_stats(tried) if s.pulls and s.arm not in live]
        extra = [s.arm for s in sorted(stats, key=lambda s: (-s.mean, s.arm))][: self.config.population]
        candidates = live + extra

        def make_plan() -> dict[str, Any]:
            rng = self._rng(r, 77)
            pool = self.repo.prompts(self.run_id, "optimize")
            n = min(self.config.select_prompts, len(pool))
            picked = sorted(int(i) for i in rng.choice(len(pool), size=n, replace=False)) if n else []
            plan = {"prompts": [pool[i]["id"] for i in picked],
                    "seeds": [[PASS_SEED_OFFSET + int(rng.integers(0, 2**30))] for _ in picked],
                    "arms": candidates}
            if self.config.variants:  # each candidate with the variant it did best with
                plan["pairs"] = [[a, self._best_variant(a)] for a in candidates]
            return plan

        self._emit("selection", r)
        plan = self._plan(r, Phase.selection, make_plan)
        best = None
        if plan["prompts"] and len(plan["arms"]) > 1:
            arms = self._plan_arms(plan, final=True)
            variant = self.final_variant
            with self._gpu_meanwhile(self._naive_jobs(plan["prompts"], plan["seeds"], variant)):
                rewrites = self._rewrites(r, [(a[0], a[1], self.repo.instruction(a[1])["text"]) for a in arms], plan["prompts"], variant)
            self._evaluate_trials(r, plan, arms, rewrites, variant)
            gains = {row["arm"]: row["reward"] for row in round_rewards(self.repo, self.run_id, self.objective, r, phase=Phase.selection.value)}
            best = max(plan["arms"], key=lambda a: (gains.get(a, float("-inf")), -a))
        with self.repo.atomic():  # the choice and the stage's end land together
            if best is not None:
                chosen = {"instruction_id": best}
                if "pairs" in plan:
                    chosen["variant_id"] = next(v for i, v in plan["pairs"] if i == best)
                self.repo.event(self.run_id, "selected", chosen, round=r)
            self.repo.finish_round(self.run_id, r)

    def selected_instruction(self) -> dict[str, Any]:
        """The selection pass's winner, else (pass off) the best search-round mean."""
        row = self.repo.stage_round(self.run_id, Phase.selection.value)
        chosen = self.repo.events(self.run_id, "selected", round=row["round"]) if row else []
        if chosen:
            return self.repo.instruction(chosen[-1]["data"]["instruction_id"])
        return self.best_instruction()

    # -- stage 3: the held-out evaluation -------------------------------------------------------

    def heldout_evaluation(self) -> None:
        r = self._stage_number(Phase.evaluation)
        held = self.repo.prompts(self.run_id, "heldout") or self.repo.prompts(self.run_id, "optimize")
        initial = self.repo.instructions(self.run_id, origin="seed")[0]

        def make_plan() -> dict[str, Any]:
            rng = self._rng(r, 99)
            seeds = [[EVAL_SEED_OFFSET + int(s) for s in rng.integers(0, 2**30, self.config.eval_seeds)] for _ in held]
            plan = {"prompts": [p["id"] for p in held], "seeds": seeds,
                    "best": self.selected_instruction()["id"], "initial": initial["id"]}
            if self.config.variants:  # the best single arm, and each prompt's arm by the routing table
                plan["best_variant"] = self._selected_variant(plan["best"])
                plan["routes"] = self._routing(plan["prompts"])
            return plan

        self._emit("held-out evaluation", r)
        plan = self._plan(r, Phase.evaluation, make_plan)
        arms: list[tuple] = [("best", plan["best"]), ("initial", plan["initial"])]
        if "best_variant" in plan:
            arms[0] = ("best", plan["best"], self._variant(plan["best_variant"], True))
        refine = self.repo.instructions(self.run_id, origin="baseline")
        if "refine" in self.config.baselines and refine:
            arms.append(("refine", refine[0]["id"]))
        variant = self.final_variant
        routed = {pid: (iid, self._variant(vid, True)) for pid, (iid, vid) in plan.get("routes", {}).items()}
        with self._gpu_meanwhile(self._naive_jobs(plan["prompts"], plan["seeds"], variant)):
            rewrites = self._rewrites(r, [(a[0], a[1], self.repo.instruction(a[1])["text"]) for a in arms], plan["prompts"], variant)
            for iid in dict.fromkeys(i for i, _ in routed.values()):  # each routed instruction on its group's prompts only
                rewrites.update(self._rewrites(r, [("routed", iid, self.repo.instruction(iid)["text"])],
                                               [p for p, (i, _) in routed.items() if i == iid], variant))
        fixed = self._fixed_baselines(plan["prompts"])
        self._evaluate_trials(r, plan, arms + [(name, None) for name in fixed], rewrites, variant, fixed, routed)
        with self.repo.atomic():
            self.repo.finish_round(self.run_id, r)
            self.repo.set_best(self.run_id, plan["best"])

    def _fixed_baselines(self, prompt_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """Baselines that need no LLM: the naive prompt plus a fixed style suffix, and the nearest
        reference-database prompt used as is (the paper's Lexica baseline)."""
        texts = self.repo.prompt_texts(prompt_ids)
        fixed: dict[str, dict[str, str]] = {}
        if "suffix" in self.config.baselines:
            fixed["suffix"] = {pid: texts[pid] + STYLE_SUFFIX for pid in prompt_ids}
        if "reference" in self.config.baselines and self.references:
            fixed["reference"] = {}
            for pid in prompt_ids:
                near = self.references.nearest(texts[pid])
                fixed["reference"][pid] = near[0]["text"] if near else texts[pid]
        return fixed
