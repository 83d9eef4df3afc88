"""Every read and write of the prompt collection's tables (collection, sources, prompt_sources,
tags, splits, embeddings, prompt_scores): the SQL of `promptevo db`, beside the run repository's.
The collection (`promptdb.collection.PromptDB`) decides what to write; this writes it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptevo.errors import UserError
from promptevo.storage.store import Store, now, prompt_id


@dataclass(frozen=True)
class Selection:
    """Which collected prompts a command works on. Empty means all of them."""

    ids: tuple[str, ...] = ()
    search: str | None = None  # full-text query
    tags: tuple[str, ...] = ()  # all must be present
    split: str | None = None  # "test" or "default:test"
    source: str | None = None
    similar: str | None = None  # nearest to this text (needs an embedder)
    k: int = 10
    limit: int | None = None
    include_removed: bool = False


def fts_query(text: str) -> str:
    """A user's words as an FTS5 query that cannot be a syntax error: each word quoted, all
    required. (FTS5 operators stay available to SQL users through Datasette.)"""
    words = re.findall(r"\w+", text)
    if not words:
        raise UserError(f"search {text!r} has no words to look for")
    return " ".join(f'"{w}"' for w in words)


@dataclass(frozen=True)
class NewPrompt:
    """One distinct prompt of an imported file, with what its first row said."""

    text: str
    first_row: int
    occurrences: int
    external_id: str | None
    licence: str | None
    raw_text: str | None  # the row as written, when normalising changed it
    tags: list[str] = field(default_factory=list)


class PromptTables:
    def __init__(self, store: Store):
        self.store = store

    def add_source(self, prompts: Sequence[NewPrompt], *, name: str, licence: str | None, origin: str | None,
                   path: Path, file_sha256: str, mapping: dict[str, str]) -> tuple[int, int]:
        """A file's prompts under its source, in one transaction: (added, already collected)."""
        added = already = 0
        stamp = now()
        with self.store.transaction() as conn:
            conn.execute(
                """INSERT INTO sources (name, licence, origin, path, file_sha256, mapping_json, imported_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(name) DO UPDATE SET licence = coalesce(excluded.licence, licence),
                     origin = coalesce(excluded.origin, origin), path = excluded.path,
                     file_sha256 = excluded.file_sha256, mapping_json = excluded.mapping_json,
                     imported_at = excluded.imported_at""",
                [name, licence, origin, str(path), file_sha256, json.dumps(mapping), stamp],
            )
            source_id = conn.execute("SELECT id FROM sources WHERE name = ?", [name]).fetchone()[0]
            for p in prompts:
                pid = prompt_id(p.text)
                conn.execute("INSERT OR IGNORE INTO prompts (id, text) VALUES (?, ?)", [pid, p.text])
                cur = conn.execute(
                    "INSERT OR IGNORE INTO collection (prompt_id, added_at, chars, words) VALUES (?, ?, ?, ?)",
                    [pid, stamp, len(p.text), len(p.text.split())],
                )
                if cur.rowcount:
                    added += 1
                else:
                    already += 1
                conn.execute(
                    """INSERT OR IGNORE INTO prompt_sources
                       (prompt_id, source_id, first_row, occurrences, external_id, licence, raw_text)
                       VALUES (?, ?, ?, ?, ?, ?, ?)""",
                    [pid, source_id, p.first_row, p.occurrences, p.external_id, p.licence, p.raw_text],
                )
                for tag in p.tags:
                    conn.execute("INSERT OR IGNORE INTO tags (prompt_id, tag, origin) VALUES (?, ?, 'import')", [pid, tag])
        return added, already

    def select(self, sel: Selection) -> list[dict[str, Any]]:
        """Collected prompts matching every part of the selection but `similar`, as rows with id
        and text, in the order they were added (by search rank when searched)."""
        where, params = [], []
        order = "c.rowid"
        if not sel.include_removed:
            where.append("c.removed_at IS NULL")
        if sel.ids:
            where.append(f"c.prompt_id IN ({', '.join('?' for _ in sel.ids)})")
            params += list(sel.ids)
        for tag in sel.tags:
            where.append("EXISTS (SELECT 1 FROM tags t WHERE t.prompt_id = c.prompt_id AND t.tag = ?)")
            params.append(tag)
        if sel.split:
            name, _, part = sel.split.rpartition(":")
            where.append("EXISTS (SELECT 1 FROM splits s WHERE s.prompt_id = c.prompt_id AND s.name = ? AND s.part = ?)")
            params += [name or "default", part]
        if sel.source:
            if not self.store.one("SELECT 1 FROM sources WHERE name = ?", [sel.source]):
                raise UserError(f"no source named {sel.source!r} (see `promptevo db stats`)")
            where.append(
                "EXISTS (SELECT 1 FROM prompt_sources ps JOIN sources so ON so.id = ps.source_id "
                "WHERE ps.prompt_id = c.prompt_id AND so.name = ?)"
            )
            params.append(sel.source)
        join = ""
        if sel.search:
            join = "JOIN prompts_fts f ON f.rowid = p.rowid"
            where.append("prompts_fts MATCH ?")
            params.append(fts_query(sel.search))
            order = "f.rank, c.rowid"
        sql = f"""SELECT c.prompt_id AS id, p.text FROM collection c JOIN prompts p ON p.id = c.prompt_id {join}
                  {'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY {order}"""
        return self.store.query(sql, params)

    # -- embeddings ----------------------------------------------------------------------------

    def unembedded(self, model: str) -> list[dict[str, Any]]:
        """Collected prompts with no stored vector of this model, in the order they were added."""
        return self.store.query(
            """SELECT c.prompt_id AS id, p.text FROM collection c JOIN prompts p ON p.id = c.prompt_id
               LEFT JOIN embeddings e ON e.prompt_id = c.prompt_id AND e.model = ?
               WHERE e.prompt_id IS NULL ORDER BY c.rowid""",
            [model],
        )

    def add_embeddings(self, model: str, dim: int, rows: Iterable[tuple[str, bytes]]) -> None:
        with self.store.transaction() as conn:
            conn.executemany("INSERT OR IGNORE INTO embeddings (prompt_id, model, dim, vector) VALUES (?, ?, ?, ?)",
                             [(pid, model, dim, blob) for pid, blob in rows])

    def embeddings(self, model: str, ids: Sequence[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for start in range(0, len(ids), 500):
            part = list(ids[start : start + 500])
            marks = ", ".join("?" for _ in part)
            for r in self.store.query(f"SELECT prompt_id, vector FROM embeddings WHERE model = ? AND prompt_id IN ({marks})",
                                      [model, *part]):
                found[r["prompt_id"]] = r["vector"]
        return found

    # -- duplicates, tags, splits ----------------------------------------------------------------

    def exact_duplicates(self) -> list[dict[str, Any]]:
        return self.store.query(
            """SELECT ps.prompt_id AS id, p.text, SUM(ps.occurrences) AS occurrences,
                      group_concat(so.name, ', ') AS sources
               FROM prompt_sources ps JOIN prompts p ON p.id = ps.prompt_id JOIN sources so ON so.id = ps.source_id
               JOIN collection c ON c.prompt_id = ps.prompt_id
               GROUP BY ps.prompt_id HAVING SUM(ps.occurrences) > 1 ORDER BY occurrences DESC, p.text"""
        )

    def remove(self, pairs: Sequence[dict[str, Any]], reason: str) -> None:
        stamp = now()
        with self.store.transaction() as conn:
            for p in pairs:
                conn.execute(
                    """UPDATE collection SET removed_at = ?, removed_reason = ?, duplicate_of = ?
                       WHERE prompt_id = ? AND removed_at IS NULL""",
                    [stamp, reason, p.get("duplicate_of"), p["id"]],
                )

    def set_tags(self, pairs: Iterable[tuple[str, str]], *, origin: str, remove: bool = False) -> int:
        """Add (or remove) (prompt id, tag) pairs; how many rows changed."""
        n = 0
        with self.store.transaction() as conn:
            for pid, tag in pairs:
                if remove:
                    n += conn.execute("DELETE FROM tags WHERE prompt_id = ? AND tag = ?", [pid, tag]).rowcount
                else:
                    n += conn.execute("INSERT OR IGNORE INTO tags (prompt_id, tag, origin) VALUES (?, ?, ?)",
                                      [pid, tag, origin]).rowcount
        return n

    def set_splits(self, rows: Iterable[tuple[str, str, str, int]]) -> None:
        """(prompt id, split name, part, seed) rows, replacing earlier assignments."""
        with self.store.transaction() as conn:
            conn.executemany("INSERT OR REPLACE INTO splits (prompt_id, name, part, seed) VALUES (?, ?, ?, ?)", list(rows))

    def provenance(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """collection_view rows (sources, licences, tags, splits) by prompt id."""
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), 500):
            part = list(ids[start : start + 500])
            marks = ", ".join("?" for _ in part)
            out.update({r["prompt_id"]: r for r in self.store.query(
                f"SELECT * FROM collection_view WHERE prompt_id IN ({marks})", part)})
        return out

    def add_prompt_scores(self, rows: Iterable[tuple[str, int, int]]) -> None:
        """(prompt id, score id, seed) rows linking a prompt to the scores of its images."""
        with self.store.transaction() as conn:
            conn.executemany("INSERT OR IGNORE INTO prompt_scores (prompt_id, score_id, seed) VALUES (?, ?, ?)", list(rows))

    # -- statistics ------------------------------------------------------------------------------

    def count(self) -> int:
        """Prompts in the collection (removed ones excluded)."""
        return int(self.store.scalar("SELECT COUNT(*) FROM collection WHERE removed_at IS NULL"))

    def lengths(self) -> list[dict[str, Any]]:
        return self.store.query("SELECT chars, words FROM collection WHERE removed_at IS NULL")

    def counts(self) -> dict[str, Any]:
        q = self.store.query
        return {
            "prompts": self.count(),
            "removed": {r["removed_reason"]: r["n"] for r in q(
                "SELECT removed_reason, COUNT(*) AS n FROM collection WHERE removed_at IS NOT NULL GROUP BY 1")},
            "sources": q("""SELECT so.name, so.licence, so.origin, COUNT(ps.prompt_id) AS prompts,
                                   SUM(ps.occurrences) AS rows FROM sources so
                            LEFT JOIN prompt_sources ps ON ps.source_id = so.id GROUP BY so.id ORDER BY so.id"""),
            "tags": {r["tag"]: r["n"] for r in q(
                """SELECT t.tag, COUNT(*) AS n FROM tags t JOIN collection c ON c.prompt_id = t.prompt_id
                   WHERE c.removed_at IS NULL GROUP BY t.tag ORDER BY n DESC, t.tag LIMIT 30""")},
            "splits": {f"{r['name']}:{r['part']}": r["n"] for r in q(
                "SELECT name, part, COUNT(*) AS n FROM splits GROUP BY name, part ORDER BY name, part")},
            "embeddings": {r["model"]: r["n"] for r in q("SELECT model, COUNT(*) AS n FROM embeddings GROUP BY model")},
            "scores": q("""SELECT s.scorer, COUNT(DISTINCT x.prompt_id) AS prompts, COUNT(*) AS images,
                                  ROUND(AVG(s.value), 4) AS mean, ROUND(MIN(s.value), 4) AS min, ROUND(MAX(s.value), 4) AS max
                           FROM prompt_scores x JOIN scores s ON s.id = x.score_id GROUP BY s.scorer"""),
        }
