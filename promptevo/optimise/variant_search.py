"""Render variants as part of what is optimised, a collaborator of the optimiser: each variant's
image hashes, the (instruction, variant) pairs a search round evaluates (factored or joint), the
cost of each variant, failing variants retired, and the routing table the held-out evaluation
uses. It reads and decides through the optimiser (`opt`), as a strategy does."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from promptevo.embed import shared_embedder
from promptevo.errors import UserError
from promptevo.evaluation.evaluator import Variant
from promptevo.optimise import bandit
from promptevo.optimise.plans import SearchPlan, SelectionPlan
from promptevo.optimise.routing import assign, group_count, kmeans, route_table
from promptevo.optimise.variants import cost_of, pair_stats, variant_ids, variant_of, variant_stats
from promptevo.rewards.objective import paired_gains


class VariantSearch:
    def __init__(self, opt: Any):
        self.opt = opt
        self.repo, self.run_id, self.config = opt.repo, opt.run_id, opt.config
        self._specs: dict[int, dict[str, Any]] | None = None  # candidate variants' specs, by id

    # what the optimiser holds and may change during a run (the objective, the retouched variants)
    objective = property(lambda self: self.opt.objective)
    selector = property(lambda self: self.opt.selector)
    evaluator = property(lambda self: self.opt.evaluator)
    search_variant = property(lambda self: self.opt.search_variant)
    final_variant = property(lambda self: self.opt.final_variant)

    def arm_stats(self, ids: Sequence[int]) -> list[bandit.ArmStats]:
        return self.opt.arm_stats(ids)

    def population(self) -> list[dict[str, Any]]:
        return self.opt.population()

    def selected_instruction(self) -> dict[str, Any]:
        return self.opt.selected_instruction()

    def sync(self) -> None:
        """Each candidate variant's image hashes (search and final form) from this evaluator's
        resolved render configs, so stored trials can be credited to their variant."""
        for row in self.repo.variants(self.run_id):
            search, final = self.variant(row["id"], False), self.variant(row["id"], True)
            if (row["search_hash"], row["final_hash"]) != (search.hash, final.hash):
                self.repo.set_variant_hashes(row["id"], search.hash, final.hash)

    def variant(self, variant_id: int, final: bool) -> Variant:
        if self._specs is None:  # a variant's spec never changes: read once
            self._specs = {v["id"]: v["spec"] for v in self.repo.variants(self.run_id)}
        return variant_of(self.final_variant if final else self.search_variant, self._specs[variant_id])

    def plan_arms(self, plan: SearchPlan | SelectionPlan, final: bool) -> list[tuple]:
        """A plan's arms as `_evaluate_trials` takes them: instructions on the profile's settings,
        or (with variants) each pair as "INSTRUCTION@vVARIANT" drawn with its variant."""
        if plan.pairs is None:
            return [(str(a), a) for a in plan.arms]
        return [(f"{i}@v{v}", i, self.variant(v, final)) for i, v in plan.pairs]

    def record_costs(self) -> None:
        costs = self.evaluator.take_costs()
        if costs and self.config.variants:
            self.repo.add_variant_cost(self.run_id, costs)

    def retire(self, variant: Variant, error: str, r: int) -> None:
        """A candidate variant whose jobs failed (its model did not load, or drawing failed) is
        retired with the reason; the run goes on with the others."""
        if variant.hash in (self.search_variant.hash, self.final_variant.hash):
            return  # the profile's own settings: not a candidate to retire
        for row in self.repo.variants(self.run_id, live=True):
            if variant.hash in (row["search_hash"], row["final_hash"]):
                self.repo.fail_variant(row["id"], error)
                self.repo.event(self.run_id, "variant_failed", {"variant_id": row["id"], "name": row["name"], "error": error},
                                round=r)

    def search_gains(self, include_round: int | None = None):
        return paired_gains(self.repo.trials(self.run_id, phase="search", finished=True, also_round=include_round),
                            self.objective)

    def pick_pairs(self, r: int, rng: np.random.Generator) -> list[list[int]]:
        """A search round's (instruction, variant) pairs. factored: the instruction selector over
        instructions (their gains over every variant) and the variant selector over variants
        (over every instruction), zipped; joint: one selector over every live pair."""
        cfg = self.config
        live = self.repo.variants(self.run_id, live=True)
        if not live:
            failed = "; ".join(f"{v['name']}: {v['error']}" for v in self.repo.variants(self.run_id))
            raise UserError(f"every render variant failed ({failed})")
        pop = [p["id"] for p in self.population()]
        gains, vids = self.search_gains(), variant_ids(self.repo.variants(self.run_id))
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

    def best_variant(self, instruction_id: int) -> int:
        """The live variant an instruction did best with in the search rounds (cost-adjusted),
        else the best variant over every instruction, else the first live one."""
        live = self.repo.variants(self.run_id, live=True) or self.repo.variants(self.run_id)
        vids = variant_ids(self.repo.variants(self.run_id))
        gains = self.search_gains()
        arms = [a for a in self.repo.arms(self.run_id) if a["instruction_id"] == instruction_id
                and any(v["id"] == a["variant_id"] for v in live)]
        best = bandit.best(pair_stats(gains, vids, arms, live, self.config.cost_weight)) if arms else None
        if best is not None:
            return next(a["variant_id"] for a in arms if a["id"] == best)
        best = bandit.best(variant_stats(gains, vids, live, self.config.cost_weight))
        return best if best is not None else live[0]["id"]

    def routing(self, held: Sequence[str]) -> dict[str, list[int]]:
        """The routing table (computed once from the search and selection trials, stored), and
        the held-out prompts' arms by their nearest group."""
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
                    if g.trial.instruction_id is not None and vid is not None and vid in live:
                        gains.append((vid, g.trial.prompt_id, g.gain - cost_of(rows[vid], self.config.cost_weight)))
            chosen = self.selected_instruction()["id"]
            table = route_table(gains, {p["id"]: int(g) for p, g in zip(opt, labels)}, len(centroids),
                                self.selected_variant(chosen))
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

    def selected_variant(self, instruction_id: int) -> int:
        chosen = [e for e in self.repo.events(self.run_id, "selected") if e["data"].get("variant_id")]
        if chosen and chosen[-1]["data"]["instruction_id"] == instruction_id:
            return chosen[-1]["data"]["variant_id"]
        return self.best_variant(instruction_id)
