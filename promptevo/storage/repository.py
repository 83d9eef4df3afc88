"""The run repository: every read and write of runs, rounds, instructions, rewrites, gradients,
trials and events, as domain methods over the Store (optuna's storage, llm's LogStore).

The optimiser, the CLI, reports, exports and experiments call these methods and never write SQL.
Methods that write several rows use `store.atomic()`, which nests, so a caller can group them
into one larger unit of work (a round's end: new instructions, retirements, the round's status).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from promptevo import human
from promptevo.errors import UserError
from promptevo.storage.judgements import JudgementsMixin
from promptevo.storage.store import Store, now, safe_text


@dataclass(frozen=True)
class TrialRecord:
    """One stored trial with every score it carries (reward name -> value)."""

    id: int
    round: int
    phase: str
    arm: str  # instruction id as text, 'naive', or a baseline name
    instruction_id: int | None
    prompt_id: str
    seed: int
    image_id: int
    rendered: str  # the text given to the renderer
    image_path: str
    variant_hash: str
    scores: dict[str, float] = field(default_factory=dict)
    score_rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # reward -> scorer, version, target


@dataclass(frozen=True)
class NewTrial:
    arm: str
    instruction_id: int | None
    prompt_id: str
    seed: int
    image_id: int
    score_ids: dict[str, int]  # reward name -> scores.id; the first is the trial's primary score


class RunRepository(JudgementsMixin):
    def __init__(self, store: Store):
        self.store = store

    def atomic(self):
        return self.store.atomic()

    # -- runs ---------------------------------------------------------------------------------

    def create_run(self, *, run_id: str, profile: str, config: dict[str, Any], config_hash: str, seed: int,
                   splits: dict[str, Sequence[str]], instructions: Sequence[tuple[str, str]]) -> None:
        """The run, its prompts by split (in order) and its first instructions (text, origin)."""
        pids = {p: self.store.add_prompt(p) for group in splits.values() for p in group}
        with self.atomic() as conn:
            conn.execute(
                """INSERT INTO runs (id, created_at, updated_at, status, profile, config_json, config_hash, seed)
                   VALUES (?, ?, ?, 'running', ?, ?, ?, ?)""",
                [run_id, now(), now(), profile, json.dumps(config, sort_keys=True), config_hash, seed],
            )
            for split, group in splits.items():
                for pos, p in enumerate(group):
                    conn.execute("INSERT INTO run_prompts (run_id, prompt_id, split, position) VALUES (?, ?, ?, ?)",
                                 [run_id, pids[p], split, pos])
            for text, origin in instructions:
                conn.execute("INSERT INTO instructions (run_id, text, origin, created_round) VALUES (?, ?, ?, 0)",
                             [run_id, text, origin])

    def run(self, run_id: str) -> dict[str, Any] | None:
        return self.store.one("SELECT * FROM runs WHERE id = ?", [run_id])

    def require_run(self, run_id: str) -> dict[str, Any]:
        run = self.run(run_id)
        if run is None:
            raise UserError(f"no run {run_id!r} in {self.store.path}")
        return run

    def run_config(self, run_id: str) -> dict[str, Any]:
        """The stored configuration: {"profile": ..., "optimize": ...}."""
        return json.loads(self.require_run(run_id)["config_json"])

    def runs(self) -> list[dict[str, Any]]:
        """Every run, newest first, with its finished rounds and best instruction's text."""
        return self.store.query(
            """SELECT r.id, r.created_at, r.status, r.owner, r.heartbeat_at, r.profile, r.config_hash,
                      (SELECT COUNT(*) FROM rounds WHERE run_id = r.id AND status = 'finished' AND phase = 'search') AS rounds_done,
                      json_extract(r.config_json, '$.optimize.rounds') AS rounds,
                      (SELECT phase FROM rounds WHERE run_id = r.id ORDER BY round DESC LIMIT 1) AS stage,
                      (SELECT text FROM instructions WHERE id = r.best_instruction_id) AS best
               FROM runs r ORDER BY r.created_at DESC""")

    def first_run(self) -> dict[str, Any] | None:
        """The oldest run (an experiment keeps one run per database)."""
        return self.store.one("SELECT * FROM runs ORDER BY created_at LIMIT 1")

    def set_status(self, run_id: str, status: str) -> None:
        with self.atomic() as conn:
            conn.execute("UPDATE runs SET status = ?, updated_at = ? WHERE id = ?", [status, now(), run_id])

    def set_best(self, run_id: str, instruction_id: int) -> None:
        with self.atomic() as conn:
            conn.execute("UPDATE runs SET best_instruction_id = ? WHERE id = ?", [instruction_id, run_id])

    # -- ownership (see lease.py) -----------------------------------------------------------

    def claim(self, run_id: str, owner: str, alive: Callable[[str | None, str | None], bool]) -> bool:
        """Take the run for `owner` unless another owner is `alive`; atomic across processes
        (BEGIN IMMEDIATE holds the write lock from the read to the write)."""
        with self.atomic() as conn:
            row = conn.execute("SELECT owner, heartbeat_at FROM runs WHERE id = ?", [run_id]).fetchone()
            if row is None:
                raise UserError(f"no run {run_id!r} in {self.store.path}")
            if row[0] not in (None, owner) and alive(row[0], row[1]):
                return False
            conn.execute(
                """UPDATE runs SET owner = ?, heartbeat_at = ?, updated_at = ?,
                   status = CASE WHEN status = 'finished' THEN status ELSE 'running' END WHERE id = ?""",
                [owner, now(), now(), run_id])
            if row[0] not in (None, owner):
                self.event(run_id, "owner_taken_over", {"from": row[0], "to": owner})
            return True

    def heartbeat(self, run_id: str, owner: str) -> None:
        with self.atomic() as conn:
            conn.execute("UPDATE runs SET heartbeat_at = ? WHERE id = ? AND owner = ?", [now(), run_id, owner])

    def release(self, run_id: str, owner: str) -> None:
        """Give the run up: finished stays finished, anything else becomes interrupted."""
        with self.atomic() as conn:
            conn.execute(
                """UPDATE runs SET owner = NULL, heartbeat_at = NULL, updated_at = ?,
                   status = CASE WHEN status = 'finished' THEN status ELSE 'interrupted' END
                   WHERE id = ? AND owner = ?""", [now(), run_id, owner])

    # -- prompts ------------------------------------------------------------------------------

    def prompts(self, run_id: str, split: str | None = None) -> list[dict[str, Any]]:
        """The run's prompts (id, text, split) in their stored order; one split or all."""
        return self.store.query(
            """SELECT p.id, p.text, rp.split FROM run_prompts rp JOIN prompts p ON p.id = rp.prompt_id
               WHERE rp.run_id = ? AND (? IS NULL OR rp.split = ?) ORDER BY rp.split, rp.position""",
            [run_id, split, split])

    def prompt_texts(self, ids: Sequence[str]) -> dict[str, str]:
        return self.store.prompt_texts(ids)

    # -- instructions -------------------------------------------------------------------------

    def instructions(self, run_id: str, origin: str | None = None) -> list[dict[str, Any]]:
        return self.store.query(
            "SELECT * FROM instructions WHERE run_id = ? AND (? IS NULL OR origin = ?) ORDER BY id",
            [run_id, origin, origin])

    def instruction(self, instruction_id: int) -> dict[str, Any]:
        return self.store.one("SELECT * FROM instructions WHERE id = ?", [instruction_id])

    def population(self, run_id: str) -> list[dict[str, Any]]:
        """The live instructions (not retired, not baselines), oldest first."""
        return self.store.query(
            "SELECT * FROM instructions WHERE run_id = ? AND retired_round IS NULL AND origin != 'baseline' ORDER BY id",
            [run_id])

    def add_instruction(self, run_id: str, *, text: str, origin: str, created_round: int, parent_id: int | None = None,
                        gradient_id: int | None = None, llm_call_id: int | None = None) -> int:
        with self.atomic() as conn:
            cur = conn.execute(
                """INSERT INTO instructions (run_id, text, origin, parent_id, gradient_id, llm_call_id, created_round)
                   VALUES (?, ?, ?, ?, ?, ?, ?)""",
                [run_id, safe_text(text), origin, parent_id, gradient_id, llm_call_id, created_round])
            return int(cur.lastrowid)

    def retire(self, instruction_ids: Iterable[int], round: int) -> None:
        with self.atomic() as conn:
            for iid in instruction_ids:
                conn.execute("UPDATE instructions SET retired_round = ? WHERE id = ?", [round, iid])

    # -- render variants, arms and routes ------------------------------------------------------

    def add_variants(self, run_id: str, rows: Sequence[dict[str, Any]]) -> None:
        """The run's candidate variants: name, spec (what the user gave), search and final hashes."""
        with self.atomic() as conn:
            for v in rows:
                conn.execute("INSERT INTO variants (run_id, name, spec_json, search_hash, final_hash) VALUES (?, ?, ?, ?, ?)",
                             [run_id, v["name"], json.dumps(v["spec"], sort_keys=True), v["search_hash"], v["final_hash"]])

    def variants(self, run_id: str, live: bool = False) -> list[dict[str, Any]]:
        rows = self.store.query("SELECT * FROM variants WHERE run_id = ? AND (? = 0 OR status = 'live') ORDER BY id",
                                [run_id, int(live)])
        for r in rows:
            r["spec"] = json.loads(r.pop("spec_json"))
            r["seconds_per_image"] = r["render_s"] / r["images"] if r["images"] else None
        return rows

    def set_variant_hashes(self, variant_id: int, search_hash: str, final_hash: str) -> None:
        with self.atomic() as conn:
            conn.execute("UPDATE variants SET search_hash = ?, final_hash = ? WHERE id = ?", [search_hash, final_hash, variant_id])

    def fail_variant(self, variant_id: int, error: str) -> None:
        with self.atomic() as conn:
            conn.execute("UPDATE variants SET status = 'failed', error = ? WHERE id = ?", [safe_text(error)[:2000], variant_id])

    def add_variant_cost(self, run_id: str, costs: dict[str, tuple[int, float]]) -> None:
        """Images drawn and seconds spent per variant hash (search or final form) -> the variant's row."""
        with self.atomic() as conn:
            for h, (n, seconds) in costs.items():
                conn.execute("""UPDATE variants SET images = images + ?, render_s = render_s + ?
                                WHERE run_id = ? AND (search_hash = ? OR final_hash = ?)""", [n, seconds, run_id, h, h])

    def arm(self, run_id: str, instruction_id: int, variant_id: int, round: int) -> int:
        """The id of the (instruction, variant) arm, made on first use."""
        with self.atomic() as conn:
            conn.execute("INSERT OR IGNORE INTO arms (run_id, instruction_id, variant_id, created_round) VALUES (?, ?, ?, ?)",
                         [run_id, instruction_id, variant_id, round])
            return int(conn.execute("SELECT id FROM arms WHERE run_id = ? AND instruction_id = ? AND variant_id = ?",
                                    [run_id, instruction_id, variant_id]).fetchone()[0])

    def arms(self, run_id: str) -> list[dict[str, Any]]:
        return self.store.query("SELECT * FROM arms WHERE run_id = ? ORDER BY id", [run_id])

    def set_routes(self, run_id: str, routes: Sequence[dict[str, Any]]) -> None:
        with self.atomic() as conn:
            conn.execute("DELETE FROM routes WHERE run_id = ?", [run_id])
            for r in routes:
                conn.execute("""INSERT INTO routes (run_id, grp, centroid_json, examples_json, arm_id, gain, n)
                                VALUES (?, ?, ?, ?, ?, ?, ?)""",
                             [run_id, r["group"], json.dumps(r["centroid"]), json.dumps(r["examples"]), r["arm_id"],
                              r["gain"], r["n"]])

    def routes(self, run_id: str) -> list[dict[str, Any]]:
        """The routing table: per prompt group, its centroid, example prompts and the arm it uses."""
        rows = self.store.query(
            """SELECT r.grp, r.centroid_json, r.examples_json, r.arm_id, r.gain, r.n, a.instruction_id, a.variant_id
               FROM routes r JOIN arms a ON a.id = r.arm_id WHERE r.run_id = ? ORDER BY r.grp""", [run_id])
        return [{"group": r["grp"], "centroid": json.loads(r["centroid_json"]), "examples": json.loads(r["examples_json"]),
                 "arm_id": r["arm_id"], "instruction_id": r["instruction_id"], "variant_id": r["variant_id"],
                 "gain": r["gain"], "n": r["n"]} for r in rows]

    # -- rounds -------------------------------------------------------------------------------

    def rounds(self, run_id: str) -> list[dict[str, Any]]:
        return self.store.query("SELECT * FROM rounds WHERE run_id = ? ORDER BY round", [run_id])

    def round(self, run_id: str, number: int) -> dict[str, Any] | None:
        return self.store.one("SELECT * FROM rounds WHERE run_id = ? AND round = ?", [run_id, number])

    def stage_round(self, run_id: str, phase: str) -> dict[str, Any] | None:
        """The round of a one-off stage (the selection pass, the held-out evaluation)."""
        return self.store.one("SELECT * FROM rounds WHERE run_id = ? AND phase = ? ORDER BY round LIMIT 1", [run_id, phase])

    def next_round_number(self, run_id: str) -> int:
        return int(self.store.one("SELECT COALESCE(MAX(round), 0) + 1 AS n FROM rounds WHERE run_id = ?", [run_id])["n"])

    def finished_rounds(self, run_id: str) -> set[int]:
        return {r["round"] for r in self.store.query(
            "SELECT round FROM rounds WHERE run_id = ? AND status = 'finished'", [run_id])}

    def start_round(self, run_id: str, number: int, phase: str, plan: dict[str, Any]) -> None:
        """Store a round's plan before any of its work, with its `round_started` event."""
        with self.atomic() as conn:
            conn.execute(
                "INSERT INTO rounds (run_id, round, status, phase, plan_json, started_at) VALUES (?, ?, 'running', ?, ?, ?)",
                [run_id, number, phase, json.dumps(plan), now()])
            self.event(run_id, "round_started", {"phase": phase, **plan}, round=number)

    def finish_round(self, run_id: str, number: int) -> None:
        with self.atomic() as conn:
            conn.execute("UPDATE rounds SET status = 'finished', finished_at = ? WHERE run_id = ? AND round = ?",
                         [now(), run_id, number])
            conn.execute("UPDATE runs SET updated_at = ? WHERE id = ?", [now(), run_id])

    # -- rewrites -----------------------------------------------------------------------------

    def rewrites(self, run_id: str, round: int | None = None) -> list[dict[str, Any]]:
        return self.store.query(
            "SELECT * FROM rewrites WHERE run_id = ? AND (? IS NULL OR round = ?) ORDER BY id", [run_id, round, round])

    def add_rewrites(self, run_id: str, round: int, rows: Sequence[dict[str, Any]]) -> None:
        """rows: instruction_id, prompt_id, text, raw_text, handling, llm_call_id."""
        with self.atomic() as conn:
            for row in rows:
                conn.execute(
                    """INSERT OR IGNORE INTO rewrites
                       (run_id, round, instruction_id, prompt_id, text, raw_text, handling, llm_call_id)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                    [run_id, round, row["instruction_id"], row["prompt_id"], safe_text(row["text"]),
                     safe_text(row["raw_text"]), row["handling"], row["llm_call_id"]])

    # -- gradients ----------------------------------------------------------------------------

    def gradient(self, run_id: str, round: int) -> dict[str, Any] | None:
        return self.store.one("SELECT * FROM gradients WHERE run_id = ? AND round = ?", [run_id, round])

    def gradients(self, run_id: str) -> list[dict[str, Any]]:
        return self.store.query("SELECT * FROM gradients WHERE run_id = ? ORDER BY id", [run_id])

    def add_gradient(self, run_id: str, round: int, *, instruction_id: int, text: str, improvements: list[str],
                     llm_call_id: int | None) -> int:
        return self.store.insert("gradients", {
            "run_id": run_id, "round": round, "instruction_id": instruction_id, "text": text,
            "improvements_json": json.dumps(improvements), "llm_call_id": llm_call_id})

    # -- trials -------------------------------------------------------------------------------

    def add_trials(self, run_id: str, round: int, trials: Sequence[NewTrial]) -> None:
        """A round's trials with all their scores, in one transaction. Idempotent: a trial that
        is already stored (a resumed round) keeps its row and gains any missing scores."""
        with self.atomic() as conn:
            for t in trials:
                primary = next(iter(t.score_ids.values()))
                conn.execute(
                    """INSERT OR IGNORE INTO trials (run_id, round, arm, instruction_id, prompt_id, seed, image_id, score_id)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                    [run_id, round, t.arm, t.instruction_id, t.prompt_id, t.seed, t.image_id, primary])
                trial_id = conn.execute(
                    "SELECT id FROM trials WHERE run_id = ? AND round = ? AND arm = ? AND prompt_id = ? AND seed = ?",
                    [run_id, round, t.arm, t.prompt_id, t.seed]).fetchone()[0]
                for reward, score_id in t.score_ids.items():
                    conn.execute("INSERT OR IGNORE INTO trial_scores (trial_id, reward, score_id) VALUES (?, ?, ?)",
                                 [trial_id, reward, score_id])

    def trials(self, run_id: str, *, phase: str | None = None, round: int | None = None, finished: bool = False,
               also_round: int | None = None, instruction_id: int | None = None,
               prompt_id: str | None = None) -> list[TrialRecord]:
        """Trials with their scores, in stored order. `finished`: only trials of finished rounds,
        plus `also_round` (the round being decided)."""
        rows = self.store.query(
            """SELECT t.id, t.round, r.phase, t.arm, t.instruction_id, t.prompt_id, t.seed, t.image_id,
                      i.prompt AS rendered, i.path, i.render_config_hash,
                      ts.reward, s.value, s.scorer, s.scorer_version, s.target_prompt
               FROM trials t
               JOIN rounds r ON r.run_id = t.run_id AND r.round = t.round
               JOIN images i ON i.id = t.image_id
               JOIN trial_scores ts ON ts.trial_id = t.id
               JOIN scores s ON s.id = ts.score_id
               WHERE t.run_id = ? AND (? IS NULL OR r.phase = ?) AND (? IS NULL OR t.round = ?)
                 AND (? = 0 OR r.status = 'finished' OR r.round IS ?)
                 AND (? IS NULL OR t.instruction_id = ?) AND (? IS NULL OR t.prompt_id = ?)
               ORDER BY t.id, ts.rowid""",
            [run_id, phase, phase, round, round, int(finished), also_round,
             instruction_id, instruction_id, prompt_id, prompt_id])
        out: dict[int, TrialRecord] = {}
        for row in rows:
            rec = out.get(row["id"])
            if rec is None:
                rec = out[row["id"]] = TrialRecord(
                    id=row["id"], round=row["round"], phase=row["phase"], arm=row["arm"],
                    instruction_id=row["instruction_id"], prompt_id=row["prompt_id"], seed=row["seed"],
                    image_id=row["image_id"], rendered=row["rendered"], image_path=row["path"],
                    variant_hash=row["render_config_hash"])
            rec.scores[row["reward"]] = row["value"]
            rec.score_rows[row["reward"]] = {"scorer": row["scorer"], "version": row["scorer_version"],
                                             "target": row["target_prompt"]}
        values = self.human_values(run_id)
        if values is not None:
            for rec in out.values():
                rec.scores[human.HUMAN] = values.get(human.arm_key(rec.arm, rec.instruction_id), 0.0)
                rec.score_rows[human.HUMAN] = {"scorer": human.HUMAN, "version": human.VERSION, "target": None}
        return list(out.values())

    # -- what pages poll --------------------------------------------------------------------

    def fingerprint(self, run_id: str | None = None) -> tuple:
        """Moves whenever something a page shows does (runs, trials, rounds, events, instructions,
        judgements), for the whole database or one run."""
        row = self.store.one(
            """SELECT (SELECT COUNT(*) FROM runs) AS runs, (SELECT MAX(updated_at) FROM runs) AS updated,
                      (SELECT MAX(id) FROM trials WHERE ? IS NULL OR run_id = ?) AS trials,
                      (SELECT COUNT(*) FROM rounds WHERE status = 'finished' AND (? IS NULL OR run_id = ?)) AS rounds,
                      (SELECT MAX(id) FROM events WHERE ? IS NULL OR run_id = ?) AS events,
                      (SELECT MAX(id) FROM instructions WHERE ? IS NULL OR run_id = ?) AS instructions,
                      (SELECT MAX(id) FROM judgements WHERE ? IS NULL OR run_id = ?) AS judgements""",
            [run_id, run_id] * 5)
        return tuple(row.values())

    def latest_trial_round(self, run_id: str) -> int | None:
        return self.store.one("SELECT MAX(round) AS r FROM trials WHERE run_id = ?", [run_id])["r"]

    def content_hashes(self, image_ids: Sequence[int]) -> dict[int, str]:
        if not image_ids:
            return {}
        marks = ",".join("?" * len(image_ids))
        return {r["id"]: r["content_hash"] for r in self.store.query(
            f"SELECT id, content_hash FROM images WHERE id IN ({marks})", list(image_ids))}

    def image_file(self, content_hash: str) -> str | None:
        """The stored path (relative to the artifacts folder) of an image with this content hash."""
        row = self.store.one("SELECT path FROM images WHERE content_hash = ? LIMIT 1", [content_hash])
        return row["path"] if row else None

    # -- events and LLM calls -----------------------------------------------------------------

    def event(self, run_id: str | None, kind: str, data: dict[str, Any], round: int | None = None) -> None:
        self.store.event(run_id, kind, data, round=round)

    def events(self, run_id: str, kind: str | None = None, round: int | None = None) -> list[dict[str, Any]]:
        """Events with their data decoded, oldest first."""
        rows = self.store.query(
            "SELECT * FROM events WHERE run_id = ? AND (? IS NULL OR kind = ?) AND (? IS NULL OR round = ?) ORDER BY id",
            [run_id, kind, kind, round, round])
        return [{**r, "data": json.loads(r["data_json"])} for r in rows]

    def llm_calls(self, run_id: str | None, role: str | None = None) -> list[dict[str, Any]]:
        return self.store.query(
            "SELECT * FROM llm_calls WHERE run_id IS ? AND (? IS NULL OR role = ?) ORDER BY id", [run_id, role, role])

    # -- what a run holds ---------------------------------------------------------------------

    def budget(self, run_id: str) -> dict[str, Any]:
        """What a run's result cost: images it scored (distinct; a cached image counts once), of
        which the search rounds and the selection pass used `search_images` (what the optimiser
        paid to decide; the rest measure the result), LLM calls and tokens, and the wall seconds
        of its rounds (time between resumes excluded)."""
        import datetime as dt

        calls = self.store.one(
            "SELECT COUNT(*) AS n, COALESCE(SUM(prompt_tokens), 0) AS p, COALESCE(SUM(completion_tokens), 0) AS c "
            "FROM llm_calls WHERE run_id = ?", [run_id])
        images = self.store.one("SELECT COUNT(DISTINCT image_id) AS n FROM trials WHERE run_id = ?", [run_id])
        search = self.store.one(
            "SELECT COUNT(DISTINCT t.image_id) AS n FROM trials t JOIN rounds r ON r.run_id = t.run_id AND r.round = t.round "
            "WHERE t.run_id = ? AND r.phase IN ('search', 'selection')", [run_id])
        wall = 0.0
        for r in self.store.query("SELECT started_at, finished_at FROM rounds WHERE run_id = ? AND finished_at IS NOT NULL",
                                  [run_id]):
            wall += (dt.datetime.fromisoformat(r["finished_at"]) - dt.datetime.fromisoformat(r["started_at"])).total_seconds()
        return {"images": int(images["n"]), "search_images": int(search["n"]), "llm_calls": int(calls["n"]), "prompt_tokens": int(calls["p"]),
                "completion_tokens": int(calls["c"]), "wall_s": round(wall, 3)}

    def counts(self, run_id: str) -> dict[str, int]:
        """Row counts of a run, for checks that nothing was lost or done twice."""
        one = lambda sql: int(self.store.one(sql, [run_id])["n"])  # noqa: E731
        return {
            "trials": one("SELECT COUNT(*) AS n FROM trials WHERE run_id = ?"),
            "trial_scores": one("SELECT COUNT(*) AS n FROM trial_scores ts JOIN trials t ON t.id = ts.trial_id WHERE t.run_id = ?"),
            "scored_images": one("SELECT COUNT(DISTINCT image_id) AS n FROM trials WHERE run_id = ?"),
            "rounds": one("SELECT COUNT(*) AS n FROM rounds WHERE run_id = ? AND status = 'finished'"),
            "instructions": one("SELECT COUNT(*) AS n FROM instructions WHERE run_id = ?"),
            "rewrites": one("SELECT COUNT(*) AS n FROM rewrites WHERE run_id = ?"),
            "gradients": one("SELECT COUNT(*) AS n FROM gradients WHERE run_id = ?"),
            "llm_calls": one("SELECT COUNT(*) AS n FROM llm_calls WHERE run_id = ?"),
            "events": one("SELECT COUNT(*) AS n FROM events WHERE run_id = ?"),
        }
