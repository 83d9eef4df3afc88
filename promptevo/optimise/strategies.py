"""Optimiser strategies, registered by kind: how a search round draws its prompts and arms, how
new instructions are made, and which instruction answers when no selection pass decides.

- `loop` (the seed paper's): fresh prompts each round, the selector's arms, the critic's
  gradient on the round's weakest arm (or best: `parent`), the updater's new instructions (seeing
  the run's history with `history`), and optionally GEPA's merge of the two front leaders.
- `pareto-set` (GEPA's): the same, but every round scores its arms on the same prompts and seeds
  (`pareto_set` of them), and the answer is the best of every instruction tried.

A strategy decides; the optimiser (`opt`) does the stages, stores the plans and shows progress.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from promptevo.optimise import bandit
from promptevo.optimise.critic import (
    blind_improvements,
    critique,
    critique_examples,
    critique_seeing,
    round_images,
    update,
    vision_critic,
)
from promptevo.optimise.critic import merge as merge_instructions
from promptevo.optimise.hints import Ranked, run_hints, run_history
from promptevo.registry import register_strategy


class LoopStrategy:
    """The seed paper's loop (arXiv 2406.08713), with ProTeGi's critic/updater split."""

    name = "loop"

    def draw(self, opt: Any, r: int, rng: np.random.Generator) -> tuple[list[str], list[list[int]]]:
        """Round r's prompts and seeds: fresh prompts each round, the first draws from the round's
        generator, so they are known before the round is planned (which lets the GPU render them
        early)."""
        cfg = opt.config
        pool = opt.repo.prompts(opt.run_id, "optimize")
        picked = rng.choice(len(pool), size=min(cfg.batch_size, len(pool)), replace=False)
        prompts = [pool[int(i)]["id"] for i in picked]
        seeds = [[int(s) for s in rng.integers(0, 2**31 - 1, cfg.seeds_per_prompt)] for _ in prompts]
        return prompts, seeds

    def arms(self, opt: Any, r: int, rng: np.random.Generator) -> list[int]:
        pop = opt.population()
        return [int(a) for a in opt.selector.select(opt.arm_stats([p["id"] for p in pop]), opt.config.arms_per_round, rng)]

    def evolve(self, opt: Any, r: int, rewards: dict[int, float]) -> list[dict[str, Any]]:
        """The critic's gradient on the round's weakest arm (or best), the updater's instructions,
        and with `merge` one merged instruction."""
        cfg = opt.config
        if cfg.parent == "best":
            parent = max(rewards, key=lambda a: (rewards[a], -a))
        else:
            parent = min(rewards, key=lambda a: (rewards[a], a))
        new = self.critique_and_update(opt, r, parent) if cfg.new_per_gradient > 0 else []
        if cfg.merge:
            new += self.merge(opt, r, new)
        return new

    def candidates(self, opt: Any) -> list[dict[str, Any]]:
        """The final population: retired arms lost their place."""
        return opt.population()

    def choose(self, opt: Any) -> dict[str, Any]:
        """The best search mean among the candidates."""
        rows = self.candidates(opt)
        best = bandit.best(opt.arm_stats([row["id"] for row in rows]))
        return next(row for row in rows if row["id"] == (best if best is not None else rows[0]["id"]))

    def critique_and_update(self, opt: Any, r: int, parent: int) -> list[dict[str, Any]]:
        """The critic's gradient on the round's weakest arm (or, `parent = "best"`, its best),
        then the updater's new instructions, one per improvement, seeing the run's history when
        `history` is on. Returns the new instructions, not yet stored."""
        cfg = opt.config
        parent_text = opt.repo.instruction(parent)["text"]
        gradient = opt.repo.gradient(opt.run_id, r)
        if gradient is None:
            if cfg.gradient:
                examples = critique_examples(opt.repo, opt.run_id, r, parent, opt.objective, opt.references)
                if not examples:
                    opt.repo.event(opt.run_id, "gradient_skipped",
                                   {"reason": "no better prompts to contrast", "instruction_id": parent}, round=r)
                    return []
                shown = round_images(opt.repo, opt.run_id, r, parent, opt.objective) if cfg.critic_vision else []
                if shown:
                    found = critique_seeing(vision_critic(opt), parent_text, examples, shown, cfg.new_per_gradient,
                                            repo=opt.repo, run_id=opt.run_id, round=r, weak=parent, seed=cfg.seed * 1000 + r)
                else:
                    found = critique(opt.llm, parent_text, examples, cfg.new_per_gradient, repo=opt.repo,
                                     run_id=opt.run_id, seed=cfg.seed * 1000 + r)
                improvements, text, call_id = found.improvements, found.text, found.llm_call_id
            else:
                improvements, text, call_id = blind_improvements(cfg.new_per_gradient), "(no gradient: ablation)", None
            opt.repo.add_gradient(opt.run_id, r, instruction_id=parent, text=text[:20000],
                                  improvements=improvements, llm_call_id=call_id)
            gradient = opt.repo.gradient(opt.run_id, r)
        improvements = json.loads(gradient["improvements_json"])
        existing = {i["text"] for i in opt.repo.instructions(opt.run_id)}
        history = hints = None
        if cfg.history:
            tried = [i["id"] for i in opt.repo.instructions(opt.run_id) if i["origin"] != "baseline"]
            history = run_history(opt.repo, opt.run_id, opt.arm_stats(tried, include_round=r))
            hints = run_hints(opt.repo, opt.run_id, opt.objective, also_round=r)
        new = []
        for u in update(opt.llm, parent_text, improvements, existing, repo=opt.repo, run_id=opt.run_id,
                        seed=cfg.seed * 1000 + r, history=history, hints=hints):
            if u.text is None:
                opt.repo.event(opt.run_id, "instruction_rejected", {"llm_call_id": u.llm_call_id, "reason": u.rejected}, round=r)
                continue
            new.append({"text": u.text, "parent_id": parent, "gradient_id": gradient["id"], "llm_call_id": u.llm_call_id})
        return new

    def merge(self, opt: Any, r: int, new: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """GEPA's merge: the two live instructions that win the most prompts of the Pareto front
        (ties: higher mean), combined by the LLM into one new instruction, if that pair was not
        merged before. Returns it (not yet stored), or nothing."""
        stats = {s.arm: s for s in opt.arm_stats([p["id"] for p in opt.population()], include_round=r)}
        wins = bandit.pareto_front(list(stats.values()))
        ranked = sorted(wins, key=lambda a: (-wins[a], -stats[a].mean, a))
        done = {tuple(e["data"]["pair"]) for e in opt.repo.events(opt.run_id, "merged") if e["round"] != r}
        pair = next(((a, b) for i, a in enumerate(ranked) for b in ranked[i + 1:] if (a, b) not in done), None)
        if pair is None:
            return []
        a, b = (Ranked(opt.repo.instruction(i)["text"], stats[i].mean, stats[i].pulls) for i in pair)
        existing = {i["text"] for i in opt.repo.instructions(opt.run_id)} | {n["text"] for n in new}
        u = merge_instructions(opt.llm, a, b, existing, repo=opt.repo, run_id=opt.run_id, seed=opt.config.seed * 1000 + r)
        opt.repo.event(opt.run_id, "merged", {"pair": list(pair), "llm_call_id": u.llm_call_id, "rejected": u.rejected},
                       round=r)
        if u.text is None:
            return []
        return [{"text": u.text, "parent_id": pair[0], "gradient_id": None, "llm_call_id": u.llm_call_id,
                 "origin": "merge"}]


class ParetoSetStrategy(LoopStrategy):
    """GEPA's Pareto set: every round on the same prompts and seeds."""

    name = "pareto-set"

    def draw(self, opt: Any, r: int, rng: np.random.Generator) -> tuple[list[str], list[list[int]]]:
        """The same prompts and seeds every round: every candidate is scored on the same pairs and
        the naive images are made once."""
        cfg = opt.config
        pool = opt.repo.prompts(opt.run_id, "optimize")
        fixed = opt.rng(0x9A2E)
        picked = fixed.choice(len(pool), size=min(cfg.pareto_set, len(pool)), replace=False)
        return ([pool[int(i)]["id"] for i in picked],
                [[int(s) for s in fixed.integers(0, 2**31 - 1, cfg.seeds_per_prompt)] for _ in picked])

    def candidates(self, opt: Any) -> list[dict[str, Any]]:
        """Every instruction tried: all were scored on the same pairs."""
        return [i for i in opt.repo.instructions(opt.run_id) if i["origin"] != "baseline"]


register_strategy("loop")(LoopStrategy)
register_strategy("pareto-set")(ParetoSetStrategy)
