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
from promptevo.hashing import file_sha256, sha256_hex
from promptevo.promptdb.prompt_io import MAX_PROMPT_CHARS, Row, normalize, read_table
from promptevo.storage.prompt_tables import NewPrompt, PromptTables, Selection
from promptevo.storage.store import Store

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
    "animal": ["animal", "pet", "wildlife", "creature", "cat", "kitten", "kitty", "dog", "puppy", "corgi", "poodle", "terrier",
               "retriever", "husky", "dachshund", "tiger", "lion", "leopard", "cheetah", "jaguar", "panther", "lynx", "bird",
               "horse", "pony", "donkey", "zebra", "fox", "wolf", "wolves", "owl", "bear", "panda", "koala", "elephant",
               "giraffe", "rhino", "rhinoceros", "hippo", "hippopotamus", "monkey", "ape", "gorilla", "chimpanzee",
               "orangutan", "sloth", "kangaroo", "raccoon", "squirrel", "rabbit", "bunny", "hare", "hedgehog", "mouse",
               "mice", "rat", "hamster", "otter", "beaver", "bat", "deer", "moose", "elk", "camel", "llama", "alpaca",
               "cow", "bull", "ox", "oxen", "pig", "sheep", "lamb", "goat", "chicken", "hen", "rooster", "chick", "duck",
               "duckling", "goose", "geese", "swan", "turkey", "eagle", "hawk", "falcon", "parrot", "penguin", "flamingo",
               "peacock", "pigeon", "crow", "raven", "hummingbird", "fish", "goldfish", "shark", "whale", "dolphin",
               "octopus", "squid", "jellyfish", "crab", "lobster", "shrimp", "seal", "walrus", "turtle", "tortoise",
               "frog", "toad", "snake", "lizard", "gecko", "iguana", "chameleon", "crocodile", "alligator", "dinosaur",
               "butterfly", "butterflies", "bee", "ant", "spider", "beetle", "ladybug", "dragonfly", "snail", "worm"],
    "architecture": ["castle", "palace", "building", "city", "cathedral", "house", "temple", "skyscraper", "tower",
                     "interior", "street"],
    "vehicle": ["car", "ship", "submarine", "train", "spaceship", "airplane", "motorcycle", "boat", "robot"],
    "food": ["food", "cake", "pizza", "fruit", "burger", "coffee", "dish"],
    "fantasy": ["dragon", "wizard", "elf", "fairy", "magic", "fantasy", "knight"],
    "sci-fi": ["cyberpunk", "sci-fi", "scifi", "futuristic", "spaceship", "alien", "robot", "android"],
}


def _word_rules(groups: dict[str, list[str]], prefix: str) -> list[tuple[str, re.Pattern]]:
    """One pattern per tag; a single word also matches its regular plural (cats, foxes, puppies);
    irregular plurals are listed as words."""

    def form(word: str) -> str:
        if " " in word or "-" in word or not word.isalpha():
            return re.escape(word)
        if word.endswith("y") and word[-2:-1] not in "aeiou":
            return re.escape(word[:-1]) + "(?:y|ies)"
        return re.escape(word) + "(?:s|es)?"

    return [
        (f"{prefix}:{tag}", re.compile(r"\b(" + "|".join(map(form, words)) + r")\b", re.IGNORECASE))
        for tag, words in groups.items()
    ]


AUTO_TAG_RULES = _word_rules(STYLE_WORDS, "style") + _word_rules(CATEGORY_WORDS, "category")


def auto_tags(text: str) -> list[str]:
    """Style and category tags from keywords: crude, transparent, and marked `auto` in the table."""
    return [tag for tag, rx in AUTO_TAG_RULES if rx.search(text)]


