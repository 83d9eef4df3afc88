"""A run as one JSON document, for scripts and archives. Keys are never stored, so none can leak."""

from __future__ import annotations

import json
from typing import Any

from promptevo.errors import UserError
from promptevo.optimize import summarize
from promptevo.store import Store


def export_run(store: Store, run_id: str) -> dict[str, Any]:
    run = store.one("SELECT * FROM runs WHERE id = ?", [run_id])
    if run is None:
        raise UserError(f"no run {run_id!r} in {store.path}")
    q = lambda sql: store.query(sql, [run_id])  # noqa: E731
    return {
        "run": {**run, "config": json.loads(run.pop("config_json"))},
        "summary": summarize(store, run_id),
        "prompts": q("""SELECT p.id, p.text, rp.split FROM run_prompts rp JOIN prompts p ON p.id = rp.prompt_id
                        WHERE rp.run_id = ? ORDER BY rp.split, rp.position"""),
        "rounds": q("SELECT * FROM rounds WHERE run_id = ? ORDER BY round"),
        "gradients": q("SELECT * FROM gradients WHERE run_id = ? ORDER BY id"),
        "rewrites": q("SELECT * FROM rewrites WHERE run_id = ? ORDER BY id"),
        "trials": q("""SELECT t.round, t.arm, t.instruction_id, t.prompt_id, t.seed, i.prompt AS rendered_prompt,
                              i.path AS image, i.render_config_hash, s.scorer, s.scorer_version, s.value AS score
                       FROM trials t JOIN images i ON i.id = t.image_id JOIN scores s ON s.id = t.score_id
                       WHERE t.run_id = ? ORDER BY t.id"""),
        "llm_calls": q("SELECT * FROM llm_calls WHERE run_id = ? ORDER BY id"),
        "events": q("SELECT * FROM events WHERE run_id = ? ORDER BY id"),
    }
