"""What a run's stored trials say, through its objective: per-round arm rewards, arm statistics,
the held-out table and the run summary that `runs show`, reports, exports and experiments print.
Read-only: nothing here renders, scores or writes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from promptevo.optimise import bandit
from promptevo.rewards.objective import Objective, RewardObjective, measured_part, run_objective
from promptevo.rewards.objective import round_rewards as objective_round_rewards
from promptevo.stats import mean_ci, paired_ci
from promptevo.storage.lease import status_of
from promptevo.storage.repository import RunRepository


def round_rewards(repo: RunRepository, run_id: str, objective: Objective | None = None,
                  include_round: int | None = None, phase: str = "search") -> list[dict[str, Any]]:
    """Per (instruction, round) of a phase: mean gain over the naive prompt on the same
    (prompt, seed) pairs, over finished rounds (plus `include_round`, the one being decided)."""
    objective = objective or run_objective(repo, run_id)
    return objective_round_rewards(repo.trials(run_id, phase=phase, finished=True, also_round=include_round), objective)


def arm_stats(repo: RunRepository, run_id: str, ids: Sequence[int], include_round: int | None = None,
              objective: Objective | None = None) -> list[bandit.ArmStats]:
    """Per arm: its reward in each search round it was pulled, and its gains per prompt."""
    from promptevo.rewards.objective import paired_gains, rewards_by_round

    objective = objective or run_objective(repo, run_id)
    stats = {i: bandit.ArmStats(arm=i) for i in ids}
    gains = paired_gains(repo.trials(run_id, phase="search", finished=True, also_round=include_round), objective)
    for row in rewards_by_round(gains):
        if row["arm"] in stats:
            stats[row["arm"]].rewards.append(row["reward"])
    for g in gains:
        if g.trial.instruction_id in stats:
            stats[g.trial.instruction_id].per_prompt.setdefault(g.trial.prompt_id, []).append(g.gain)
    return [stats[i] for i in ids]


def heldout_table(repo: RunRepository, run_id: str, objective: Objective | None = None) -> list[dict[str, Any]]:
    """Per evaluation arm: mean objective score with 95% CI, and the paired difference to the
    naive prompt on the same (prompt, seed) pairs. Only what was measured on the held-out images
    counts: judgement-based rewards (nobody judged a held-out image) are left out here and
    reported apart (`judged_summary`)."""
    by_arm, instr = _heldout_scores(repo, run_id, objective)
    naive = by_arm.get("naive", {})
    table = []
    for arm in sorted(by_arm, key=lambda a: (a != "best", a != "initial", a)):
        values = by_arm[arm]
        keys = sorted(k for k in values if k in naive)
        diff = paired_ci([values[k] for k in keys], [naive[k] for k in keys]) if arm != "naive" else None
        table.append({
            "arm": arm, "instruction_id": instr[arm], **{f"score_{k}": v for k, v in mean_ci(list(values.values())).to_dict().items()},
            "diff_vs_naive": diff.to_dict() if diff else None,
        })
    return table


def _heldout_scores(repo: RunRepository, run_id: str, objective: Objective | None
                    ) -> tuple[dict[str, dict[tuple[str, int], float]], dict[str, int | None]]:
    """Per held-out arm: the measured objective per (prompt, seed); and each arm's instruction."""
    measured = measured_part(objective or run_objective(repo, run_id))
    by_arm: dict[str, dict[tuple[str, int], float]] = {}
    instr: dict[str, int | None] = {}
    if measured is None:
        return by_arm, instr
    for t in sorted(repo.trials(run_id, phase="evaluation"), key=lambda t: (t.prompt_id, t.seed)):
        by_arm.setdefault(t.arm, {})[(t.prompt_id, t.seed)] = measured.score(t.scores)
        instr[t.arm] = t.instruction_id
    return by_arm, instr


