"""The prompt collection: import with provenance, exact and near-duplicate detection, full-text
and semantic search, tags, seeded splits, scoring and statistics.

It lives in the same SQLite schema as runs (tables collection, sources, prompt_sources, tags,
splits, embeddings, prompt_scores), so a prompt is one `prompts` row whether a run or the
collection uses it, and rendered images and scores are shared through the same cache.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from promptevo.embed import Embedder, from_blobs, to_blob
from promptevo.errors import UserError
from promptevo.hashing import sha256_hex
from promptevo.promptdb.prompt_io import MAX_PROMPT_CHARS, Row, normalize, read_table
from promptevo.storage.store import Store, now, prompt_id

PARTS = ("train", "validation", "test")
DEFAULT_NEAR_THRESHOLD = 0.92

Progress = Callable[[int, int], None]  # (done, total)


@dataclass
class ImportReport:
    source: str
    path: str
    format: str
    rows: int  # rows read, rejected ones included
    added: int  # prompts new to the collection
    already: int  # usable distinct prompts the collection held before
    duplicate_rows: int  # rows repeating an earlier row's text in the same file
    duplicates: list[dict[str, Any]] = field(default_factory=list)  # first groups: text, rows
    rejected: dict[str, int] = field(default_factory=dict)
    rejected_examples: list[dict[str, Any]] = field(default_factory=list)
    columns: dict[str, str] = field(default_factory=dict)  # field -> the column it was read from
    tags_refused: list[str] = field(default_factory=list)  # tag values that normalised to nothing usable

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def split_part(seed: int, name: str, pid: str, fractions: Sequence[float]) -> str:
    """Train/validation/test for one prompt from a hash of (split name, seed, prompt): the same
    every time, and adding prompts never moves the ones already assigned."""
    u = int(sha256_hex(f"{name}:{seed}:{pid}", 16), 16) / 16**16
    edge = 0.0
    for part, frac in zip(PARTS, fractions):
        edge += frac
        if u < edge:
            return part
    return PARTS[len(fractions) - 1]


STYLE_WORDS = {
    "photo": ["photo", "photograph", "photography", "photorealistic", "dslr", "35mm", "bokeh", "canon", "nikon"],
    "painting": ["painting", "oil on canvas", "watercolor", "watercolour", "acrylic", "gouache", "impressionist"],
    "digital-art": ["digital art", "digital painting", "artstation", "concept art", "cgsociety"],
    "anime": ["anime", "manga", "ghibli", "makoto shinkai"],
    "3d-render": ["3d render", "3d", "octane", "unreal engine", "blender", "cgi", "render"],
    "illustration": ["illustration", "drawing", "sketch", "pencil", "ink", "comic"],
    "pixel-art": ["pixel art", "8-bit", "16-bit"],
}
CATEGORY_WORDS = {
    "landscape": ["landscape", "mountain", "mountains", "waterfall", "forest", "ocean", "sea", "desert", "valley",
                  "river", "lake", "beach", "sunset", "canyon", "island"],
    "portrait": ["portrait", "face", "headshot", "selfie"],
    "animal": ["cat", "dog", "tiger", "lion", "bird", "horse", "fox", "wolf", "owl", "animal", "bear", "elephant"],
    "architecture": ["castle", "palace", "building", "city", "cathedral", "house", "temple", "skyscraper", "tower",
                     "interior", "street"],
    "vehicle": ["car", "ship", "submarine", "train", "spaceship", "airplane", "motorcycle", "boat", "robot"],
    "food": ["food", "cake", "pizza", "fruit", "burger", "coffee", "dish"],
    "fantasy": ["dragon", "wizard", "elf", "fairy", "magic", "fantasy", "knight"],
    "sci-fi": ["cyberpunk", "sci-fi", "scifi", "futuristic", "spaceship", "alien", "robot", "android"],
}


def _word_rules(groups: dict[str, list[str]], prefix: str) -> list[tuple[str, re.Pattern]]:
    return [
        (f"{prefix}:{tag}", re.compile(r"\b(" + "|".join(map(re.escape, words)) + r")\b", re.IGNORECASE))
        for tag, words in groups.items()
    ]


AUTO_TAG_RULES = _word_rules(STYLE_WORDS, "style") + _word_rules(CATEGORY_WORDS, "category")


def auto_tags(text: str) -> list[str]:
    """Style and category tags from keywords: crude, transparent, and marked `auto` in the table."""
    return [tag for tag, rx in AUTO_TAG_RULES if rx.search(text)]


class PromptDB:
    def __init__(self, store: Store):
        self.store = store

    # -- import ------------------------------------------------------------------------------

    def import_file(
        self,
        path: Path,
        *,
        source: str | None = None,
        licence: str | None = None,
        origin: str | None = None,
        mapping: dict[str, str] | None = None,
        max_chars: int = MAX_PROMPT_CHARS,
        encoding: str = "utf-8",
    ) -> ImportReport:
        """Add a file's prompts in one transaction. Re-importing the same file adds nothing;
        a prompt already collected from another source gains this source as well."""
        return self.import_read(read_table(path, mapping, max_chars=max_chars, encoding=encoding),
                                source=source, licence=licence, origin=origin)

    def import_read(self, result, *, source: str | None = None, licence: str | None = None,
                    origin: str | None = None) -> ImportReport:
        """Add the rows of a file already read (`read_table`), so a command can check its
        input before it opens, or creates, the database."""
        path = result.path
        refused: list[str] = []
        name = source or path.name
        groups: dict[str, list[Row]] = {}
        for row in result.rows:
            groups.setdefault(row.text, []).append(row)
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
                [name, licence, origin, str(path), _file_sha256(path), json.dumps(result.mapping), stamp],
            )
            source_id = conn.execute("SELECT id FROM sources WHERE name = ?", [name]).fetchone()[0]
            for text, rows in groups.items():
                pid = prompt_id(text)
                first = rows[0]
                conn.execute("INSERT OR IGNORE INTO prompts (id, text) VALUES (?, ?)", [pid, text])
                cur = conn.execute(
                    "INSERT OR IGNORE INTO collection (prompt_id, added_at, chars, words) VALUES (?, ?, ?, ?)",
                    [pid, stamp, len(text), len(text.split())],
                )
                if cur.rowcount:
                    added += 1
                else:
                    already += 1
                conn.execute(
                    """INSERT OR IGNORE INTO prompt_sources
                       (prompt_id, source_id, first_row, occurrences, external_id, licence, raw_text)
                       VALUES (?, ?, ?, ?, ?, ?, ?)""",
                    [pid, source_id, first.n, len(rows), first.fields.get("id"), first.fields.get("licence"),
                     first.raw if first.raw != text else None],
                )
                tags, bad = split_tags(first.fields.get("tags"))
                refused += [b for b in bad if b not in refused]
                for tag in tags:
                    conn.execute("INSERT OR IGNORE INTO tags (prompt_id, tag, origin) VALUES (?, ?, 'import')", [pid, tag])
        repeated = [rows for rows in groups.values() if len(rows) > 1]
        return ImportReport(
            source=name, path=str(path), format=result.format, rows=result.total, added=added, already=already,
            duplicate_rows=sum(len(r) - 1 for r in repeated),
            duplicates=[{"text": r[0].text, "rows": [x.n for x in r]} for r in repeated[:20]],
            rejected=dict(sorted(result.rejected.items())),
            rejected_examples=[{"row": n, "reason": why} for n, why in result.examples],
            columns=dict(result.mapping), tags_refused=refused,
        )

    def import_collection(self, folder: Path) -> list[ImportReport]:
        """Import every source listed in FOLDER/manifest.json (such as the shipped prompt_db/),
        each with the licence and origin the manifest records."""
        manifest_path = folder / "manifest.json"
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            sources = manifest["sources"]
        except FileNotFoundError:
            raise UserError(f"{folder} has no manifest.json (a collection folder lists its sources there)") from None
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{manifest_path} is not a collection manifest (a JSON object with a sources list)") from None
        reports = []
        for src in sources:
            reports.append(self.import_file(folder / src["file"], source=src["name"], licence=src.get("licence"),
                                            origin=src.get("origin"), mapping=src.get("map")))
        return reports

    # -- selection ---------------------------------------------------------------------------

    def select(self, sel: Selection = Selection(), embedder: Embedder | None = None) -> list[dict[str, Any]]:
        """Collected prompts matching every part of the selection, as rows with id and text
        (and `similarity` when ranked by --similar, `rank` order when searched)."""
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
        rows = self.store.query(sql, params)
        if sel.similar is not None:
            if embedder is None:
                raise ValueError("a similarity selection needs an embedder")
            rows = self.rank_similar(embedder, sel.similar, rows, sel.k)
        if sel.limit is not None:
            rows = rows[: sel.limit]
        return rows

    # -- embeddings --------------------------------------------------------------------------

    def ensure_embeddings(self, embedder: Embedder, ids: Sequence[str] | None = None,
                          progress: Progress | None = None, chunk: int = 256) -> int:
        """Embed the collected prompts that have no stored vector for this model; return how many."""
        rows = self.store.query(
            """SELECT c.prompt_id AS id, p.text FROM collection c JOIN prompts p ON p.id = c.prompt_id
               LEFT JOIN embeddings e ON e.prompt_id = c.prompt_id AND e.model = ?
               WHERE e.prompt_id IS NULL ORDER BY c.rowid""",
            [embedder.name],
        )
        if ids is not None:
            wanted = set(ids)
            rows = [r for r in rows if r["id"] in wanted]
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            vectors = embedder.encode([r["text"] for r in part])
            with self.store.transaction() as conn:
                conn.executemany(
                    "INSERT OR IGNORE INTO embeddings (prompt_id, model, dim, vector) VALUES (?, ?, ?, ?)",
                    [(r["id"], embedder.name, embedder.dim, to_blob(v)) for r, v in zip(part, vectors)],
                )
            if progress:
                progress(start + len(part), len(rows))
        return len(rows)

    def vectors(self, embedder: Embedder, ids: Sequence[str]) -> np.ndarray:
        self.ensure_embeddings(embedder, ids)
        found: dict[str, bytes] = {}
        for start in range(0, len(ids), 500):
            part = list(ids[start : start + 500])
            marks = ", ".join("?" for _ in part)
            for r in self.store.query(
                f"SELECT prompt_id, vector FROM embeddings WHERE model = ? AND prompt_id IN ({marks})",
                [embedder.name, *part],
            ):
                found[r["prompt_id"]] = r["vector"]
        return from_blobs([found[i] for i in ids], embedder.dim)

    def rank_similar(self, embedder: Embedder, text: str, rows: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
        if not rows:
            return []
        matrix = self.vectors(embedder, [r["id"] for r in rows])
        query = embedder.encode([normalize(text)])[0]
        sims = matrix @ query
        order = np.argsort(-sims, kind="stable")[:k]
        return [{**rows[i], "similarity": round(float(sims[i]), 4)} for i in order]

    def similar(self, embedder: Embedder, text: str, k: int = 10, sel: Selection = Selection()) -> list[dict[str, Any]]:
        """The k collected prompts nearest to `text` by cosine similarity of their embeddings."""
        return self.select(Selection(**{**asdict(sel), "similar": text, "k": k}), embedder)

    # -- duplicates --------------------------------------------------------------------------

    def exact_duplicates(self) -> list[dict[str, Any]]:
        """Prompts seen more than once: repeated rows in one file or the same text from several
        sources (texts are compared after normalisation)."""
        return self.store.query(
            """SELECT ps.prompt_id AS id, p.text, SUM(ps.occurrences) AS occurrences,
                      group_concat(so.name, ', ') AS sources
               FROM prompt_sources ps JOIN prompts p ON p.id = ps.prompt_id JOIN sources so ON so.id = ps.source_id
               JOIN collection c ON c.prompt_id = ps.prompt_id
               GROUP BY ps.prompt_id HAVING SUM(ps.occurrences) > 1 ORDER BY occurrences DESC, p.text"""
        )

    def near_duplicates(self, embedder: Embedder, threshold: float = DEFAULT_NEAR_THRESHOLD,
                        progress: Progress | None = None, block: int = 512) -> list[dict[str, Any]]:
        """Pairs (duplicate, kept) with cosine similarity >= threshold. Prompts are visited in the
        order they were added; each is a duplicate of the most similar earlier prompt that is
        itself kept, so every cluster keeps its oldest member."""
        if not 0 < threshold <= 1:
            raise UserError(f"--threshold must be in (0, 1], got {threshold}")
        rows = self.select(Selection())
        ids = [r["id"] for r in rows]
        self.ensure_embeddings(embedder, ids, progress)
        matrix = self.vectors(embedder, ids)
        kept = np.ones(len(ids), dtype=bool)
        pairs = []
        for start in range(0, len(ids), block):
            sims = matrix[start : start + block] @ matrix.T
            for j in range(start, min(start + block, len(ids))):
                row = sims[j - start, :j]
                hits = np.nonzero((row >= threshold) & kept[:j])[0]
                if hits.size:
                    best = int(hits[np.argmax(row[hits])])
                    kept[j] = False
                    pairs.append({"id": ids[j], "text": rows[j]["text"], "duplicate_of": ids[best],
                                  "kept_text": rows[best]["text"], "similarity": round(float(row[best]), 4)})
        return pairs

    def remove(self, pairs: list[dict[str, Any]], reason: str = "near-duplicate") -> int:
        stamp = now()
        with self.store.transaction() as conn:
            for p in pairs:
                conn.execute(
                    """UPDATE collection SET removed_at = ?, removed_reason = ?, duplicate_of = ?
                       WHERE prompt_id = ? AND removed_at IS NULL""",
                    [stamp, reason, p.get("duplicate_of"), p["id"]],
                )
        return len(pairs)

    # -- tags and splits ---------------------------------------------------------------------

    def tag(self, ids: Sequence[str], tags: Sequence[str], *, origin: str = "manual", remove: bool = False) -> int:
        tags = [normalize_tag(t) or t for t in tags]
        bad = [t for t in tags if not re.fullmatch(r"[\w.:/+-]{1,64}", t)]
        if bad:
            raise UserError(f"tag {bad[0]!r}: use letters, digits and . : / + - _ (at most 64)")
        with self.store.transaction() as conn:
            n = 0
            for pid in ids:
                for tag in tags:
                    if remove:
                        n += conn.execute("DELETE FROM tags WHERE prompt_id = ? AND tag = ?", [pid, tag]).rowcount
                    else:
                        n += conn.execute("INSERT OR IGNORE INTO tags (prompt_id, tag, origin) VALUES (?, ?, ?)",
                                          [pid, tag, origin]).rowcount
        return n

    def auto_tag(self, rows: list[dict[str, Any]]) -> int:
        with self.store.transaction() as conn:
            n = 0
            for r in rows:
                for tag in auto_tags(r["text"]):
                    n += conn.execute("INSERT OR IGNORE INTO tags (prompt_id, tag, origin) VALUES (?, ?, 'auto')",
                                      [r["id"], tag]).rowcount
        return n

    def split(self, rows: list[dict[str, Any]], *, name: str = "default", seed: int = 0,
              fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> dict[str, int]:
        if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
            raise UserError("split fractions must be three non-negative numbers that sum to 1 (train, validation, test)")
        if not re.fullmatch(r"[\w.-]{1,64}", name):
            raise UserError(f"split name {name!r}: use letters, digits, . - _")
        counts = dict.fromkeys(PARTS, 0)
        with self.store.transaction() as conn:
            for r in rows:
                part = split_part(seed, name, r["id"], fractions)
                counts[part] += 1
                conn.execute("INSERT OR REPLACE INTO splits (prompt_id, name, part, seed) VALUES (?, ?, ?, ?)",
                             [r["id"], name, part, seed])
        return counts

    # -- export, scoring, statistics ---------------------------------------------------------

    def describe(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Rows with provenance, tags and splits, for export."""
        out = []
        for start in range(0, len(rows), 500):
            part = rows[start : start + 500]
            marks = ", ".join("?" for _ in part)
            info = {r["prompt_id"]: r for r in self.store.query(
                f"SELECT * FROM collection_view WHERE prompt_id IN ({marks})", [r["id"] for r in part])}
            for r in part:
                v = info.get(r["id"], {})
                out.append({"id": r["id"], "text": r["text"], "sources": v.get("sources"), "licences": v.get("licences"),
                            "tags": v.get("tags"), "splits": v.get("splits"),
                            **({"similarity": r["similarity"]} if "similarity" in r else {})})
        return out

    def score(self, rows: list[dict[str, Any]], evaluator, seeds: Sequence[int], *,
              batch: int = 16, progress: Progress | None = None) -> list[dict[str, Any]]:
        """Render each prompt at each seed and score it against itself with every reward of the
        evaluator (a CachedEvaluator over this store); images and scores come from the cache
        when (variant, prompt, seed) was done before. `mean` is the first reward's."""
        from promptevo.evaluation.evaluator import Job

        variant = evaluator.final_variant
        jobs = [Job(text=r["text"], seed=s, target=r["text"], variant=variant) for r in rows for s in seeds]
        by_text = {r["text"]: r["id"] for r in rows}
        values: dict[str, list[float]] = {r["id"]: [] for r in rows}
        per_reward: dict[str, dict[str, list[float]]] = {r["id"]: {} for r in rows}
        cached_by = {r["id"]: 0 for r in rows}
        for start in range(0, len(jobs), batch):
            results = evaluator.evaluate(jobs[start : start + batch])
            with self.store.transaction() as conn:
                for res in results:
                    if res.error is not None:  # its worker failed on it: no score (scoring again retries it)
                        continue
                    pid = by_text[res.job.text]
                    for score_id in res.score_ids.values():
                        conn.execute("INSERT OR IGNORE INTO prompt_scores (prompt_id, score_id, seed) VALUES (?, ?, ?)",
                                     [pid, score_id, res.job.seed])
                    values[pid].append(res.score)
                    for name, value in res.scores.items():
                        per_reward[pid].setdefault(name, []).append(value)
                    cached_by[pid] += res.cached
            if progress:
                progress(min(start + batch, len(jobs)), len(jobs))
        return [{"id": r["id"], "text": r["text"], "scorer": evaluator.reward_names[0], "seeds": len(seeds),
                 "mean": round(statistics.fmean(values[r["id"]]), 4) if values[r["id"]] else None,
                 "rewards": {n: round(statistics.fmean(v), 4) for n, v in per_reward[r["id"]].items()},
                 "cached": cached_by[r["id"]]} for r in rows]

    def count(self) -> int:
        """Prompts in the collection (removed ones excluded)."""
        return int(self.store.one("SELECT COUNT(*) AS n FROM collection WHERE removed_at IS NULL")["n"])

    def stats(self) -> dict[str, Any]:
        q, one = self.store.query, self.store.one
        lengths = [r["chars"] for r in q("SELECT chars FROM collection WHERE removed_at IS NULL")]
        words = [r["words"] for r in q("SELECT words FROM collection WHERE removed_at IS NULL")]

        def summary(xs: list[int]) -> dict[str, Any]:
            if not xs:
                return {}
            return {"min": min(xs), "median": statistics.median(xs), "mean": round(statistics.fmean(xs), 1), "max": max(xs)}

        return {
            "prompts": one("SELECT COUNT(*) AS n FROM collection WHERE removed_at IS NULL")["n"],
            "removed": {r["removed_reason"]: r["n"] for r in q(
                "SELECT removed_reason, COUNT(*) AS n FROM collection WHERE removed_at IS NOT NULL GROUP BY 1")},
            "sources": q("""SELECT so.name, so.licence, so.origin, COUNT(ps.prompt_id) AS prompts,
                                   SUM(ps.occurrences) AS rows FROM sources so
                            LEFT JOIN prompt_sources ps ON ps.source_id = so.id GROUP BY so.id ORDER BY so.id"""),
            "chars": summary(lengths),
            "words": summary(words),
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


def normalize_tag(value: str) -> str | None:
    """A tag as stored: lower case, every run of other characters one hyphen ("World Knowledge"
    becomes world-knowledge, "Food & Beverage" food-beverage); None if nothing usable is left."""
    tag = re.sub(r"[^\w.:/+-]+", "-", value.strip().lower()).strip("-")
    return tag if 0 < len(tag) <= 64 else None


def split_tags(value: str | None) -> tuple[list[str], list[str]]:
    """(tags, refused values) from a cell like "Food & Beverage, outdoor; 2024"."""
    if not value:
        return [], []
    tags, refused = [], []
    for part in re.split(r"[,;|]", value):
        if not part.strip():
            continue
        tag = normalize_tag(part)
        (tags if tag else refused).append(tag or part.strip())
    return list(dict.fromkeys(tags)), refused


def _file_sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
