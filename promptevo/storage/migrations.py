"""Append-only schema migrations, applied in order when a database opens.

Never edit a migration that has shipped; add a new one. Each runs in its own transaction and is
recorded in `_migrations`, so opening an old database brings it up to date.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlite_utils

Migration = Callable[[sqlite_utils.Database], None]
MIGRATIONS: list[tuple[str, Migration]] = []


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append((fn.__name__, fn))
    return fn


@migration
def m001_initial(db: sqlite_utils.Database) -> None:
    db.execute(
        """
        CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            status TEXT NOT NULL,            -- running, finished, failed
            profile TEXT NOT NULL,
            config_json TEXT NOT NULL,
            config_hash TEXT NOT NULL,
            seed INTEGER NOT NULL,
            best_instruction_id INTEGER
        )"""
    )
    db.execute(
        """
        CREATE TABLE prompts (
            id TEXT PRIMARY KEY,             -- content hash of the text
            text TEXT NOT NULL
        )"""
    )
    db.execute(
        """
        CREATE TABLE run_prompts (
            run_id TEXT NOT NULL REFERENCES runs(id),
            prompt_id TEXT NOT NULL REFERENCES prompts(id),
            split TEXT NOT NULL,             -- optimize, heldout
            position INTEGER NOT NULL,
            PRIMARY KEY (run_id, prompt_id)
        )"""
    )
    db.execute(
        """
        CREATE TABLE llm_calls (
            id INTEGER PRIMARY KEY,
            run_id TEXT REFERENCES runs(id),
            created_at TEXT NOT NULL,
            role TEXT NOT NULL,              -- generator, gradient, modifier
            model TEXT NOT NULL,
            template TEXT,                   -- meta-prompt template name
            template_hash TEXT,
            messages_json TEXT NOT NULL,
            response TEXT,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            latency_s REAL,
            attempts INTEGER NOT NULL DEFAULT 1,
            error TEXT
        )"""
    )
    db.execute(
        """
        CREATE TABLE gradients (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL REFERENCES runs(id),
            round INTEGER NOT NULL,
            instruction_id INTEGER NOT NULL REFERENCES instructions(id),
            text TEXT NOT NULL,              -- the critique: inferences and improvements
            improvements_json TEXT NOT NULL,
            llm_call_id INTEGER REFERENCES llm_calls(id)
        )"""
    )
    db.execute(
        """
        CREATE TABLE instructions (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL REFERENCES runs(id),
            text TEXT NOT NULL,
            origin TEXT NOT NULL,            -- seed, modifier, baseline
            parent_id INTEGER REFERENCES instructions(id),
            gradient_id INTEGER REFERENCES gradients(id),
            llm_call_id INTEGER REFERENCES llm_calls(id),
            created_round INTEGER NOT NULL,
            retired_round INTEGER
        )"""
    )
    db.execute(
        """
        CREATE TABLE rounds (
            run_id TEXT NOT NULL REFERENCES runs(id),
            round INTEGER NOT NULL,
            status TEXT NOT NULL,            -- running, finished
            phase TEXT NOT NULL,             -- search, evaluation
            plan_json TEXT NOT NULL,         -- prompts, seeds and arms, fixed before any work
            started_at TEXT NOT NULL,
            finished_at TEXT,
            PRIMARY KEY (run_id, round)
        )"""
    )
    db.execute(
        """
        CREATE TABLE rewrites (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL REFERENCES runs(id),
            round INTEGER NOT NULL,
            instruction_id INTEGER NOT NULL REFERENCES instructions(id),
            prompt_id TEXT NOT NULL REFERENCES prompts(id),
            text TEXT NOT NULL,
            raw_text TEXT,
            handling TEXT,                   -- null, or how an unusable rewrite was handled
            llm_call_id INTEGER REFERENCES llm_calls(id),
            UNIQUE (run_id, round, instruction_id, prompt_id)
        )"""
    )
    db.execute(
        """
        CREATE TABLE render_configs (
            hash TEXT PRIMARY KEY,
            config_json TEXT NOT NULL
        )"""
    )
    db.execute(
        """
        CREATE TABLE images (
            id INTEGER PRIMARY KEY,
            render_config_hash TEXT NOT NULL REFERENCES render_configs(hash),
            prompt TEXT NOT NULL,            -- the exact text given to the renderer
            seed INTEGER NOT NULL,
            content_hash TEXT NOT NULL,      -- sha256 of the PNG bytes; the file name
            path TEXT NOT NULL,              -- relative to the artifact root
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            batch_size INTEGER NOT NULL,     -- images per pipeline call that made it
            created_at TEXT NOT NULL,
            UNIQUE (render_config_hash, prompt, seed)
        )"""
    )
    db.execute(
        """
        CREATE TABLE scores (
            id INTEGER PRIMARY KEY,
            image_id INTEGER NOT NULL REFERENCES images(id),
            scorer TEXT NOT NULL,
            scorer_version TEXT NOT NULL,
            target_prompt TEXT NOT NULL,     -- the prompt scored against (the naive prompt)
            value REAL NOT NULL,
            created_at TEXT NOT NULL,
            UNIQUE (image_id, scorer, scorer_version, target_prompt)
        )"""
    )
    db.execute(
        """
        CREATE TABLE trials (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL REFERENCES runs(id),
            round INTEGER NOT NULL,
            arm TEXT NOT NULL,               -- instruction id, or 'naive' / a baseline name
            instruction_id INTEGER REFERENCES instructions(id),
            prompt_id TEXT NOT NULL REFERENCES prompts(id),
            seed INTEGER NOT NULL,
            image_id INTEGER NOT NULL REFERENCES images(id),
            score_id INTEGER NOT NULL REFERENCES scores(id),
            UNIQUE (run_id, round, arm, prompt_id, seed)
        )"""
    )
    db.execute(
        """
        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            run_id TEXT REFERENCES runs(id),
            round INTEGER,
            created_at TEXT NOT NULL,
            kind TEXT NOT NULL,
            data_json TEXT NOT NULL
        )"""
    )
    for sql in [
        "CREATE INDEX idx_llm_calls_run ON llm_calls(run_id)",
        "CREATE INDEX idx_instructions_run ON instructions(run_id)",
        "CREATE INDEX idx_rewrites_run ON rewrites(run_id, round)",
        "CREATE INDEX idx_trials_run ON trials(run_id, round)",
        "CREATE INDEX idx_scores_image ON scores(image_id)",
        "CREATE INDEX idx_events_run ON events(run_id)",
    ]:
        db.execute(sql)



@migration
def m002_prompt_collection(db: sqlite_utils.Database) -> None:
    """The curated prompt collection: which prompts it holds, where each came from under which
    licence, tags, seeded splits, stored embeddings and near-duplicate findings. A run database
    and a prompt database share one schema, so one file may hold both."""
    db.execute(
        """
        CREATE TABLE sources (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,       -- given at import (default: the file name)
            licence TEXT,                    -- default licence of its rows
            origin TEXT,                     -- where the file came from (URL, citation)
            path TEXT NOT NULL,              -- the file as given at the last import
            file_sha256 TEXT NOT NULL,
            mapping_json TEXT NOT NULL,      -- field -> column used to read it
            imported_at TEXT NOT NULL
        )"""
    )
    db.execute(
        """
        CREATE TABLE collection (
            prompt_id TEXT PRIMARY KEY REFERENCES prompts(id),
            added_at TEXT NOT NULL,
            chars INTEGER NOT NULL,
            words INTEGER NOT NULL,
            removed_at TEXT,                 -- null while in the collection
            removed_reason TEXT,             -- e.g. near-duplicate
            duplicate_of TEXT REFERENCES prompts(id)
        )"""
    )
    db.execute(
        """
        CREATE TABLE prompt_sources (
            prompt_id TEXT NOT NULL REFERENCES prompts(id),
            source_id INTEGER NOT NULL REFERENCES sources(id),
            first_row INTEGER NOT NULL,      -- 1-based row of its first occurrence
            occurrences INTEGER NOT NULL,    -- rows in that file with this (normalised) text
            external_id TEXT,                -- the source's own id, if mapped
            licence TEXT,                    -- the row's licence, if mapped; else the source's
            raw_text TEXT,                   -- the text before normalisation, when it differs
            PRIMARY KEY (prompt_id, source_id)
        )"""
    )
    db.execute(
        """
        CREATE TABLE tags (
            prompt_id TEXT NOT NULL REFERENCES prompts(id),
            tag TEXT NOT NULL,               -- e.g. style:photo, category:landscape
            origin TEXT NOT NULL,            -- manual, auto, import
            PRIMARY KEY (prompt_id, tag)
        )"""
    )
    db.execute(
        """
        CREATE TABLE splits (
            prompt_id TEXT NOT NULL REFERENCES prompts(id),
            name TEXT NOT NULL,              -- the split set, e.g. default
            part TEXT NOT NULL,              -- train, validation, test
            seed INTEGER NOT NULL,
            PRIMARY KEY (prompt_id, name)
        )"""
    )
    db.execute(
        """
        CREATE TABLE embeddings (
            prompt_id TEXT NOT NULL REFERENCES prompts(id),
            model TEXT NOT NULL,
            dim INTEGER NOT NULL,
            vector BLOB NOT NULL,            -- float32, L2-normalised
            PRIMARY KEY (prompt_id, model)
        )"""
    )
    db.execute(
        """
        CREATE TABLE prompt_scores (
            prompt_id TEXT NOT NULL REFERENCES prompts(id),
            score_id INTEGER NOT NULL REFERENCES scores(id),
            seed INTEGER NOT NULL,
            PRIMARY KEY (prompt_id, score_id)
        )"""
    )
    # Full-text search over prompt texts; Datasette finds it by the prompts_fts name and offers a
    # search box on the prompts table.
    db.execute("CREATE VIRTUAL TABLE prompts_fts USING fts5(text, content=[prompts], content_rowid=[rowid])")
    db.execute("INSERT INTO prompts_fts (rowid, text) SELECT rowid, text FROM prompts")
    db.execute(
        """CREATE TRIGGER prompts_ai AFTER INSERT ON prompts BEGIN
             INSERT INTO prompts_fts (rowid, text) VALUES (new.rowid, new.text);
           END"""
    )
    db.execute(
        """CREATE TRIGGER prompts_ad AFTER DELETE ON prompts BEGIN
             INSERT INTO prompts_fts (prompts_fts, rowid, text) VALUES ('delete', old.rowid, old.text);
           END"""
    )
    db.execute(
        """CREATE TRIGGER prompts_au AFTER UPDATE ON prompts BEGIN
             INSERT INTO prompts_fts (prompts_fts, rowid, text) VALUES ('delete', old.rowid, old.text);
             INSERT INTO prompts_fts (rowid, text) VALUES (new.rowid, new.text);
           END"""
    )
    # One readable row per collected prompt, for Datasette and ad-hoc SQL.
    db.execute(
        """CREATE VIEW collection_view AS
           SELECT c.prompt_id, p.text, c.chars, c.words,
                  (SELECT group_concat(s.name, ', ') FROM prompt_sources ps JOIN sources s ON s.id = ps.source_id
                    WHERE ps.prompt_id = c.prompt_id) AS sources,
                  (SELECT group_concat(DISTINCT coalesce(ps.licence, s.licence)) FROM prompt_sources ps
                    JOIN sources s ON s.id = ps.source_id WHERE ps.prompt_id = c.prompt_id) AS licences,
                  (SELECT group_concat(t.tag, ', ') FROM tags t WHERE t.prompt_id = c.prompt_id) AS tags,
                  (SELECT group_concat(sp.name || ':' || sp.part, ', ') FROM splits sp WHERE sp.prompt_id = c.prompt_id) AS splits,
                  c.removed_reason, c.duplicate_of, c.added_at
           FROM collection c JOIN prompts p ON p.id = c.prompt_id"""
    )
    for sql in [
        "CREATE INDEX idx_prompt_sources_source ON prompt_sources(source_id)",
        "CREATE INDEX idx_tags_tag ON tags(tag)",
        "CREATE INDEX idx_splits_name ON splits(name, part)",
    ]:
        db.execute(sql)


@migration
def m003_trial_scores(db: sqlite_utils.Database) -> None:
    """A trial carries one score per reward model. `trials.score_id` stays as the score of the
    run's first reward (older readers keep working); every score of a trial is in trial_scores,
    keyed by the reward's name. Existing trials are copied over, so nothing is lost."""
    db.execute(
        """
        CREATE TABLE trial_scores (
            trial_id INTEGER NOT NULL REFERENCES trials(id),
            reward TEXT NOT NULL,            -- the reward model's name, as in scores.scorer
            score_id INTEGER NOT NULL REFERENCES scores(id),
            PRIMARY KEY (trial_id, reward)
        )"""
    )
    db.execute(
        """INSERT INTO trial_scores (trial_id, reward, score_id)
           SELECT t.id, s.scorer, s.id FROM trials t JOIN scores s ON s.id = t.score_id"""
    )
    db.execute("CREATE INDEX idx_trial_scores_score ON trial_scores(score_id)")


