"""The SQLite store: every run, prompt, LLM call, image and score is a row written as it happens.

One process writes (the driver); worker threads hand results back to it. WAL keeps readers
(`runs show`, Datasette) working while a run writes. Image files live beside the database,
named by the hash of their PNG bytes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sqlite3
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlite_utils

from promptevo.errors import UserError
from promptevo.hashing import sha256_hex
from promptevo.storage.migrations import apply_migrations, pending_migrations


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def safe_text(value: Any) -> Any:
    """Strings as valid UTF-8 (lone surrogates, which an LLM server's JSON can carry and SQLite
    refuses, become U+FFFD); other values unchanged."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value


def prompt_id(text: str) -> str:
    return sha256_hex(text, 16)


def _refuse_a_foreign_database(conn: sqlite3.Connection, path: Path) -> None:
    """Another program's SQLite file (tables, but no promptevo migrations) is left untouched."""
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    if names and "_migrations" not in names:
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise UserError(f"{path} is another program's SQLite database (tables: {shown}), not promptevo's; "
                        "it was left untouched: pass another --db path")


class Store:
    def __init__(self, path: str | os.PathLike, *, readonly: bool = False, create: bool = True, busy_timeout: float = 30.0):
        """`create=False`: the database must exist (a command that only reads or continues work
        must not leave an empty database behind when its path is mistyped). `busy_timeout`: how
        long a write waits for another process's write lock (a web server waits less and retries)."""
        self.path = Path(path)
        self.readonly = readonly
        self.create = create
        self.busy_timeout = busy_timeout
        self.artifacts = self.path.with_name(self.path.name + "-artifacts")
        self._lock = threading.RLock()
        self._depth = 0  # nesting level of atomic()
        self.conn = self._connect()

    # -- opening -----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        path = self.path
        if path.is_dir():
            raise UserError(f"{path} is a folder, not a database file")
        if self.readonly or not self.create:
            if not path.exists():
                raise UserError(f"database {path} does not exist")
        if self.readonly:
            pass
        elif path.exists() and (not os.access(path, os.W_OK) or not path.stat().st_mode & 0o222):
            raise UserError(f"database {path} is read-only; pass a writable --db path")
        elif not path.exists() and not (path.parent if str(path.parent) else Path(".")).is_dir():
            raise UserError(f"cannot create database {path}: its folder does not exist")
        elif not path.exists() and not os.access(path.parent if str(path.parent) else ".", os.W_OK):
            raise UserError(f"cannot create database {path}: its folder is not writable")
        if path.exists() and path.stat().st_size > 0:
            with open(path, "rb") as fh:
                if fh.read(16) != b"SQLite format 3\x00":
                    raise UserError(f"{path} is not a SQLite database (or its header is corrupted)")
        if self.readonly:
            self._migrate_before_reading(path)
        uri = f"file:{path}?mode=ro" if self.readonly else f"file:{path}"
        conn = None
        try:
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=self.busy_timeout)
            # Check before anything writes: switching to WAL rewrites the header of a damaged file.
            check = conn.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise UserError(f"database {path} is corrupted ({check[:200]}); restore it from a copy")
            conn.execute("PRAGMA foreign_keys = ON")
            if not self.readonly:
                _refuse_a_foreign_database(conn, path)  # before WAL or a table touches it
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                apply_migrations(sqlite_utils.Database(conn))
        except (sqlite3.DatabaseError, UserError) as exc:
            if conn is not None:
                conn.close()
            if isinstance(exc, UserError):
                raise
            if "malformed" in str(exc) or "corrupt" in str(exc):
                raise UserError(f"database {path} is corrupted ({exc}); restore it from a copy") from None
            raise UserError(f"cannot open database {path}: {exc}") from None
        return conn

    def _migrate_before_reading(self, path: Path) -> None:
        """A read-only command on a database from an older promptevo: bring its schema up to
        date first (as opening it to write would), so every reader sees one schema."""
        probe = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            has_schema = probe.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = '_migrations'").fetchone()[0]
            pending = pending_migrations(probe) if has_schema else []
        except sqlite3.DatabaseError:
            return  # the read-only open below reports it
        finally:
            probe.close()
        if not has_schema:  # another SQLite file, or one a promptevo process is creating right now
            raise UserError(f"{path} has no promptevo tables (not a promptevo database, or one still being created)")
        if not pending:
            return
        if not os.access(path, os.W_OK):
            raise UserError(f"database {path} was written by an older promptevo and is read-only: "
                            "make it writable once so its schema can be updated")
        Store(path).close()

    def close(self) -> None:
        self.conn.close()

    @staticmethod
    def check_can_create(path: str | os.PathLike) -> None:
        """A new database can be made at `path`: its nearest existing folder takes a file (tried
        with a probe file, since permission bits say little to root or on /proc). Commands call
        this before minutes of model loading."""
        path = Path(path).expanduser()
        folder = path.parent if str(path.parent) else Path(".")
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise UserError(f"cannot create database {path}: {folder} is not a folder")
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as exc:
            raise UserError(f"cannot create database {path}: {folder} is not writable ({exc.strerror or exc})") from None

    @staticmethod
    def make_folder(path: str | os.PathLike) -> None:
        """Create the folder a new database goes in (every command that creates one does this,
        once its input has been checked)."""
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def atomic(self) -> Iterator[sqlite3.Connection]:
        """A transaction that nests: the outermost level is BEGIN IMMEDIATE ... COMMIT, inner
        levels are savepoints (as sqlite-utils' `atomic()`), so a repository method that writes
        several rows can be called inside a larger unit of work and still land all or nothing."""
        with self._lock:
            depth = self._depth
            name = f"sp{depth}"
            self.conn.execute("BEGIN IMMEDIATE" if depth == 0 else f"SAVEPOINT {name}")
            self._depth += 1
            try:
                yield self.conn
            except BaseException:
                self._depth -= 1
                if depth == 0:
                    self.conn.execute("ROLLBACK")
                else:
                    self.conn.execute(f"ROLLBACK TO {name}")
                    self.conn.execute(f"RELEASE {name}")
                raise
            self._depth -= 1
            self.conn.execute("COMMIT" if depth == 0 else f"RELEASE {name}")

    transaction = atomic

    def query(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        with self._lock:
            cur = self.conn.execute(sql, params)
            cols = [c[0] for c in cur.description or []]
            return [dict(zip(cols, row)) for row in cur.fetchall()]

    def scalar(self, sql: str, params: Any = ()) -> Any:
        """The first column of the first row (None when there is no row)."""
        row = self.one(sql, params)
        return next(iter(row.values())) if row else None

    def one(self, sql: str, params: Any = ()) -> dict[str, Any] | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def insert(self, table: str, row: dict[str, Any]) -> int:
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self.transaction() as conn:
            cur = conn.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", [safe_text(v) for v in row.values()])
            return int(cur.lastrowid or 0)

    def lookup(self, table: str, unique: dict[str, Any], extra: dict[str, Any] | None = None, id_column: str = "id") -> Any:
        """Get-or-create by content (sqlite-utils' `lookup`): the id of the row whose `unique`
        columns match, inserting it with `extra` when there is none. Idempotent under retries."""
        row = {**unique, **(extra or {})}
        where = " AND ".join(f"{k} = ?" for k in unique)
        with self.atomic() as conn:
            conn.execute(f"INSERT OR IGNORE INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                         [safe_text(v) for v in row.values()])
            found = conn.execute(f"SELECT {id_column} FROM {table} WHERE {where}", list(unique.values())).fetchone()
        return found[0]

    # -- records -----------------------------------------------------------------------------

    def add_prompt(self, text: str) -> str:
        return self.lookup("prompts", {"id": prompt_id(text)}, {"text": text})

    def prompt_texts(self, ids: Sequence[str]) -> dict[str, str]:
        """Prompt id -> text for the given ids."""
        ids = list(dict.fromkeys(ids))
        if not ids:
            return {}
        return {r["id"]: r["text"] for r in self.query(
            f"SELECT id, text FROM prompts WHERE id IN ({','.join('?' * len(ids))})", ids)}

    def add_render_config(self, config_hash: str, config: dict[str, Any]) -> None:
        self.lookup("render_configs", {"hash": config_hash}, {"config_json": json.dumps(config, sort_keys=True)}, "hash")

    def set_parses(self, outcomes: Sequence[tuple[int | None, str]]) -> None:
        """Record how logged replies parsed: (call id, ok | repaired | fallback), in one transaction."""
        rows = [(outcome, call_id) for call_id, outcome in outcomes if call_id is not None]
        if rows:
            with self.atomic() as conn:
                conn.executemany("UPDATE llm_calls SET parse = ? WHERE id = ?", rows)

    def parse_rates(self, run_id: str) -> list[dict[str, Any]]:
        """Per role: calls whose parse was recorded, how many were ok, repaired and fallback."""
        return self.query(
            """SELECT role, COUNT(*) AS calls, SUM(parse = 'ok') AS ok, SUM(parse = 'repaired') AS repaired,
                      SUM(parse = 'fallback') AS fallback
               FROM llm_calls WHERE run_id = ? AND parse IS NOT NULL GROUP BY role ORDER BY role""", [run_id])

    def log_llm_call(
        self,
        *,
        run_id: str | None,
        role: str,
        model: str,
        messages: list[dict[str, str]],
        response: str | None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        latency_s: float | None = None,
        attempts: int = 1,
        error: str | None = None,
        template: str | None = None,
        template_hash: str | None = None,
    ) -> int:
        return self.insert(
            "llm_calls",
            {
                "run_id": run_id,
                "created_at": now(),
                "role": role,
                "model": model,
                "template": template,
                "template_hash": template_hash,
                "messages_json": json.dumps(messages, ensure_ascii=False),
                "response": response,
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "latency_s": latency_s,
                "attempts": attempts,
                "error": error,
            },
        )

    def event(self, run_id: str | None, kind: str, data: dict[str, Any], round: int | None = None) -> None:
        self.insert(
            "events",
            {
                "run_id": run_id,
                "round": round,
                "created_at": now(),
                "kind": kind,
                "data_json": json.dumps(data, ensure_ascii=False, default=str),
            },
        )

    # -- images ------------------------------------------------------------------------------

    def find_image(self, render_hash: str, prompt: str, seed: int) -> dict[str, Any] | None:
        return self.one(
            "SELECT * FROM images WHERE render_config_hash = ? AND prompt = ? AND seed = ?",
            [render_hash, prompt, seed],
        )

    def write_image_file(self, png: bytes) -> tuple[str, Path]:
        """The PNG under its content hash (written atomically, once): (digest, path relative to
        the artifact root). Thread-safe: a driver writes a batch's files in parallel."""
        digest = sha256_hex(png)
        rel = Path("images") / digest[:2] / f"{digest}.png"
        dest = self.artifacts / rel
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_suffix(f".tmp{os.getpid()}-{threading.get_ident()}")
            tmp.write_bytes(png)
            os.replace(tmp, dest)
        return digest, rel

    def save_image(
        self, *, png: bytes, render_hash: str, prompt: str, seed: int, width: int, height: int, batch_size: int,
        written: tuple[str, Path] | None = None,
    ) -> int:
        """Write the PNG under its content hash (unless `written` says where it already is), then
        its row. Idempotent."""
        digest, rel = written or self.write_image_file(png)
        return int(self.lookup(
            "images", {"render_config_hash": render_hash, "prompt": prompt, "seed": seed},
            {"content_hash": digest, "path": str(rel), "width": width, "height": height,
             "batch_size": batch_size, "created_at": now()}))

    def image(self, image_id: int) -> dict[str, Any] | None:
        return self.one("SELECT * FROM images WHERE id = ?", [image_id])

    def images_count(self) -> int:
        return int(self.scalar("SELECT COUNT(*) FROM images"))

    def artifact_file(self, stored: str | None) -> Path | None:
        """The file a stored relative path names, only if it lies inside this database's artifacts
        folder and exists: a path read from a database someone handed you is untrusted, so an
        absolute path, `..` or a symlink that leads elsewhere counts as missing."""
        if not stored:
            return None
        root = self.artifacts.resolve()
        try:
            path = (root / stored).resolve()
        except (OSError, RuntimeError, ValueError):
            return None
        return path if path.is_relative_to(root) and path.is_file() else None

    def image_path(self, image: dict[str, Any]) -> Path:
        """An image row's file; missing (or outside the artifacts folder) is one clear error."""
        path = self.artifact_file(image["path"])
        if path is None:
            raise UserError(f"image {image['id']}'s file {image['path']!r} is missing from {self.artifacts}; "
                            "copy the database together with its -artifacts folder")
        return path

    def find_score(self, image_id: int, scorer: str, version: str, target: str) -> dict[str, Any] | None:
        return self.one(
            """SELECT * FROM scores WHERE image_id = ? AND scorer = ? AND scorer_version = ?
               AND target_prompt = ?""",
            [image_id, scorer, version, target],
        )

    def save_score(self, *, image_id: int, scorer: str, version: str, target: str, value: float) -> int:
        return int(self.lookup(
            "scores", {"image_id": image_id, "scorer": scorer, "scorer_version": version, "target_prompt": target},
            {"value": float(value), "created_at": now()}))

    def schema(self) -> dict[str, list[str]]:
        """Table name -> column names, for tests and `runs show`."""
        tables = [r["name"] for r in self.query("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return {t: [c[1] for c in self.conn.execute(f"PRAGMA table_info({t})")] for t in tables}