class PromptDB:
    def __init__(self, store: Store):
        self.store = store
        self.tables = PromptTables(store)

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
        prompts = []
        for text, rows in groups.items():
            first = rows[0]
            tags, bad = split_tags(first.fields.get("tags"))
            refused += [b for b in bad if b not in refused]
            prompts.append(NewPrompt(text, first.n, len(rows), first.fields.get("id"), first.fields.get("licence"),
                                     first.raw if first.raw != text else None, tags))
        added, already = self.tables.add_source(prompts, name=name, licence=licence, origin=origin, path=path,
                                                file_sha256=file_sha256(path), mapping=result.mapping)
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
        rows = self.tables.select(sel)
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
        rows = self.tables.unembedded(embedder.name)
        if ids is not None:
            wanted = set(ids)
            rows = [r for r in rows if r["id"] in wanted]
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            vectors = embedder.encode([r["text"] for r in part])
            self.tables.add_embeddings(embedder.name, embedder.dim, [(r["id"], to_blob(v)) for r, v in zip(part, vectors)])
            if progress:
                progress(start + len(part), len(rows))
        return len(rows)

    def vectors(self, embedder: Embedder, ids: Sequence[str]) -> np.ndarray:
        self.ensure_embeddings(embedder, ids)
        found = self.tables.embeddings(embedder.name, ids)
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
        return self.tables.exact_duplicates()

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
        self.tables.remove(pairs, reason)
        return len(pairs)

    # -- tags and splits ---------------------------------------------------------------------

    def tag(self, ids: Sequence[str], tags: Sequence[str], *, origin: str = "manual", remove: bool = False) -> int:
        tags = [normalize_tag(t) or t for t in tags]
        bad = [t for t in tags if not re.fullmatch(r"[\w.:/+-]{1,64}", t)]
        if bad:
            raise UserError(f"tag {bad[0]!r}: use letters, digits and . : / + - _ (at most 64)")
        return self.tables.set_tags([(pid, tag) for pid in ids for tag in tags], origin=origin, remove=remove)

    def auto_tag(self, rows: list[dict[str, Any]]) -> int:
        return self.tables.set_tags([(r["id"], tag) for r in rows for tag in auto_tags(r["text"])], origin="auto")

    def split(self, rows: list[dict[str, Any]], *, name: str = "default", seed: int = 0,
              fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> dict[str, int]:
        if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
            raise UserError("split fractions must be three non-negative numbers that sum to 1 (train, validation, test)")
        if not re.fullmatch(r"[\w.-]{1,64}", name):
            raise UserError(f"split name {name!r}: use letters, digits, . - _")
        counts = dict.fromkeys(PARTS, 0)
        assigned = []
        for r in rows:
            part = split_part(seed, name, r["id"], fractions)
            counts[part] += 1
            assigned.append((r["id"], name, part, seed))
        self.tables.set_splits(assigned)
        return counts

    # -- export, scoring, statistics ---------------------------------------------------------

    def describe(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Rows with provenance, tags and splits, for export."""
        info = self.tables.provenance([r["id"] for r in rows])
        out = []
        for r in rows:
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
            links = []
            for res in results:
                if res.error is not None:  # its worker failed on it: no score (scoring again retries it)
                    continue
                pid = by_text[res.job.text]
                links += [(pid, score_id, res.job.seed) for score_id in res.score_ids.values()]
                values[pid].append(res.score)
                for name, value in res.scores.items():
                    per_reward[pid].setdefault(name, []).append(value)
                cached_by[pid] += res.cached
            self.tables.add_prompt_scores(links)
            if progress:
                progress(min(start + batch, len(jobs)), len(jobs))
        return [{"id": r["id"], "text": r["text"], "scorer": evaluator.reward_names[0], "seeds": len(seeds),
                 "mean": round(statistics.fmean(values[r["id"]]), 4) if values[r["id"]] else None,
                 "rewards": {n: round(statistics.fmean(v), 4) for n, v in per_reward[r["id"]].items()},
                 "cached": cached_by[r["id"]]} for r in rows]

    def count(self) -> int:
        """Prompts in the collection (removed ones excluded)."""
        return self.tables.count()

    def stats(self) -> dict[str, Any]:
        rows = self.tables.lengths()

        def summary(xs: list[int]) -> dict[str, Any]:
            if not xs:
                return {}
            return {"min": min(xs), "median": statistics.median(xs), "mean": round(statistics.fmean(xs), 1), "max": max(xs)}

        counts = self.tables.counts()
        return {"prompts": counts["prompts"], "removed": counts["removed"], "sources": counts["sources"],
                "chars": summary([r["chars"] for r in rows]), "words": summary([r["words"] for r in rows]),
                **{k: counts[k] for k in ("tags", "splits", "embeddings", "scores")}}


def normalize_tag(value: str) -> str | None:
    """A tag as stored: lower case, every run of other characters one hyphen ("World Knowledge"
    becomes world-knowledge, "Food & Beverage" food-beverage); None if nothing usable is left."""
    tag = re.sub(r"[^\w.:/+-]+", "-", value.strip().lower()).strip("-")
    return tag if 0 < len(tag) <= 64 else None


def split_tags(value: str | None) -> tuple[list[str], list[str]]:
    """(tags, refused values) from a cell like "Food & Beverage, outdoor; 2024"."""
    if not value:
        return [], []
    tags: list[str] = []
    refused: list[str] = []
    for part in re.split(r"[,;|]", value):
        if not part.strip():
            continue
        tag = normalize_tag(part)
        (tags if tag else refused).append(tag or part.strip())
    return list(dict.fromkeys(tags)), refused