@migration
def m004_run_owner(db: sqlite_utils.Database) -> None:
    """One owner per run at a time (optuna's RUNNING state with heartbeats): the process that
    works on a run records who it is and refreshes a heartbeat; another process refuses while
    the owner is alive. Status gains `interrupted` for runs that stopped before finishing."""
    db.execute("ALTER TABLE runs ADD COLUMN owner TEXT")  # pid@host of the live owner, or null
    db.execute("ALTER TABLE runs ADD COLUMN heartbeat_at TEXT")
    db.execute("UPDATE runs SET status = 'interrupted' WHERE status = 'running'")


@migration
def m005_judgements(db: sqlite_utils.Database) -> None:
    """Pairwise judgements made in `promptevo serve`: two images of one prompt and seed under
    different arms, and which one a person preferred (or both, or neither), who and when. The
    "human" reward is computed from them when trials are read."""
    db.execute(
        """
        CREATE TABLE judgements (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL REFERENCES runs(id),
            left_trial_id INTEGER NOT NULL REFERENCES trials(id),
            right_trial_id INTEGER NOT NULL REFERENCES trials(id),
            choice TEXT NOT NULL CHECK (choice IN ('left', 'right', 'both', 'neither')),
            judge TEXT NOT NULL,
            created_at TEXT NOT NULL
        )"""
    )
    db.execute("CREATE INDEX idx_judgements_run ON judgements(run_id)")


