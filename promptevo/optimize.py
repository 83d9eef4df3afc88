"""The optimisation loop: a UCB bandit over instructions, paired rounds, textual gradients and
a held-out evaluation.

Each round's plan (prompts, seeds, arms) is stored before any work, every rewrite, image and
score is stored as it is made, and arm statistics are recomputed from finished rounds only, so
a run killed at any moment resumes without losing or repeating finished work.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import secrets
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from promptevo import bandit
from promptevo.calls import ask
from promptevo.config import Profile
from promptevo.errors import UserError
from promptevo.generator import rewrite
from promptevo.hashing import config_hash
from promptevo.imaging import Job, render_and_score
from promptevo.llm import LLM
from promptevo.parsing import parse_gradient, parse_instruction
from promptevo.references import ReferencePrompts, check_reference_db
from promptevo.render import Renderer
from promptevo.score import Scorer
from promptevo.stats import mean_ci, paired_ci
from promptevo.store import Store, now, safe_text
from promptevo.templates import NO_GRADIENT_IMPROVEMENT, REFINE_INSTRUCTION, SEED_INSTRUCTIONS, STYLE_SUFFIX

BASELINES = ("refine", "suffix", "reference")
EVAL_SEED_OFFSET = 1_000_003
SELECT_SEED_OFFSET = 2_000_003  # held-out seeds never coincide with search seeds


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
    heldout_fraction: float = 0.34
    eval_seeds: int = 2
    seed: int = 0
    initial_instructions: tuple[str, ...] = SEED_INSTRUCTIONS
    reference_db: str | None = None  # prompt database whose nearest prompts guide the gradient
    reference_k: int = 3
    baselines: tuple[str, ...] = ()  # extra held-out arms: refine, suffix, reference
    select_prompts: int = 8  # selection pass: live instructions compared on this many prompts (0: off)

    def validate(self) -> None:
        checks = [
            (self.rounds >= 0, "rounds must be >= 0"),
            (self.batch_size >= 1, "batch size must be >= 1"),
            (self.seeds_per_prompt >= 1, "seeds per prompt must be >= 1"),
            (self.population >= 1, "population must be >= 1"),
            (self.arms_per_round >= 1, "arms per round must be >= 1"),
            (0 <= self.heldout_fraction < 1, "held-out fraction must be in [0, 1)"),
            (self.eval_seeds >= 1, "eval seeds must be >= 1"),
            (self.reference_k >= 1, "reference k must be >= 1"),
            (self.select_prompts >= 0, "select prompts must be >= 0"),
            (set(self.baselines) <= set(BASELINES), f"baselines are {', '.join(BASELINES)}"),
            ("reference" not in self.baselines or bool(self.reference_db), "the reference baseline needs a reference database"),
            (len(self.initial_instructions) >= 1, "at least one initial instruction"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        bandit.make_selector(self.selector)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["initial_instructions"] = list(self.initial_instructions)
        d["baselines"] = list(self.baselines)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OptimizeConfig:
        d = dict(d)
        d["initial_instructions"] = tuple(d.get("initial_instructions") or SEED_INSTRUCTIONS)
        d["baselines"] = tuple(d.get("baselines") or ())
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


def create_run(store: Store, profile: Profile, config: OptimizeConfig, prompts: Sequence[str]) -> str:
    config.validate()
    if not prompts:
        raise UserError("no prompts to optimise on")
    if config.reference_db:
        config = dataclasses.replace(config, reference_db=check_reference_db(config.reference_db))
    opt, held = split_prompts(list(prompts), config.heldout_fraction, config.seed)
    full = {"profile": profile.to_dict(), "optimize": config.to_dict()}
    run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)
    pids = {p: store.add_prompt(p) for p in prompts}
    with store.transaction() as conn:
        conn.execute(
            """INSERT INTO runs (id, created_at, updated_at, status, profile, config_json, config_hash, seed)
               VALUES (?, ?, ?, 'running', ?, ?, ?, ?)""",
            [run_id, now(), now(), profile.name, json.dumps(full, sort_keys=True), config_hash(full), config.seed],
        )
        for split, group in (("optimize", opt), ("heldout", held)):
            for pos, p in enumerate(group):
                conn.execute(
                    "INSERT INTO run_prompts (run_id, prompt_id, split, position) VALUES (?, ?, ?, ?)",
                    [run_id, pids[p], split, pos],
                )
        for text in config.initial_instructions[: max(config.population, 1)]:
            conn.execute(
                "INSERT INTO instructions (run_id, text, origin, created_round) VALUES (?, ?, 'seed', 0)",
                [run_id, text],
            )
        if "refine" in config.baselines:  # never in the population: evaluated on held-out prompts only
            conn.execute(
                "INSERT INTO instructions (run_id, text, origin, created_round) VALUES (?, ?, 'baseline', 0)",
                [run_id, REFINE_INSTRUCTION],
            )
    return run_id


def round_rewards(store: Store, run_id: str, include_round: int | None = None, phase: str = "search") -> list[dict[str, Any]]:
    """Per (instruction, round): mean score improvement over the naive prompt on the same
    (prompt, seed) pairs, over finished search rounds (plus `include_round`)."""
    return store.query(
        """SELECT t.instruction_id AS arm, t.round AS round, AVG(s.value - ns.value) AS reward, COUNT(*) AS n
           FROM trials t
           JOIN scores s ON s.id = t.score_id
           JOIN trials nt ON nt.run_id = t.run_id AND nt.round = t.round AND nt.arm = 'naive'
                         AND nt.prompt_id = t.prompt_id AND nt.seed = t.seed
           JOIN scores ns ON ns.id = nt.score_id
           JOIN rounds r ON r.run_id = t.run_id AND r.round = t.round
           WHERE t.run_id = ? AND t.arm != 'naive' AND r.phase = ?
             AND (r.status = 'finished' OR r.round = ?)
           GROUP BY t.instruction_id, t.round ORDER BY t.round""",
        [run_id, phase, include_round if include_round is not None else -1],
    )


def arm_stats(store: Store, run_id: str, ids: Sequence[int], include_round: int | None = None) -> list[bandit.ArmStats]:
    stats = {i: bandit.ArmStats(arm=i) for i in ids}
    for row in round_rewards(store, run_id, include_round):
        if row["arm"] in stats:
            stats[row["arm"]].rewards.append(row["reward"])
    return [stats[i] for i in ids]


@dataclass
class Progress:
    """What the CLI shows: the current stage and the arms' statistics."""

    round: int = 0
    rounds: int = 0
    stage: str = ""
    arms: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None


