import sqlite3

import pytest

from promptevo.errors import UserError
from promptevo.storage.migrations import MIGRATIONS
from promptevo.storage.store import Store

EXPECTED_SCHEMA = {
    "_migrations": ["name", "applied_at"],
    "collection": ["prompt_id", "added_at", "chars", "words", "removed_at", "removed_reason", "duplicate_of"],
    "embeddings": ["prompt_id", "model", "dim", "vector"],
    "prompt_scores": ["prompt_id", "score_id", "seed"],
    "prompt_sources": ["prompt_id", "source_id", "first_row", "occurrences", "external_id", "licence", "raw_text"],
    "prompts_fts": ["text"],
    "prompts_fts_config": ["k", "v"],
    "prompts_fts_data": ["id", "block"],
    "prompts_fts_docsize": ["id", "sz"],
    "prompts_fts_idx": ["segid", "term", "pgno"],
    "sources": ["id", "name", "licence", "origin", "path", "file_sha256", "mapping_json", "imported_at"],
    "splits": ["prompt_id", "name", "part", "seed"],
    "tags": ["prompt_id", "tag", "origin"],
    "events": ["id", "run_id", "round", "created_at", "kind", "data_json"],
    "gradients": ["id", "run_id", "round", "instruction_id", "text", "improvements_json", "llm_call_id"],
    "images": ["id", "render_config_hash", "prompt", "seed", "content_hash", "path", "width", "height",
               "batch_size", "created_at"],
    "judgements": ["id", "run_id", "left_trial_id", "right_trial_id", "choice", "judge", "created_at"],
    "instructions": ["id", "run_id", "text", "origin", "parent_id", "gradient_id", "llm_call_id",
                     "created_round", "retired_round"],
    "llm_calls": ["id", "run_id", "created_at", "role", "model", "template", "template_hash", "messages_json",
                  "response", "prompt_tokens", "completion_tokens", "latency_s", "attempts", "error", "parse"],
    "prompts": ["id", "text"],
    "render_configs": ["hash", "config_json"],
    "rewrites": ["id", "run_id", "round", "instruction_id", "prompt_id", "text", "raw_text", "handling",
                 "llm_call_id"],
    "rounds": ["run_id", "round", "status", "phase", "plan_json", "started_at", "finished_at"],
    "run_prompts": ["run_id", "prompt_id", "split", "position"],
    "runs": ["id", "created_at", "updated_at", "status", "profile", "config_json", "config_hash", "seed",
             "best_instruction_id", "owner", "heartbeat_at"],
    "scores": ["id", "image_id", "scorer", "scorer_version", "target_prompt", "value", "created_at"],
    "trials": ["id", "run_id", "round", "arm", "instruction_id", "prompt_id", "seed", "image_id", "score_id"],
    "trial_scores": ["trial_id", "reward", "score_id"],
    "variants": ["id", "run_id", "name", "spec_json", "search_hash", "final_hash", "status", "error", "images", "render_s"],
    "arms": ["id", "run_id", "instruction_id", "variant_id", "created_round"],
    "routes": ["run_id", "grp", "centroid_json", "examples_json", "arm_id", "gain", "n"],
}


def test_new_database_gets_the_schema(store):
    assert store.schema() == EXPECTED_SCHEMA
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    applied = [r["name"] for r in store.query("SELECT name FROM _migrations ORDER BY name")]
    assert applied == [name for name, _ in MIGRATIONS]


def test_reopening_applies_nothing_twice(tmp_path):
    path = tmp_path / "a.db"
    Store(path).close()
    with Store(path) as s:
        assert len(s.query("SELECT * FROM _migrations")) == len(MIGRATIONS)


def test_foreign_keys_are_enforced(store):
    with pytest.raises(sqlite3.IntegrityError):
        store.insert("run_prompts", {"run_id": "nope", "prompt_id": "nope", "split": "x", "position": 0})


def test_images_are_stored_by_content_hash_and_deduplicated(store):
    store.add_render_config("h", {"model": "tiny"})
    a = store.save_image(png=b"png-bytes", render_hash="h", prompt="a waterfall", seed=1, width=1, height=1, batch_size=1)
    b = store.save_image(png=b"png-bytes", render_hash="h", prompt="a waterfall", seed=1, width=1, height=1, batch_size=1)
    assert a == b
    row = store.find_image("h", "a waterfall", 1)
    path = store.image_path(row)
    assert path.read_bytes() == b"png-bytes"
    assert "waterfall" not in str(path)
    assert path.stem == row["content_hash"]


def test_not_a_database_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(UserError, match="not a SQLite database"):
        Store(bad)


def test_reading_a_database_without_promptevo_tables_is_a_user_error(tmp_path):
    """Another program's SQLite file, or one that a promptevo process has created but not yet
    given its tables (a reader polling a run that is starting): one line, not a failed query."""
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    empty = tmp_path / "starting.db"
    empty.touch()
    for path in (other, empty):
        with pytest.raises(UserError, match="has no promptevo tables"):
            Store(path, readonly=True)
    from typer.testing import CliRunner

    from promptevo.cli.main import _register_subcommands, app

    _register_subcommands()
    r = CliRunner().invoke(app, ["runs", "list", "--db", str(other)])
    assert r.exit_code == 2 and "has no promptevo tables" in r.output
    with sqlite3.connect(other) as conn:  # and the file was left as it was
        assert [t for (t,) in conn.execute("SELECT name FROM sqlite_master")] == ["notes"]