@migration
def m006_variants(db: sqlite_utils.Database) -> None:
    """Render variants as part of what a run optimises: the run's candidate variants (render
    settings and an optional retouch plan, with their measured cost and whether they failed),
    the arms as (instruction, variant) pairs, and the per-prompt-group routing table."""
    db.execute(
        """
        CREATE TABLE variants (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL REFERENCES runs(id),
            name TEXT NOT NULL,
            spec_json TEXT NOT NULL,
            search_hash TEXT NOT NULL,
            final_hash TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'live' CHECK (status IN ('live', 'failed')),
            error TEXT,
            images INTEGER NOT NULL DEFAULT 0,
            render_s REAL NOT NULL DEFAULT 0,
            UNIQUE (run_id, name)
        )"""
    )
    db.execute(
        """
        CREATE TABLE arms (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL REFERENCES runs(id),
            instruction_id INTEGER NOT NULL REFERENCES instructions(id),
            variant_id INTEGER NOT NULL REFERENCES variants(id),
            created_round INTEGER NOT NULL,
            UNIQUE (run_id, instruction_id, variant_id)
        )"""
    )
    db.execute(
        """
        CREATE TABLE routes (
            run_id TEXT NOT NULL REFERENCES runs(id),
            grp INTEGER NOT NULL,
            centroid_json TEXT NOT NULL,
            examples_json TEXT NOT NULL,
            arm_id INTEGER NOT NULL REFERENCES arms(id),
            gain REAL,
            n INTEGER NOT NULL,
            PRIMARY KEY (run_id, grp)
        )"""
    )


