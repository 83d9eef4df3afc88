"""A run as one JSON document, for scripts and archives. Keys are never stored, so none can leak."""

from __future__ import annotations

from typing import Any

from promptevo.optimise.summary import summarize
from promptevo.storage.repository import RunRepository
from promptevo.storage.store import Store


def export_run(store: Store, run_id: str) -> dict[str, Any]:
    repo = RunRepository(store)
    run = dict(repo.require_run(run_id))
    config = repo.run_config(run_id)
    run.pop("config_json")
    trials = []
    for t in repo.trials(run_id):
        primary = next(iter(t.score_rows.values()))
        trials.append({"round": t.round, "arm": t.arm, "instruction_id": t.instruction_id, "prompt_id": t.prompt_id,
                       "seed": t.seed, "rendered_prompt": t.rendered, "image": t.image_path,
                       "render_config_hash": t.variant_hash, "scorer": primary["scorer"],
                       "scorer_version": primary["version"], "score": next(iter(t.scores.values())),
                       "scores": dict(t.scores)})
    return {
        "run": {**run, "config": config},
        "summary": summarize(repo, run_id),
        "prompts": [{"id": p["id"], "text": p["text"], "split": p["split"]} for p in repo.prompts(run_id)],
        "rounds": repo.rounds(run_id),
        "gradients": repo.gradients(run_id),
        "rewrites": repo.rewrites(run_id),
        "trials": trials,
        "llm_calls": repo.llm_calls(run_id),
        "events": repo.events(run_id),
        "judgements": repo.judgements(run_id),  # pairwise judgements from `promptevo serve`
        "variants": repo.variants(run_id),  # candidate render variants, their cost and status (--variant)
        "arms": repo.arms(run_id),  # (instruction, variant) pairs
        "routes": repo.routes(run_id),  # the routing table: per prompt group, its centroid and arm
    }