def test_writing_to_another_programs_database_is_refused_before_anything_is_written(tmp_path):
    """`optimize --db tool-cache.sqlite` must not take over someone else's file: it is refused
    byte for byte untouched (no WAL switch, no table added), whatever its table names."""
    other = tmp_path / "cache.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE runs (id TEXT)")  # a name promptevo also uses
        conn.execute("CREATE TABLE entries (key TEXT, value BLOB)")
    before = other.read_bytes()
    with pytest.raises(UserError, match="another program's SQLite database .*runs.*left untouched"):
        Store(other)
    assert other.read_bytes() == before and not (tmp_path / "cache.sqlite-wal").exists()
    empty = tmp_path / "empty.db"  # an empty file (touch) is still a new promptevo database
    empty.touch()
    Store(empty).close()
    with Store(empty) as store:
        assert "runs" in store.schema()


def test_truncated_database_is_a_user_error(tmp_path):
    path = tmp_path / "t.db"
    with Store(path) as s:
        s.add_prompt("a waterfall")
        s.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] + b"\xff" * 4096)
    with pytest.raises(UserError):
        with Store(path) as s:
            s.query("SELECT * FROM prompts")


def test_read_only_database_is_a_user_error(tmp_path):
    path = tmp_path / "ro.db"
    Store(path).close()
    path.chmod(0o444)
    before = path.read_bytes()
    try:
        with pytest.raises(UserError, match="read-only"):
            Store(path)
        assert path.read_bytes() == before
    finally:
        path.chmod(0o644)


def test_an_old_database_is_upgraded_and_its_prompts_become_searchable(tmp_path):
    import sqlite_utils

    from promptevo.storage import migrations

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    db = sqlite_utils.Database(conn)
    first = migrations.MIGRATIONS[:1]
    saved = migrations.MIGRATIONS[:]
    migrations.MIGRATIONS[:] = first
    try:
        migrations.apply_migrations(db)
    finally:
        migrations.MIGRATIONS[:] = saved
    conn.execute("INSERT INTO prompts (id, text) VALUES ('x', 'a waterfall at dawn')")
    conn.close()
    with Store(path) as s:
        assert s.schema() == EXPECTED_SCHEMA
        hits = s.query("SELECT p.text FROM prompts_fts f JOIN prompts p ON p.rowid = f.rowid WHERE prompts_fts MATCH 'waterfall'")
        assert hits == [{"text": "a waterfall at dawn"}]


def test_atomic_nests_with_savepoints(store):
    """An inner unit that fails rolls back alone; the outer one still commits what it did."""
    with store.atomic():
        store.add_prompt("kept")
        with pytest.raises(RuntimeError):
            with store.atomic():
                store.add_prompt("rolled back")
                raise RuntimeError("inner failure")
        store.add_prompt("also kept")
    assert set(store.prompt_texts([store.add_prompt(t) for t in ("kept", "also kept")]).values()) == {"kept", "also kept"}
    ids = {store.add_prompt("rolled back")}
    assert store.prompt_texts(ids) == {next(iter(ids)): "rolled back"}  # created only now
    with pytest.raises(RuntimeError):  # an outer failure rolls back everything inside it
        with store.atomic():
            store.add_prompt("inner commit")
            raise RuntimeError("outer failure")
    assert store.one("SELECT COUNT(*) AS n FROM prompts WHERE text = 'inner commit'")["n"] == 0


def test_lookup_gets_or_creates_by_content(store):
    a = store.lookup("render_configs", {"hash": "h1"}, {"config_json": "{}"}, "hash")
    b = store.lookup("render_configs", {"hash": "h1"}, {"config_json": "{\"other\": 1}"}, "hash")
    assert a == b == "h1"
    assert store.one("SELECT config_json FROM render_configs WHERE hash = 'h1'")["config_json"] == "{}"  # first one kept


def test_a_migration_another_process_just_applied_is_not_applied_again(tmp_path):
    """A run's database being created while a reader (the CLI, a web page) opens it: both bring
    the schema up to date. Here the other process applies every migration in the moment between
    this one reading what is done and taking the write lock; this one must then skip them."""
    import sqlite_utils

    from promptevo.storage.migrations import apply_migrations

    path = tmp_path / "new.db"

    class Interleaved:
        """A connection that lets the other process run just before its first transaction."""

        def __init__(self, conn):
            self.conn, self.raced = conn, False

        def execute(self, sql, *args):
            if sql.startswith("BEGIN") and not self.raced:
                self.raced = True
                other = sqlite3.connect(path, isolation_level=None)
                apply_migrations(sqlite_utils.Database(other))
                other.close()
            return self.conn.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(self.conn, name)

    conn = Interleaved(sqlite3.connect(path, isolation_level=None))
    assert apply_migrations(sqlite_utils.Database(conn)) == [] and conn.raced  # the other one applied them all
    with Store(path, readonly=True) as s:
        names = [r["name"] for r in s.query("SELECT name FROM _migrations")]
    assert sorted(names) == sorted(name for name, _ in MIGRATIONS)
