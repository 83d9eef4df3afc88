"""What the web pages show, read from the run repository: plain data, no HTML (the templates
escape every value). Read-only but for `judge`, which stores one judgement."""

from __future__ import annotations

from typing import Any

import numpy as np

from promptevo import human
from promptevo.optimise.summary import judgement_counts as count_judgements
from promptevo.optimise.summary import summarize
from promptevo.rewards.objective import describe
from promptevo.storage.lease import status_of
from promptevo.storage.repository import RunRepository

LATEST_IMAGES = 24


def fingerprint(repo: RunRepository, run_id: str | None = None) -> str:
    """Changes whenever something a page shows does: a page polls it and reloads when it moves."""
    return "-".join(str(v) for v in repo.fingerprint(run_id))


def runs(repo: RunRepository) -> list[dict[str, Any]]:
    return [{**r, "status": status_of(r)} for r in repo.runs()]


def run_page(repo: RunRepository, run_id: str) -> dict[str, Any]:
    """The run's summary (arms, answer, held-out table, budget), the objective's weights, the
    human reward per arm, and the latest round's images."""
    summary = summarize(repo, run_id)
    values = repo.human_values(run_id)
    judged = judgement_counts(repo, run_id)
    for item in summary["instructions"]:
        key = str(item["id"])
        item["human"] = None if values is None else values.get(key, 0.0)
        item["judgements"] = judged.get(key, 0)
    spec = summary["objective"]
    weights = spec.get("weights") or {spec.get("reward", "?"): 1.0}
    objective = [{"reward": name, "weight": w, "scale": (spec.get("scales") or {}).get(name, 1.0)} for name, w in weights.items()]
    run = repo.require_run(run_id)
    measured = describe(summary.get("heldout_objective") or spec)
    return {"summary": summary, "objective": objective, "heldout_objective": measured, "latest": latest_images(repo, run_id),
            "rounds_done": sum(1 for r in summary["rounds"] if r["phase"] == "search" and r["status"] == "finished"),
            "rounds_planned": repo.run_config(run_id)["optimize"].get("rounds"), "created_at": run["created_at"],
            "judgements": sum(judged.values()) // 2, }


def latest_images(repo: RunRepository, run_id: str) -> dict[str, Any]:
    """The images of the latest round that has any, best first, with what made them."""
    latest = repo.latest_trial_round(run_id)
    if latest is None:
        return {"round": None, "images": []}
    trials = repo.trials(run_id, round=latest)
    texts = repo.prompt_texts(list({t.prompt_id for t in trials}))
    hashes = repo.content_hashes([t.image_id for t in trials])
    images = [{"hash": hashes[t.image_id], "prompt": texts.get(t.prompt_id, "?"), "arm": t.arm, "seed": t.seed,
               "rendered": t.rendered, "scores": t.scores} for t in trials]
    return {"round": latest, "phase": trials[0].phase if trials else None, "images": images[:LATEST_IMAGES]}


def judgement_counts(repo: RunRepository, run_id: str) -> dict[str, int]:
    """How many judgements each arm key took part in."""
    return count_judgements(repo.judgements(run_id))


def judge_page(repo: RunRepository, run_id: str, rng: np.random.Generator) -> dict[str, Any]:
    """The next pair to judge (blind: the page does not say which arm made which image), and
    the human reward so far."""
    run = repo.require_run(run_id)
    trials = repo.trials(run_id)
    judged = {frozenset((j["left_image_id"], j["right_image_id"])) for j in repo.judgements(run_id)}
    counts = judgement_counts(repo, run_id)
    live = {str(i["id"]) for i in repo.population(run_id)} | {human.NAIVE}
    pair = human.next_pair(trials, judged, counts, live, rng)
    values = repo.human_values(run_id)
    arms = sorted(({"arm": k, "judgements": n, "value": None if values is None else values.get(k, 0.0)} for k, n in counts.items()),
                  key=lambda a: (a["arm"] != human.NAIVE, -float(a["value"] or 0.0)))
    out = {"run_id": run_id, "status": status_of(run), "arms": arms, "judgements": sum(counts.values()) // 2, "pair": None}
    if pair:
        hashes = repo.content_hashes([pair[0].image_id, pair[1].image_id])
        out["pair"] = {"prompt": repo.prompt_texts([pair[0].prompt_id]).get(pair[0].prompt_id, "?"), "seed": pair[0].seed,
                       "left": {"trial": pair[0].id, "hash": hashes[pair[0].image_id]},
                       "right": {"trial": pair[1].id, "hash": hashes[pair[1].image_id]}}
    return out