def versus_recipes(repo: RunRepository, run_id: str, objective: Objective | None = None) -> dict[str, Any] | None:
    """The answer against the best of the run's seed recipes on held-out prompts (the one with
    the highest held-out mean: the stricter comparison), paired on (prompt, seed)."""
    by_arm, _ = _heldout_scores(repo, run_id, objective)
    recipes = {a: v for a, v in by_arm.items() if a.startswith("recipe:") and v}
    best = by_arm.get("best")
    if not recipes or not best:
        return None
    name = max(sorted(recipes), key=lambda a: sum(recipes[a].values()) / len(recipes[a]))
    keys = sorted(k for k in best if k in recipes[name])
    return {"recipe": name.removeprefix("recipe:"), **paired_ci([best[k] for k in keys], [recipes[name][k] for k in keys]).to_dict()}


def heldout_by_reward(repo: RunRepository, run_id: str) -> dict[str, list[dict[str, Any]]]:
    """The held-out table once per reward the run stored (each reward's own scale)."""
    trials = repo.trials(run_id, phase="evaluation")
    names = [n for n in dict.fromkeys(name for t in trials for name in t.scores) if measured_part(RewardObjective(n))]
    return {name: heldout_table(repo, run_id, RewardObjective(name)) for name in names}


def judgement_counts(judgements: Sequence[dict[str, Any]]) -> dict[str, int]:
    """How many judgements each arm key took part in."""
    from promptevo import human

    counts: dict[str, int] = {}
    for j in judgements:
        for side in ("left", "right"):
            key = human.arm_key(j[f"{side}_arm"], j[f"{side}_instruction_id"])
            counts[key] = counts.get(key, 0) + 1
    return counts


def judged_summary(repo: RunRepository, run_id: str) -> dict[str, Any] | None:
    """The judgement-based reward apart from the measured evidence: each arm's fitted value,
    how many judgements it took part in, by whom, and on which phase's images (never held-out
    evidence: a value belongs to an arm, not to an image). None when the run has none."""
    from promptevo import human

    values = repo.human_values(run_id)
    if values is None:
        return None
    rows = repo.judgements(run_id)
    trials = {t.id: t.phase for t in repo.trials(run_id)}
    counts = judgement_counts(rows)
    phases: dict[str, int] = {}
    for j in rows:
        phase = trials.get(j["left_trial_id"], "?")
        phases[phase] = phases.get(phase, 0) + 1
    arms = sorted(set(values) | set(counts), key=lambda k: (k != human.NAIVE, -values.get(k, 0.0)))
    return {"reward": human.HUMAN, "judgements": len(rows), "judges": sorted({j["judge"] for j in rows}),
            "images_judged_by_phase": phases,
            "arms": [{"arm": k, "value": values.get(k, 0.0), "judgements": counts.get(k, 0)} for k in arms]}


def parse_rates(repo: RunRepository, run_id: str) -> list[dict[str, Any]]:
    """Per LLM role: how many replies came in the form asked (ok), were repaired by the tolerant
    parser, or were unusable (fallback: the naive prompt, the blind improvement, no instruction);
    `parsed` is the share that was usable. A fallback is counted, never silent."""
    out = []
    for r in repo.store.parse_rates(run_id):
        calls, ok, repaired = r["calls"], r["ok"] or 0, r["repaired"] or 0
        out.append({**r, "ok": ok, "repaired": repaired, "fallback": r["fallback"] or 0,
                    "parsed": (ok + repaired) / calls if calls else None, "as_asked": ok / calls if calls else None})
    return out


