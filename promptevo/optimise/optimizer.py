"""The optimisation loop: paired search rounds, then a selection pass and a held-out evaluation,
as three named stages. What a round evaluates and how new instructions are made is the
strategy's (`optimise.strategies`: the seed paper's loop, GEPA's Pareto set, or any registered
one); render variants and routing are a collaborator's (`optimise.variant_search`).

Each stage's plan (prompts, seeds, arms; `optimise.plans`) is stored before any work, with its
phase; every rewrite, image and score is stored as it is made, and arm statistics are recomputed
from finished rounds through the run's objective, so a run killed at any moment resumes without
losing or repeating finished work. The loop asks the evaluator for (text, seed, target, variant)
jobs and the run repository for everything stored; it writes no SQL.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from promptevo.evaluation.evaluator import CachedEvaluator, Evaluator, Job, Variant
from promptevo.optimise import bandit, budget, recipes
from promptevo.optimise.generator import rewrite
from promptevo.optimise.plans import EvaluationPlan, Plan, SearchPlan, SelectionPlan
from promptevo.optimise.progress import Progress, TimedLLM, llm_calls_left
from promptevo.optimise.run_config import (
    EVAL_SEED_OFFSET,
    PASS_SEED_OFFSET,
    OptimizeConfig,
    Phase,
)
from promptevo.optimise.summary import answer_id, arm_stats, round_rewards, summarize
from promptevo.optimise.variant_search import VariantSearch
from promptevo.promptdb.references import ReferencePrompts
from promptevo.registry import LLM, build_strategy
from promptevo.rewards.objective import run_objective
from promptevo.stats import mean_ci
from promptevo.storage.lease import RunLease
from promptevo.storage.repository import NewTrial, RunRepository
from promptevo.storage.store import Store

P = TypeVar("P", bound=Plan)


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
        self.strategy = build_strategy(self.config.strategy_name)
        self.variants = VariantSearch(self)  # render variants and routing, when the run has candidates

    @property
    def references(self) -> ReferencePrompts | None:
        """Opened on first use (the embedder loads only when a gradient needs it)."""
        if self._references is None and self.config.reference_db:
            self._references = ReferencePrompts(self.config.reference_db, self.config.reference_k)
            self._owns_references = True
        return self._references

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
        self.progress.llm_calls_left = llm_calls_left(self.config, self.repo, self.run_id, round, stage)
        self.on_progress(self.progress)

    def _progress_stats(self, ids: list[int]) -> dict[int, bandit.ArmStats]:
        """Arm statistics for the progress display. They read finished rounds only, so between
        a round's stages they change only with new instructions, a finished round, a judgement
        or another objective: recomputed then, not at each of a round's five updates."""
        judged = self.repo.latest_judgement_id(self.run_id)
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

    def _timed_round(self, r: int, started: float, llm0: float, eval0: float) -> None:
        p = self.progress
        p.round_s = time.perf_counter() - started
        p.llm_s, p.eval_s = self.llm.seconds - llm0, self.evaluator.compute_s - eval0
        self._round_times.append(p.round_s)
        p.eta_s = (self.config.rounds - r) * sum(self._round_times) / len(self._round_times)

    def run_all(self, *, wait: bool = False) -> dict[str, Any]:
        """Every stage not yet finished, in order, as the run's one owner (another live process
        on the same run makes this refuse, or wait with `wait`)."""
        with RunLease(self.repo, self.run_id, wait=wait):
            finished = self.repo.finished_rounds(self.run_id)
            try:
                if self.config.retouch is not None:
                    self.retouch_stage()
                if self.config.variants:
                    self.variants.sync()
                for r in range(1, self.config.rounds + 1):
                    if r not in finished:
                        self._within_budget("search", r, f"search round {r}")
                        self.search_round(r)
                for phase, stage in ((Phase.selection, self.selection_pass), (Phase.evaluation, self.heldout_evaluation)):
                    row = self.repo.stage_round(self.run_id, phase.value)
                    if row is None or row["status"] != "finished":
                        self._within_budget(phase.value, row["round"] if row else None, f"the {phase.value} stage")
                        stage()
            finally:
                if self._owns_references:  # opened here, so closed here
                    assert self._references is not None
                    self._references.close()
                    self._references, self._owns_references = None, False
            self.repo.set_status(self.run_id, "finished")
        return summarize(self.repo, self.run_id, self.objective)

    def _within_budget(self, stage: str, started: int | None, label: str) -> None:
        """Stop before a stage that would pass a limit (a stage already begun is finished: its
        plan is stored and part of its work paid for)."""
        if started is not None and self.repo.round(self.run_id, started) is not None:
            return
        try:
            budget.check(self.config, self.repo, self.run_id, stage, label)
        except budget.BudgetReached as exc:
            self.repo.event(self.run_id, "stopped", {"reason": "budget", "message": str(exc)})
            raise

    def retouch_stage(self) -> None:
        """The run's retouch plan, decided once and stored (event `retouch_plan`) before any round:
        a given plan, or ("auto") the planner and the search on naive renders of up to eight
        optimisation prompts. Every image of the run, the naive prompt's included, is then made
        with the plan as post-ops of its variant, so gains compare instructions under the same
        retouch and resumed runs find their retouched images in the cache."""
        from promptevo.retouch.plan import validate

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

        from promptevo.retouch.planner import RetouchSettings, retouch_set

        pool = self.repo.prompts(self.run_id, "optimize")[:8]
        seed = int(self.rng(0x7E7).integers(0, 2**31 - 1))
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

    def _plan(self, round: int, phase: Phase, make: Callable[[], P], kind: type[P]) -> P:
        """The stored plan of a round, or a new one stored before any of its work."""
        row = self.repo.round(self.run_id, round)
        if row:
            return kind.from_json(row["plan_json"])
        plan = make()
        self.repo.start_round(self.run_id, round, phase.value, plan.to_dict())
        return plan

    def rng(self, *keys: int) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, *keys])

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

    def search_round(self, r: int) -> None:
        cfg = self.config

        def make_plan() -> SearchPlan:
            rng = self.rng(r)
            prompts, seeds = self.strategy.draw(self, r, rng)
            if cfg.variants:
                pairs = self.variants.pick_pairs(r, rng)
                return SearchPlan(prompts, seeds, list(dict.fromkeys(i for i, _ in pairs)), pairs)
            return SearchPlan(prompts, seeds, self.strategy.arms(self, r, rng))

        started, llm0, eval0 = time.perf_counter(), self.llm.seconds, self.evaluator.compute_s
        if cfg.goal and (r - 1) % cfg.agent_every == 0:
            self._emit("objective", r)
            self._set_objective(r)
        self._emit("planning", r)
        plan = self._plan(r, Phase.search, make_plan, SearchPlan)
        arms = {a: self.repo.instruction(a)["text"] for a in plan.arms}
        self._emit("rewriting", r)
        variant = self.search_variant
        with self._gpu_meanwhile(self._naive_jobs(plan.prompts, plan.seeds, variant)):  # naive images need no LLM
            rewrites = self._rewrites(r, [(str(a), a, text) for a, text in arms.items()], plan.prompts, variant)
        self._emit("rendering and scoring", r)
        self._evaluate_trials(r, plan, self.variants.plan_arms(plan, final=False), rewrites, variant)

        self._emit("gradient", r)
        rewards = {row["arm"]: row["reward"] for row in round_rewards(self.repo, self.run_id, self.objective, r) if row["round"] == r}
        new_instructions: list[dict[str, Any]] = []
        if rewards and (cfg.new_per_gradient > 0 or cfg.merge):
            upcoming = self._naive_jobs(*self.strategy.draw(self, r + 1, self.rng(r + 1)), variant) if r < cfg.rounds else []
            with self._gpu_meanwhile(upcoming):  # next round's naive images while the LLM critiques
                new_instructions = self.strategy.evolve(self, r, rewards)
        self._finish_search_round(r, new_instructions)
        self._timed_round(r, started, llm0, eval0)
        self._emit("round finished", r)

    def _set_objective(self, r: int) -> None:
        """The objective agent's decision for this round (made once: a resumed round reuses it)."""
        from promptevo.optimise import agent
        from promptevo.registry import reward_info

        if self.repo.round(self.run_id, r) is not None or any(
                e["round"] == r for e in self.repo.events(self.run_id) if e["kind"] in ("objective_set", "objective_rejected")):
            return
        agent.read_feedback_file(self.repo, self.run_id, self.config.feedback_file, r)
        spec = self.objective.spec()
        describe = {n: reward_info(kind).measures for n, kind in spec.get("kinds", {}).items()}
        agent.decide(self.llm, self.repo, self.run_id, r, goal=self.config.goal or "", spec=spec, describe=describe,
                     seed=self.config.seed * 1000 + r)
        self.objective = run_objective(self.repo, self.run_id)

    def _rewrites(self, r: int, arms: Sequence[tuple[str, int, str]], prompt_ids: Sequence[str],
                  variant: Variant) -> dict[tuple[int, str], str]:
        """Stored rewrites for this round, generating (in one batch) only the missing ones."""
        have = {(row["instruction_id"], row["prompt_id"]): row["text"] for row in self.repo.rewrites(self.run_id, r)}
        texts = self.repo.prompt_texts(prompt_ids)
        todo = [(iid, text, pid) for _, iid, text in arms for pid in prompt_ids if (iid, pid) not in have]
        made = recipes.template_rewrites([t for t in todo if recipes.is_template(t[1])], texts, self.references,
                                         lambda text: self.evaluator.token_count(text, variant), self.evaluator.text_window(variant))
        if made:
            self.repo.add_rewrites(self.run_id, r, made)
            have.update({(m["instruction_id"], m["prompt_id"]): m["text"] for m in made})
        todo = [t for t in todo if not recipes.is_template(t[1])]
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
        self, r: int, plan: Plan, arms: Sequence[tuple], rewrites: dict[tuple[int, str], str],
        variant: Variant, fixed: dict[str, dict[str, str]] | None = None,
        routed: dict[str, tuple[int, Variant]] | None = None,
    ) -> None:
        """Evaluate the naive prompts (on `variant`, the profile's own settings) and every arm's
        rewrites on the plan's seeds (paired), all against the naive prompt, and store the trials
        with every reward's score. An arm is (name, instruction id) drawn on `variant`, or
        (name, instruction id, its variant); `routed` gives each prompt its group's arm."""
        texts = self.repo.prompt_texts(plan.prompts)
        entries: list[tuple[str, int | None, str, int, Job]] = []
        for pid, seeds in zip(plan.prompts, plan.seeds):
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
        self.variants.record_costs()
        for (name, iid, pid, seed, job), res in zip(entries, results):
            if res.error is not None:  # a worker failed on it: recorded, the rest of the round goes on
                self.repo.event(self.run_id, "job_failed", {"arm": name, "instruction_id": iid, "prompt_id": pid, "seed": seed,
                                                            "text": job.text, "error": res.error}, round=r)
                self.variants.retire(job.variant, res.error, r)
        self.repo.add_trials(self.run_id, r, [
            NewTrial(arm=name, instruction_id=iid, prompt_id=pid, seed=seed, image_id=res.image_id, score_ids=res.score_ids)
            for (name, iid, pid, seed, _), res in zip(entries, results) if res.error is None and res.image_id is not None])

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
                assert w is not None  # candidates are pulled arms
                retire.append(w)
                candidates = [s for s in candidates if s.arm != w]
                excess -= 1
        with self.repo.atomic():
            for n in new:
                self.repo.add_instruction(self.run_id, text=n["text"], origin=n.get("origin", "modifier"), created_round=r,
                                          parent_id=n["parent_id"], gradient_id=n["gradient_id"], llm_call_id=n["llm_call_id"])
            self.repo.retire(retire, r)
            self.repo.finish_round(self.run_id, r)

    def best_instruction(self) -> dict[str, Any]:
        """The strategy's pick from the search rounds: the best mean reward in the final population
        (retired arms lost their place), or with a Pareto set, of every instruction tried."""
        return self.strategy.choose(self)

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

        def make_plan() -> SelectionPlan:
            rng = self.rng(r, 77)
            pool = self.repo.prompts(self.run_id, "optimize")
            n = min(self.config.select_prompts, len(pool))
            picked = sorted(int(i) for i in rng.choice(len(pool), size=n, replace=False)) if n else []
            pairs = None
            if self.config.variants:  # each candidate with the variant it did best with
                pairs = [[a, self.variants.best_variant(a)] for a in candidates]
            return SelectionPlan([pool[i]["id"] for i in picked],
                                 [[PASS_SEED_OFFSET + int(rng.integers(0, 2**30))] for _ in picked], candidates, pairs)

        self._emit("selection", r)
        plan = self._plan(r, Phase.selection, make_plan, SelectionPlan)
        best = None
        if plan.prompts and len(plan.arms) > 1:
            arms = self.variants.plan_arms(plan, final=True)
            variant = self.final_variant
            with self._gpu_meanwhile(self._naive_jobs(plan.prompts, plan.seeds, variant)):
                rewrites = self._rewrites(r, [(a[0], a[1], self.repo.instruction(a[1])["text"]) for a in arms], plan.prompts, variant)
            self._evaluate_trials(r, plan, arms, rewrites, variant)
            gains = {row["arm"]: row["reward"] for row in round_rewards(self.repo, self.run_id, self.objective, r, phase=Phase.selection.value)}
            best = max(plan.arms, key=lambda a: (gains.get(a, float("-inf")), -a))
        with self.repo.atomic():  # the choice and the stage's end land together
            if best is not None:
                chosen = {"instruction_id": best}
                if plan.pairs is not None:
                    chosen["variant_id"] = next(v for i, v in plan.pairs if i == best)
                self.repo.event(self.run_id, "selected", chosen, round=r)
            self.repo.finish_round(self.run_id, r)

    def selected_instruction(self) -> dict[str, Any]:
        """The selection pass's winner, else (pass off) the best search-round mean."""
        row = self.repo.stage_round(self.run_id, Phase.selection.value)
        chosen = self.repo.events(self.run_id, "selected", round=row["round"]) if row else []
        if chosen:
            return self.repo.instruction(chosen[-1]["data"]["instruction_id"])
        return self.best_instruction()

    def heldout_evaluation(self) -> None:
        r = self._stage_number(Phase.evaluation)
        held = self.repo.prompts(self.run_id, "heldout") or self.repo.prompts(self.run_id, "optimize")
        initial = self.repo.instructions(self.run_id, origin="seed")[0]

        def make_plan() -> EvaluationPlan:
            rng = self.rng(r, 99)
            seeds = [[EVAL_SEED_OFFSET + int(s) for s in rng.integers(0, 2**30, self.config.eval_seeds)] for _ in held]
            prompts, best = [p["id"] for p in held], self.selected_instruction()["id"]
            if not self.config.variants:
                return EvaluationPlan(prompts, seeds, best, initial["id"])
            # the best single arm, and each prompt's arm by the routing table
            best_variant = self.variants.selected_variant(best)
            return EvaluationPlan(prompts, seeds, best, initial["id"], best_variant, self.variants.routing(prompts))

        self._emit("held-out evaluation", r)
        plan = self._plan(r, Phase.evaluation, make_plan, EvaluationPlan)
        arms: list[tuple] = [("best", plan.best), ("initial", plan.initial)]
        if plan.best_variant is not None:
            arms[0] = ("best", plan.best, self.variants.variant(plan.best_variant, True))
        refine = self.repo.instructions(self.run_id, origin="baseline")
        if "refine" in self.config.baselines and refine:
            arms.append(("refine", refine[0]["id"]))
        arms += recipes.heldout_arms(self.config.recipes, self.repo.instructions(self.run_id, origin="recipe"))
        variant = self.final_variant
        routed = {pid: (iid, self.variants.variant(vid, True)) for pid, (iid, vid) in (plan.routes or {}).items()}
        with self._gpu_meanwhile(self._naive_jobs(plan.prompts, plan.seeds, variant)):
            rewrites = self._rewrites(r, [(a[0], a[1], self.repo.instruction(a[1])["text"]) for a in arms], plan.prompts, variant)
            for iid in dict.fromkeys(i for i, _ in routed.values()):  # each routed instruction on its group's prompts only
                rewrites.update(self._rewrites(r, [("routed", iid, self.repo.instruction(iid)["text"])],
                                               [p for p, (i, _) in routed.items() if i == iid], variant))
        fixed = recipes.fixed_baselines(self.config, self.repo, self.references, plan.prompts)
        self._evaluate_trials(r, plan, arms + [(name, None) for name in fixed], rewrites, variant, fixed, routed)
        with self.repo.atomic():
            self.repo.finish_round(self.run_id, r)
            self.repo.set_best(self.run_id, plan.best)