class Optimizer:
    def __init__(
        self,
        store: Store,
        run_id: str,
        *,
        llm: LLM,
        renderer: Renderer,
        scorer: Scorer,
        on_progress: Callable[[Progress], None] | None = None,
        references: ReferencePrompts | None = None,
        overlap: bool = True,
    ):
        run = store.one("SELECT * FROM runs WHERE id = ?", [run_id])
        if run is None:
            raise UserError(f"no run {run_id!r} in {store.path}")
        self.store, self.run_id, self.run = store, run_id, run
        self.config = OptimizeConfig.from_dict(json.loads(run["config_json"])["optimize"])
        self.llm, self.renderer, self.scorer = llm, renderer, scorer
        # Search rounds may decode with a tiny VAE; the selection pass and the held-out
        # evaluation always use the full decoder, so the numbers a run reports are honest.
        self.final_renderer = renderer.full_decoder() if hasattr(renderer, "full_decoder") else renderer
        self.selector = bandit.make_selector(self.config.selector, ucb_c=self.config.ucb_c, epsilon=self.config.epsilon)
        self.on_progress = on_progress or (lambda p: None)
        self.progress = Progress(rounds=self.config.rounds)
        self._references = references
        self.overlap = overlap

    @property
    def references(self) -> ReferencePrompts | None:
        """Opened on first use (the embedder loads only when a gradient needs it)."""
        if self._references is None and self.config.reference_db:
            self._references = ReferencePrompts(self.config.reference_db, self.config.reference_k)
            self._owns_references = True
        return self._references

    # -- state read from the store ------------------------------------------------------------

    def prompts(self, split: str) -> list[dict[str, Any]]:
        return self.store.query(
            """SELECT p.id, p.text FROM run_prompts rp JOIN prompts p ON p.id = rp.prompt_id
               WHERE rp.run_id = ? AND rp.split = ? ORDER BY rp.position""",
            [self.run_id, split],
        )

    def population(self) -> list[dict[str, Any]]:
        return self.store.query(
            "SELECT * FROM instructions WHERE run_id = ? AND retired_round IS NULL AND origin != 'baseline' ORDER BY id",
            [self.run_id],
        )

    def arm_stats(self, ids: Sequence[int], include_round: int | None = None) -> list[bandit.ArmStats]:
        return arm_stats(self.store, self.run_id, ids, include_round)

    def _emit(self, stage: str, round: int) -> None:
        pop = self.population()
        stats = {s.arm: s for s in self.arm_stats([p["id"] for p in pop])}
        self.progress.round, self.progress.stage = round, stage
        self.progress.arms = []
        for p in pop:
            s = stats[p["id"]]
            ci = mean_ci(s.rewards)
            self.progress.arms.append(
                {"id": p["id"], "text": p["text"], "pulls": s.pulls, "mean": s.mean, "ci_low": ci.low, "ci_high": ci.high}
            )
        best_id = bandit.best(list(stats.values()))
        self.progress.best = next((a for a in self.progress.arms if a["id"] == best_id), None)
        self.on_progress(self.progress)

    # -- the loop -----------------------------------------------------------------------------

    def run_all(self) -> dict[str, Any]:
        finished = {r["round"] for r in self.store.query(
            "SELECT round FROM rounds WHERE run_id = ? AND status = 'finished'", [self.run_id])}
        try:
            for r in range(1, self.config.rounds + 1):
                if r not in finished:
                    self.search_round(r)
            if self.config.rounds + 1 not in finished:
                self.select()
            if self.config.rounds + 2 not in finished:
                self.evaluate()
        finally:
            if getattr(self, "_owns_references", False):  # opened here, so closed here
                self._references.close()
                self._references, self._owns_references = None, False
        self.store.conn.execute(
            "UPDATE runs SET status = 'finished', updated_at = ? WHERE id = ?", [now(), self.run_id]
        )
        return summarize(self.store, self.run_id)

    def _plan(self, round: int, phase: str, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        row = self.store.one("SELECT plan_json FROM rounds WHERE run_id = ? AND round = ?", [self.run_id, round])
        if row:
            return json.loads(row["plan_json"])
        plan = make()
        self.store.insert(
            "rounds",
            {"run_id": self.run_id, "round": round, "status": "running", "phase": phase,
             "plan_json": json.dumps(plan), "started_at": now()},
        )
        self.store.event(self.run_id, "round_started", {"phase": phase, **plan}, round=round)
        return plan

    def _rng(self, *keys: int) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, *keys])

    def _draw_prompts(self, r: int, rng: np.random.Generator) -> tuple[list[str], list[list[int]]]:
        """Round r's prompts and seeds: the first draws from the round's generator, so they are
        known before the round is planned (which lets the GPU render them early)."""
        cfg = self.config
        pool = self.prompts("optimize")
        picked = rng.choice(len(pool), size=min(cfg.batch_size, len(pool)), replace=False)
        prompts = [pool[int(i)]["id"] for i in picked]
        seeds = [[int(s) for s in rng.integers(0, 2**31 - 1, cfg.seeds_per_prompt)] for _ in prompts]
        return prompts, seeds

    def _naive_jobs(self, prompt_ids: Sequence[str], seeds: Sequence[Sequence[int]]) -> list[Job]:
        texts = {p["id"]: p["text"] for p in self.store.query(
            f"SELECT * FROM prompts WHERE id IN ({','.join('?' * len(prompt_ids))})", list(prompt_ids))}
        return [Job(texts[pid], seed, texts[pid]) for pid, ss in zip(prompt_ids, seeds) for seed in ss]

    @contextlib.contextmanager
    def _gpu_meanwhile(self, jobs: Sequence[Job], renderer: Renderer | None = None) -> Iterator[None]:
        """Render and score `jobs` on a worker thread while the caller waits on the LLM. Results
        land in the image/score cache, where the round's own render_and_score finds them."""
        if not jobs or not self.overlap:
            yield
            return
        with ThreadPoolExecutor(1, thread_name_prefix="promptevo-gpu") as pool:
            future = pool.submit(render_and_score, self.store, renderer or self.renderer, self.scorer, list(jobs))
            try:
                yield
            finally:
                future.result()

    def search_round(self, r: int) -> None:
        cfg = self.config

        def make_plan() -> dict[str, Any]:
            rng = self._rng(r)
            prompts, seeds = self._draw_prompts(r, rng)
            pop = self.population()
            arms = self.selector.select(self.arm_stats([p["id"] for p in pop]), cfg.arms_per_round, rng)
            return {"prompts": prompts, "seeds": seeds, "arms": [int(a) for a in arms]}

        self._emit("planning", r)
        plan = self._plan(r, "search", make_plan)
        arms = {a: self._instruction(a)["text"] for a in plan["arms"]}
        self._emit("rewriting", r)
        with self._gpu_meanwhile(self._naive_jobs(plan["prompts"], plan["seeds"])):  # naive images need no LLM
            rewrites = self._rewrites(r, [(str(a), a, text) for a, text in arms.items()], plan["prompts"])
        self._emit("rendering and scoring", r)
        self._render_trials(r, plan, [(str(a), a) for a in arms], rewrites)

        self._emit("gradient", r)
        rewards = {row["arm"]: row["reward"] for row in round_rewards(self.store, self.run_id, r) if row["round"] == r}
        new_instructions: list[dict[str, Any]] = []
        if rewards and cfg.new_per_gradient > 0:
            weak = min(rewards, key=lambda a: (rewards[a], a))
            upcoming = self._naive_jobs(*self._draw_prompts(r + 1, self._rng(r + 1))) if r < cfg.rounds else []
            with self._gpu_meanwhile(upcoming):  # next round's naive images while the LLM critiques
                new_instructions = self._evolve(r, weak, plan)
        self._finish_search_round(r, new_instructions)
        self._emit("round finished", r)

    def _instruction(self, iid: int) -> dict[str, Any]:
        return self.store.one("SELECT * FROM instructions WHERE id = ?", [iid])

    def _rewrites(self, r: int, arms: Sequence[tuple[str, int, str]], prompt_ids: Sequence[str]) -> dict[tuple[int, str], str]:
        """Stored rewrites for this round, generating (in one batch) only the missing ones."""
        have = {
            (row["instruction_id"], row["prompt_id"]): row["text"]
            for row in self.store.query("SELECT * FROM rewrites WHERE run_id = ? AND round = ?", [self.run_id, r])
        }
        texts = {p["id"]: p["text"] for p in self.store.query(
            f"SELECT * FROM prompts WHERE id IN ({','.join('?' * len(prompt_ids))})", list(prompt_ids))}
        todo = [(iid, text, pid) for _, iid, text in arms for pid in prompt_ids if (iid, pid) not in have]
        if todo:
            window = getattr(getattr(self.renderer, "config", None), "text_window", 77)
            results = rewrite(
                self.llm, [t for _, t, _ in todo], [texts[pid] for _, _, pid in todo],
                store=self.store, run_id=self.run_id, seed=self.config.seed * 1000 + r,
                token_count=getattr(self.renderer, "token_count", None), window=window,
            )
            with self.store.transaction() as conn:
                for (iid, _, pid), res in zip(todo, results):
                    conn.execute(
                        """INSERT OR IGNORE INTO rewrites
                           (run_id, round, instruction_id, prompt_id, text, raw_text, handling, llm_call_id)
                           VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                        [self.run_id, r, iid, pid, safe_text(res.text), safe_text(res.raw[:20000]), res.handling, res.llm_call_id],
                    )
                    have[(iid, pid)] = res.text
        return have

    def _render_trials(
        self, r: int, plan: dict[str, Any], arms: Sequence[tuple[str, int | None]],
        rewrites: dict[tuple[int, str], str], fixed: dict[str, dict[str, str]] | None = None,
        renderer: Renderer | None = None,
    ) -> None:
        """Render the naive prompts and every arm's rewrites on the plan's seeds (paired), score
        all against the naive prompt, and store the trials."""
        texts = {p["id"]: p["text"] for p in self.store.query(
            f"SELECT * FROM prompts WHERE id IN ({','.join('?' * len(plan['prompts']))})", plan["prompts"])}
        entries: list[tuple[str, int | None, str, int, Job]] = []
        for pid, seeds in zip(plan["prompts"], plan["seeds"]):
            naive = texts[pid]
            for seed in seeds:
                entries.append(("naive", None, pid, seed, Job(naive, seed, naive)))
                for name, iid in arms:
                    text = fixed[name][pid] if fixed and name in fixed else rewrites[(iid, pid)]
                    entries.append((name, iid, pid, seed, Job(text, seed, naive)))
        results = render_and_score(self.store, renderer or self.renderer, self.scorer, [e[4] for e in entries])
        with self.store.transaction() as conn:
            for (name, iid, pid, seed, _), res in zip(entries, results):
                conn.execute(
                    """INSERT OR IGNORE INTO trials (run_id, round, arm, instruction_id, prompt_id, seed, image_id, score_id)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                    [self.run_id, r, name, iid, pid, seed, res.image_id, res.score_id],
                )

    # -- gradient and modification ------------------------------------------------------------

    def _gradient_examples(self, r: int, weak: int, limit: int = 3) -> list[str]:
        """For the weakest arm's lowest-scoring prompts: its rewrite, the best prompt the run has
        seen for the same subject, and (with a reference database) the nearest reference prompts."""
        rows = self.store.query(
            """SELECT t.prompt_id, p.text AS naive, rw.text AS low, AVG(s.value) AS low_score
               FROM trials t JOIN scores s ON s.id = t.score_id JOIN prompts p ON p.id = t.prompt_id
               JOIN rewrites rw ON rw.run_id = t.run_id AND rw.round = t.round
                               AND rw.instruction_id = t.instruction_id AND rw.prompt_id = t.prompt_id
               WHERE t.run_id = ? AND t.round = ? AND t.instruction_id = ? AND t.arm != 'naive'
               GROUP BY t.prompt_id ORDER BY low_score""",
            [self.run_id, r, weak],
        )
        examples, used = [], []
        for row in rows:
            better = self.store.one(
                """SELECT i.prompt AS text, AVG(s.value) AS score
                   FROM trials t JOIN scores s ON s.id = t.score_id JOIN images i ON i.id = t.image_id
                   WHERE t.run_id = ? AND t.prompt_id = ? AND i.prompt != ?
                   GROUP BY i.prompt ORDER BY score DESC LIMIT 1""",
                [self.run_id, row["prompt_id"], row["low"]],
            )
            if better is not None and better["score"] <= row["low_score"]:
                better = None
            refs = self.references.nearest(row["naive"]) if self.references else []
            if better is None and not refs:
                continue
            lines = [f"Short prompt: {row['naive']}", f"Low-scoring prompt (score {row['low_score']:.2f}): {row['low']}"]
            if better is not None:
                lines.append(f"Better prompt (score {better['score']:.2f}): {better['text']}")
            lines += [f"Professional prompt for a similar subject: {ref['text']}" for ref in refs]
            used += [{"prompt_id": row["prompt_id"], "reference_id": ref["id"], "similarity": ref["similarity"]} for ref in refs]
            examples.append("\n".join(lines))
            if len(examples) >= limit:
                break
        if used:
            self.store.event(self.run_id, "reference_prompts", {"instruction_id": weak, "references": used}, round=r)
        return examples

    def _evolve(self, r: int, weak: int, plan: dict[str, Any]) -> list[dict[str, Any]]:
        """Gradient (critique of the weakest arm) then one new instruction per improvement.
        Returns the new instructions, not yet stored."""
        cfg = self.config
        weak_text = self._instruction(weak)["text"]
        gradient = self.store.one("SELECT * FROM gradients WHERE run_id = ? AND round = ?", [self.run_id, r])
        if gradient is None:
            if cfg.gradient:
                examples = self._gradient_examples(r, weak)
                if not examples:
                    self.store.event(self.run_id, "gradient_skipped", {"reason": "no better prompts to contrast", "instruction_id": weak}, round=r)
                    return []
                [call] = ask(
                    self.llm, "gradient",
                    [{"instruction": weak_text, "examples": "\n\n".join(examples), "n": cfg.new_per_gradient}],
                    role="gradient", store=self.store, run_id=self.run_id, seed=cfg.seed * 1000 + r,
                )
                items = parse_gradient(call.completion.text if call.completion.ok else "", limit=cfg.new_per_gradient)
                text, call_id = call.completion.text, call.call_id
            else:
                items, text, call_id = [], "(no gradient: ablation)", None
            improvements = [i.improvement for i in items] or [NO_GRADIENT_IMPROVEMENT] * cfg.new_per_gradient
            gid = self.store.insert(
                "gradients",
                {"run_id": self.run_id, "round": r, "instruction_id": weak, "text": text[:20000],
                 "improvements_json": json.dumps(improvements), "llm_call_id": call_id},
            )
            gradient = {"id": gid, "improvements_json": json.dumps(improvements)}
        improvements = json.loads(gradient["improvements_json"])
        calls = ask(
            self.llm, "modifier", [{"instruction": weak_text, "improvement": imp} for imp in improvements],
            role="modifier", store=self.store, run_id=self.run_id, seed=cfg.seed * 1000 + r,
        )
        existing = {p["text"] for p in self.store.query("SELECT text FROM instructions WHERE run_id = ?", [self.run_id])}
        new = []
        for call in calls:
            text = parse_instruction(call.completion.text) if call.completion.ok else None
            if text is None or text in existing:
                self.store.event(self.run_id, "instruction_rejected",
                                 {"llm_call_id": call.call_id, "reason": "unusable" if text is None else "duplicate"}, round=r)
                continue
            existing.add(text)
            new.append({"text": text, "parent_id": weak, "gradient_id": gradient["id"], "llm_call_id": call.call_id})
        return new

    def _finish_search_round(self, r: int, new: list[dict[str, Any]]) -> None:
        """Add the new instructions, retire the weakest down to the population size and mark the
        round finished, all in one transaction."""
        pop = self.population()
        stats = self.arm_stats([p["id"] for p in pop], include_round=r)
        retire: list[int] = []
        excess = len(pop) + len(new) - self.config.population
        candidates = [s for s in stats if s.pulls]
        while excess > 0 and candidates:
            w = bandit.weakest(candidates)
            retire.append(w)
            candidates = [s for s in candidates if s.arm != w]
            excess -= 1
        with self.store.transaction() as conn:
            for n in new:
                conn.execute(
                    """INSERT INTO instructions (run_id, text, origin, parent_id, gradient_id, llm_call_id, created_round)
                       VALUES (?, ?, 'modifier', ?, ?, ?, ?)""",
                    [self.run_id, n["text"], n["parent_id"], n["gradient_id"], n["llm_call_id"], r],
                )
            for iid in retire:
                conn.execute("UPDATE instructions SET retired_round = ? WHERE id = ?", [r, iid])
            conn.execute(
                "UPDATE rounds SET status = 'finished', finished_at = ? WHERE run_id = ? AND round = ?",
                [now(), self.run_id, r],
            )
            conn.execute("UPDATE runs SET updated_at = ? WHERE id = ?", [now(), self.run_id])

    # -- held-out evaluation ------------------------------------------------------------------

    def best_instruction(self) -> dict[str, Any]:
        """The best mean reward in the final population (retired arms lost their place)."""
        rows = self.population()
        stats = self.arm_stats([row["id"] for row in rows])
        best = bandit.best(stats)
        return next(row for row in rows if row["id"] == (best if best is not None else rows[0]["id"]))

    def select(self) -> None:
        """The selection pass: every live instruction rewrites the same optimisation prompts on
        fresh seeds, paired with the naive prompt, and the best mean gain becomes the run's best.
        Search-round means compare arms on different prompts and one to three rounds each, which
        under noise too often crowns a lucky newcomer; this compares them on equal terms."""
        r = self.config.rounds + 1
        # candidates: the live population plus the best retired instructions by search mean
        # (retirement judged them on one or two noisy rounds)
        live = [p["id"] for p in self.population()]
        tried = self.store.query(
            "SELECT id FROM instructions WHERE run_id = ? AND origin != 'baseline' ORDER BY id", [self.run_id])
        stats = [s for s in self.arm_stats([t["id"] for t in tried]) if s.pulls and s.arm not in live]
        extra = [s.arm for s in sorted(stats, key=lambda s: (-s.mean, s.arm))][: self.config.population]
        pop = [{"id": i} for i in live + extra]

        def make_plan() -> dict[str, Any]:
            rng = self._rng(r, 77)
            pool = self.prompts("optimize")
            n = min(self.config.select_prompts, len(pool))
            picked = sorted(int(i) for i in rng.choice(len(pool), size=n, replace=False)) if n else []
            return {"prompts": [pool[i]["id"] for i in picked],
                    "seeds": [[SELECT_SEED_OFFSET + int(rng.integers(0, 2**30))] for _ in picked],
                    "arms": [p["id"] for p in pop]}

        self._emit("selection", r)
        plan = self._plan(r, "selection", make_plan)
        best = None
        if plan["prompts"] and len(plan["arms"]) > 1:
            arms = [(str(a), a) for a in plan["arms"]]
            with self._gpu_meanwhile(self._naive_jobs(plan["prompts"], plan["seeds"]), self.final_renderer):
                rewrites = self._rewrites(r, [(n, i, self._instruction(i)["text"]) for n, i in arms], plan["prompts"])
            self._render_trials(r, plan, arms, rewrites, renderer=self.final_renderer)
            gains = {row["arm"]: row["reward"] for row in round_rewards(self.store, self.run_id, r, phase="selection")}
            best = max(plan["arms"], key=lambda a: (gains.get(a, float("-inf")), -a))
        with self.store.transaction() as conn:  # the choice and the round's end land together
            if best is not None:
                conn.execute("INSERT INTO events (run_id, round, created_at, kind, data_json) VALUES (?, ?, ?, 'selected', ?)",
                             [self.run_id, r, now(), json.dumps({"instruction_id": best})])
            conn.execute("UPDATE rounds SET status = 'finished', finished_at = ? WHERE run_id = ? AND round = ?",
                         [now(), self.run_id, r])

    def selected_instruction(self) -> dict[str, Any]:
        """The selection pass's winner, else (pass off) the best search-round mean."""
        row = self.store.one(
            """SELECT data_json FROM events WHERE run_id = ? AND kind = 'selected' AND round = ?
               ORDER BY id DESC LIMIT 1""", [self.run_id, self.config.rounds + 1])
        if row:
            return self._instruction(json.loads(row["data_json"])["instruction_id"])
        return self.best_instruction()

    def evaluate(self) -> None:
        r = self.config.rounds + 2
        held = self.prompts("heldout") or self.prompts("optimize")
        initial = self.store.one(
            "SELECT * FROM instructions WHERE run_id = ? AND origin = 'seed' ORDER BY id LIMIT 1", [self.run_id])

        def make_plan() -> dict[str, Any]:
            rng = self._rng(r, 99)
            seeds = [[EVAL_SEED_OFFSET + int(s) for s in rng.integers(0, 2**30, self.config.eval_seeds)] for _ in held]
            return {"prompts": [p["id"] for p in held], "seeds": seeds,
                    "best": self.selected_instruction()["id"], "initial": initial["id"]}

        self._emit("held-out evaluation", r)
        plan = self._plan(r, "evaluation", make_plan)
        arms = [("best", plan["best"]), ("initial", plan["initial"])]
        refine = self.store.one("SELECT id FROM instructions WHERE run_id = ? AND origin = 'baseline'", [self.run_id])
        if "refine" in self.config.baselines and refine:
            arms.append(("refine", refine["id"]))
        with self._gpu_meanwhile(self._naive_jobs(plan["prompts"], plan["seeds"]), self.final_renderer):
            rewrites = self._rewrites(r, [(n, i, self._instruction(i)["text"]) for n, i in arms], plan["prompts"])
        fixed = self._fixed_baselines(plan["prompts"])
        self._render_trials(r, plan, arms + [(name, None) for name in fixed], rewrites, fixed, renderer=self.final_renderer)
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE rounds SET status = 'finished', finished_at = ? WHERE run_id = ? AND round = ?",
                [now(), self.run_id, r],
            )
            conn.execute("UPDATE runs SET best_instruction_id = ? WHERE id = ?", [plan["best"], self.run_id])


    def _fixed_baselines(self, prompt_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """Baselines that need no LLM: the naive prompt plus a fixed style suffix, and the nearest
        reference-database prompt used as is (the paper's Lexica baseline)."""
        texts = {p["id"]: p["text"] for p in self.store.query(
            f"SELECT * FROM prompts WHERE id IN ({','.join('?' * len(prompt_ids))})", list(prompt_ids))}
        fixed: dict[str, dict[str, str]] = {}
        if "suffix" in self.config.baselines:
            fixed["suffix"] = {pid: texts[pid] + STYLE_SUFFIX for pid in prompt_ids}
        if "reference" in self.config.baselines and self.references:
            fixed["reference"] = {}
            for pid in prompt_ids:
                near = self.references.nearest(texts[pid])
                fixed["reference"][pid] = near[0]["text"] if near else texts[pid]
        return fixed


def heldout_table(store: Store, run_id: str) -> list[dict[str, Any]]:
    """Per evaluation arm: mean score with 95% CI, and the paired difference to the naive prompt."""
    rows = store.query(
        """SELECT t.arm, t.instruction_id, t.prompt_id, t.seed, s.value
           FROM trials t JOIN scores s ON s.id = t.score_id JOIN rounds r ON r.run_id = t.run_id AND r.round = t.round
           WHERE t.run_id = ? AND r.phase = 'evaluation' ORDER BY t.prompt_id, t.seed""",
        [run_id],
    )
    by_arm: dict[str, dict[tuple[str, int], float]] = {}
    instr: dict[str, int | None] = {}
    for row in rows:
        by_arm.setdefault(row["arm"], {})[(row["prompt_id"], row["seed"])] = row["value"]
        instr[row["arm"]] = row["instruction_id"]
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


def summarize(store: Store, run_id: str) -> dict[str, Any]:
    run = store.one("SELECT * FROM runs WHERE id = ?", [run_id])
    if run is None:
        raise UserError(f"no run {run_id!r} in {store.path}")
    instructions = store.query("SELECT * FROM instructions WHERE run_id = ? ORDER BY id", [run_id])
    stats = {s.arm: s for s in arm_stats(store, run_id, [i["id"] for i in instructions])}
    selection = {row["arm"]: row["reward"] for row in round_rewards(store, run_id, phase="selection")}
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
    best_id = run["best_instruction_id"] or bandit.best(list(stats.values()))
    best = next((i for i in items if i["id"] == best_id), None)
    rounds = store.query("SELECT round, status, phase FROM rounds WHERE run_id = ? ORDER BY round", [run_id])
    return {
        "run_id": run_id,
        "status": run["status"],
        "profile": run["profile"],
        "config_hash": run["config_hash"],
        "rounds": rounds,
        "best_instruction": best,
        "instructions": items,
        "heldout": heldout_table(store, run_id),
    }