def heldout_verdict(heldout: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """What the held-out test says of the answer against the user's plain prompts: "better"
    (the 95% CI of the paired gain is above zero), "worse" (below), or "unclear"; with "worse",
    the answer to use instead (the plain prompt, or a baseline that beat it)."""
    best = next((r for r in heldout if r["arm"] == "best" and r["diff_vs_naive"]), None)
    if best is None:
        return None
    d = best["diff_vs_naive"]
    verdict = "better" if d["ci_low"] > 0 else "worse" if d["ci_high"] < 0 else "unclear"
    out = {"verdict": verdict, "gain": d["mean"], "ci_low": d["ci_low"], "ci_high": d["ci_high"], "use": "best"}
    if verdict == "worse":
        better = [r for r in heldout if r["arm"] not in ("best", "naive", "initial") and r["diff_vs_naive"]
                  and r["diff_vs_naive"]["ci_low"] > 0]
        out["use"] = max(better, key=lambda r: r["diff_vs_naive"]["mean"])["arm"] if better else "naive"
    return out


def reward_gains(repo: RunRepository, run_id: str) -> dict[int, dict[str, float]]:
    """Per instruction: its mean paired gain on each reward over the search rounds (the
    trade-off between rewards, e.g. HPS gained against CLIP lost)."""
    from promptevo.rewards.objective import mean, paired_gains

    trials = repo.trials(run_id, phase="search", finished=True)
    names = list(dict.fromkeys(name for t in trials for name in t.scores))
    out: dict[int, dict[str, float]] = {}
    for name in names:
        groups: dict[int, list[float]] = {}
        for g in paired_gains(trials, RewardObjective(name)):
            if g.trial.instruction_id is not None:
                groups.setdefault(g.trial.instruction_id, []).append(g.gain)
        for iid, values in groups.items():
            out.setdefault(iid, {})[name] = mean(values)
    return out


def variant_summary(repo: RunRepository, run_id: str, objective: Objective | None = None) -> dict[str, Any] | None:
    """With candidate variants: each variant's search gain, measured seconds per image and gain
    per GPU-second; each (instruction, variant) arm's gain; the routing table; and on held-out
    prompts, routing against the best single arm (paired on prompt and seed)."""
    from promptevo.optimise.variants import pair_stats, variant_ids, variant_stats
    from promptevo.rewards.objective import paired_gains

    rows = repo.variants(run_id)
    if not rows:
        return None
    objective = objective or run_objective(repo, run_id)
    gains = paired_gains(repo.trials(run_id, phase="search", finished=True), objective)
    vids = variant_ids(rows)
    names = {v["id"]: v["name"] for v in rows}
    variants = []
    for v, st in zip(rows, variant_stats(gains, vids, rows)):
        ci = mean_ci(st.rewards)
        per_s = v["seconds_per_image"]
        variants.append({
            "id": v["id"], "name": v["name"], "spec": v["spec"], "status": v["status"], "error": v["error"],
            "images": v["images"], "seconds_per_image": per_s, "pulls": st.pulls, "mean_gain": None if not st.pulls else st.mean,
            "ci_low": None if st.pulls < 2 else ci.low, "ci_high": None if st.pulls < 2 else ci.high,
            "gain_per_gpu_s": None if not st.pulls or not per_s else st.mean / per_s})
    arms = repo.arms(run_id)
    arm_rows = [{"id": a["id"], "instruction_id": a["instruction_id"], "variant_id": a["variant_id"],
                 "variant": names[a["variant_id"]], "pulls": st.pulls, "mean_gain": None if not st.pulls else st.mean}
                for a, st in zip(arms, pair_stats(gains, vids, arms, rows))]
    routes = [{k: v for k, v in r.items() if k != "centroid"} | {"variant": names[r["variant_id"]]} for r in repo.routes(run_id)]
    evaluation = repo.trials(run_id, phase="evaluation")
    measured = measured_part(objective)  # held-out: only what was measured on the images
    by_arm: dict[str, dict[tuple[str, int], float]] = {}
    if measured is not None:
        for t in evaluation:
            by_arm.setdefault(t.arm, {})[(t.prompt_id, t.seed)] = measured.score(t.scores)
    routed, best = by_arm.get("routed", {}), by_arm.get("best", {})
    keys = sorted(k for k in routed if k in best)
    chosen = [e for e in repo.events(run_id, "selected") if e["data"].get("variant_id")]
    return {"best_variant": names.get(chosen[-1]["data"]["variant_id"]) if chosen else None,
            "cost_weight": repo.run_config(run_id)["optimize"].get("cost_weight", 0.0),
            "search": repo.run_config(run_id)["optimize"].get("variant_search", "factored"),
            "variants": variants, "arms": arm_rows, "routing": routes,
            "routed_vs_best": paired_ci([routed[k] for k in keys], [best[k] for k in keys]).to_dict() if keys else None}


def spending(repo: RunRepository, run_id: str) -> dict[str, Any]:
    """What the run spent (counts and dollars), its limits, and whether it stopped at them."""
    from promptevo.optimise import budget

    limits = budget.limits_of(repo, run_id)
    spent = budget.spent(repo, run_id, limits.prices)
    stops = repo.events(run_id, "stopped")
    at_budget = stops[-1]["data"]["message"] if stops and stops[-1]["data"].get("reason") == "budget" else None
    return {**spent, "limits": {"max_images": limits.max_images, "max_llm_calls": limits.max_llm_calls, "max_cost": limits.max_cost},
            "stopped_at_budget": at_budget if status_of(repo.require_run(run_id)) != "finished" else None}


def answer_id(repo: RunRepository, run_id: str, stats: dict[int, bandit.ArmStats]) -> int | None:
    """The instruction a run answers with: the one its held-out evaluation compared, else the
    selection pass's choice, else the best search-round mean (retired instructions included)."""
    best = repo.require_run(run_id)["best_instruction_id"]
    if best:
        return best
    chosen = repo.events(run_id, "selected")
    return chosen[-1]["data"]["instruction_id"] if chosen else bandit.best(list(stats.values()))


def summarize(repo: RunRepository, run_id: str, objective: Objective | None = None) -> dict[str, Any]:
    run = repo.require_run(run_id)
    objective = objective or run_objective(repo, run_id)
    instructions = repo.instructions(run_id)
    stats = {s.arm: s for s in arm_stats(repo, run_id, [i["id"] for i in instructions], objective=objective)}
    selection = {row["arm"]: row["reward"] for row in round_rewards(repo, run_id, objective, phase="selection")}
    items = []
    for i in instructions:
        s = stats[i["id"]]
        ci = mean_ci(s.rewards)
        items.append({
            "id": i["id"], "text": i["text"], "origin": i["origin"], "parent_id": i["parent_id"],
            "gradient_id": i["gradient_id"], "created_round": i["created_round"], "retired_round": i["retired_round"],
            "pulls": s.pulls, "mean_reward": None if not s.pulls else s.mean,
            "ci_low": None if s.pulls < 2 else ci.low, "ci_high": None if s.pulls < 2 else ci.high,
            "selection_gain": selection.get(i["id"]),  # on the selection pass's shared prompts
        })
    best_id = answer_id(repo, run_id, stats)
    best = next((i for i in items if i["id"] == best_id), None)
    rounds = [{"round": r["round"], "status": r["status"], "phase": r["phase"]} for r in repo.rounds(run_id)]
    measured = measured_part(objective)
    heldout = heldout_table(repo, run_id, objective)
    return {
        "run_id": run_id,
        "status": status_of(run),
        "profile": run["profile"],
        "config_hash": run["config_hash"],
        "objective": objective.spec(),
        "rounds": rounds,
        "best_instruction": best,
        "instructions": items,
        "heldout": heldout,
        "heldout_objective": None if measured is None else measured.spec(),
        "heldout_verdict": heldout_verdict(heldout),
        "heldout_by_reward": heldout_by_reward(repo, run_id),
        "judged": judged_summary(repo, run_id),
        "parse_rates": parse_rates(repo, run_id),
        "reward_gains": {str(k): v for k, v in reward_gains(repo, run_id).items()},
        "budget": spending(repo, run_id),
        "versus_recipes": versus_recipes(repo, run_id, objective),
        "retouch": next((e["data"] for e in reversed(repo.events(run_id, "retouch_plan"))), None),
        "variants": variant_summary(repo, run_id, objective),
        "vision_critiques": [{"round": e["round"], **e["data"]} for e in repo.events(run_id, "vision_critique")],
        "objective_decisions": [{"round": e["round"], "kind": e["kind"], **e["data"]} for e in repo.events(run_id)
                                if e["kind"] in ("objective_set", "objective_rejected", "feedback")],
    }


def decision_rows(summary: dict[str, Any]) -> list[tuple[Any, str, str, str]]:
    """The objective agent's record as (round, what, weights, reason or feedback) rows, for the
    CLI and the report alike."""
    rows = []
    for d in summary.get("objective_decisions") or []:
        if d["kind"] == "objective_set":
            weights = ", ".join(f"{n} {w:.2f}" for n, w in d["spec"]["weights"].items())
            rows.append((d["round"], "weights set", weights, d.get("reason") or ""))
        elif d["kind"] == "objective_rejected":
            rows.append((d["round"], "answer unusable", "kept", ""))
        else:
            rows.append((d["round"] or "-", "feedback", "", d["text"]))
    return rows