@migration
def m007_llm_parse(db: sqlite_utils.Database) -> None:
    """Whether each LLM reply was in the form its role asked for: ok (as asked), repaired (a
    usable answer recovered from another form), fallback (unusable: promptevo used its fallback),
    NULL for calls made before this was recorded. Parse rates per role come from it."""
    db.execute("ALTER TABLE llm_calls ADD COLUMN parse TEXT CHECK (parse IN ('ok', 'repaired', 'fallback'))")


def pending_migrations(conn) -> list[str]:
    """Names of the migrations a database still needs (all of them for a new file)."""
    try:
        done = {row[0] for row in conn.execute("SELECT name FROM _migrations").fetchall()}
    except Exception:  # noqa: BLE001 - no _migrations table yet
        done = set()
    return [name for name, _ in MIGRATIONS if name not in done]


def apply_migrations(db: sqlite_utils.Database) -> list[str]:
    """Apply pending migrations; return the names applied."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    done = {row[0] for row in db.execute("SELECT name FROM _migrations").fetchall()}
    applied = []
    for name, fn in MIGRATIONS:
        if name in done:
            continue
        # Python's sqlite3 does not open transactions for DDL, so do it by hand: a migration
        # either lands whole or not at all. IMMEDIATE takes the write lock first, and the check
        # inside it sees what another process (a reader bringing a new file up to date while
        # its creator does the same) has just applied.
        db.conn.execute("BEGIN IMMEDIATE")
        if db.conn.execute("SELECT 1 FROM _migrations WHERE name = ?", [name]).fetchone():
            db.conn.execute("COMMIT")
            continue
        try:
            fn(db)
            db.conn.execute(
                "INSERT INTO _migrations (name, applied_at) VALUES (?, datetime('now'))", [name]
            )
        except BaseException:
            db.conn.execute("ROLLBACK")
            raise
        db.conn.execute("COMMIT")
        applied.append(name)
    return applied
