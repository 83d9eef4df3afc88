"""Pairwise judgements made in `promptevo serve`, stored per run, and the human reward they give
each arm (Bradley-Terry, `promptevo.human`). A part of the run repository."""

from __future__ import annotations

import json
from typing import Any

from promptevo import human
from promptevo.errors import UserError
from promptevo.storage.store import now, safe_text


class JudgementsMixin:
    """The judgement rows of the run repository (`RunRepository` mixes it in)."""

    store: Any

    def atomic(self) -> Any: ...

    def run(self, run_id: str) -> dict[str, Any] | None: ...

    def latest_judgement_id(self, run_id: str) -> int | None:
        return self.store.one("SELECT MAX(id) AS n FROM judgements WHERE run_id = ?", [run_id])["n"]

    def add_judgement(self, run_id: str, left_trial_id: int, right_trial_id: int, choice: str, judge: str) -> int:
        """One pairwise judgement: two trials of the run with the same prompt and seed, different
        arms and different images."""
        if choice not in human.CHOICES:
            raise UserError(f"a judgement is one of {', '.join(human.CHOICES)} (got {choice!r})")
        rows = {r["id"]: r for r in self.store.query(
            "SELECT id, arm, instruction_id, prompt_id, seed, image_id FROM trials WHERE run_id = ? AND id IN (?, ?)",
            [run_id, left_trial_id, right_trial_id])}
        if len(rows) != 2 or left_trial_id == right_trial_id:
            raise UserError(f"run {run_id} has no such pair of trials")
        a, b = rows[left_trial_id], rows[right_trial_id]
        if (a["prompt_id"], a["seed"]) != (b["prompt_id"], b["seed"]) or a["image_id"] == b["image_id"] \
                or human.arm_key(a["arm"], a["instruction_id"]) == human.arm_key(b["arm"], b["instruction_id"]):
            raise UserError("a judgement compares two images of one prompt and seed under different arms")
        with self.atomic() as conn:
            cur = conn.execute(
                "INSERT INTO judgements (run_id, left_trial_id, right_trial_id, choice, judge, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                [run_id, left_trial_id, right_trial_id, choice, safe_text(judge), now()])
            # One judgement per (judge, pair of images): the new one replaces any earlier one (from
            # another tab or a script), so a pair never counts twice in the Bradley-Terry fit.
            conn.execute(
                """DELETE FROM judgements WHERE run_id = ? AND judge = ? AND id != ? AND id IN (
                       SELECT j.id FROM judgements j JOIN trials l ON l.id = j.left_trial_id JOIN trials r ON r.id = j.right_trial_id
                       WHERE j.run_id = ? AND min(l.image_id, r.image_id) = ? AND max(l.image_id, r.image_id) = ?)""",
                [run_id, safe_text(judge), cur.lastrowid, run_id, min(a["image_id"], b["image_id"]), max(a["image_id"], b["image_id"])])
            return int(cur.lastrowid)

    def judgements(self, run_id: str) -> list[dict[str, Any]]:
        """A run's judgements, oldest first, with the arm key and image of each side."""
        return self.store.query(
            """SELECT j.id, j.left_trial_id, j.right_trial_id, j.choice, j.judge, j.created_at,
                      l.arm AS left_arm, l.instruction_id AS left_instruction_id, l.image_id AS left_image_id,
                      r.arm AS right_arm, r.instruction_id AS right_instruction_id, r.image_id AS right_image_id
               FROM judgements j JOIN trials l ON l.id = j.left_trial_id JOIN trials r ON r.id = j.right_trial_id
               WHERE j.run_id = ? ORDER BY j.id""", [run_id])

    def human_values(self, run_id: str) -> dict[str, float] | None:
        """The human reward's arm values, when the run has judgements or its objective weighs the
        human reward (then every arm starts at 0); else None (the trials carry no human score)."""
        rows = self.judgements(run_id)
        if not rows:
            run = self.run(run_id)
            spec = (json.loads(run["config_json"]).get("optimize", {}).get("objective") or {}) if run else {}
            if human.HUMAN not in {**spec.get("weights", {}), **spec.get("guards", {})}:
                return None
        return human.arm_values([human.Judged(human.arm_key(r["left_arm"], r["left_instruction_id"]),
                                              human.arm_key(r["right_arm"], r["right_instruction_id"]), r["choice"])
                                 for r in rows])

