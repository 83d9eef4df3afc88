"""Rebuild the shipped reference collection (prompt_db/) from its openly licensed sources.

    .venv/bin/python prompt_db/build.py --from ../shared/data/diffusiondb-sample

Sources (both files as published; see README.md for where they come from):
  refl_data.json          DiffusionDB prompts (CC0-1.0) as sampled by ImageReward for ReFL training
  benchmark-prompts.json  ImageReward's 100 benchmark prompts (Apache-2.0)

Curation, in order: Unicode/whitespace normalisation; rows over --max-chars dropped; prompts
with a word from BLOCKLIST dropped; exact duplicates merged; near duplicates (cosine >=
--threshold on all-MiniLM-L6-v2 embeddings) removed, keeping the earliest. The output is
deterministic: the same inputs give byte-identical files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import tempfile
from pathlib import Path

from promptevo.embed import Embedder
from promptevo.promptdb.collection import PromptDB, Selection
from promptevo.storage.store import Store

HERE = Path(__file__).resolve().parent

SOURCES = [
    {
        "name": "diffusiondb",
        "input": "refl_data.json",
        "map": {"text": "text", "id": "image"},
        "licence": "CC0-1.0",
        "origin": "DiffusionDB (Wang et al. 2022, https://huggingface.co/datasets/poloclub/diffusiondb), "
                  "prompts as sampled in ImageReward's ReFL training data (refl_data.json, "
                  "https://github.com/THUDM/ImageReward)",
    },
    {
        "name": "imagereward-benchmark",
        "input": "benchmark-prompts.json",
        "map": {"text": "prompt", "id": "id"},
        "licence": "Apache-2.0",
        "origin": "ImageReward benchmark prompts (Xu et al. 2023, https://github.com/THUDM/ImageReward, "
                  "benchmark/benchmark-prompts.json); drawn from DiffusionDB",
    },
]

# Sexual and gore terms: a reference set fed to an LLM and shown in reports should be safe to show.
BLOCKLIST = [
    "nsfw", "nude", "nudes", "naked", "nudity", "topless", "sex", "sexy", "sexual", "porn", "pornographic",
    "hentai", "erotic", "erotica", "lingerie", "boobs", "breasts", "nipples", "genitals", "fetish", "bdsm",
    "gore", "gory", "corpse", "decapitated", "dismembered", "mutilated", "suicide", "rape",
]
_BLOCK = re.compile(r"\b(" + "|".join(BLOCKLIST) + r")\b", re.IGNORECASE)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(source_dir: Path, out_dir: Path, *, threshold: float = 0.92, max_chars: int = 400, limit: int | None = None,
          embedder: Embedder | None = None) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "build.db") as store:
        pdb = PromptDB(store)
        inputs = {}
        for src in SOURCES:
            path = source_dir / src["input"]
            if not path.is_file():
                sys.exit(f"missing source file {path}")
            if limit:  # a small deterministic slice, for tests of this script
                rows = json.loads(path.read_text(encoding="utf-8"))[:limit]
                path = Path(tmp) / src["input"]
                path.write_text(json.dumps(rows), encoding="utf-8")
            inputs[src["name"]] = {"file": src["input"], "sha256": sha256_file(path)}
            report = pdb.import_file(path, source=src["name"], licence=src["licence"], origin=src["origin"],
                                     mapping=src["map"], max_chars=max_chars)
            inputs[src["name"]].update(rows=report.rows, rejected=report.rejected, exact_duplicate_rows=report.duplicate_rows)
        blocked = [{"id": r["id"]} for r in pdb.select() if _BLOCK.search(r["text"])]
        pdb.remove(blocked, reason="blocklist")
        pairs = pdb.near_duplicates(embedder or Embedder(), threshold)
        pdb.remove(pairs, reason="near-duplicate")
        manifest = {
            "name": "promptevo reference prompts",
            "built_by": "prompt_db/build.py",
            "curation": {"max_chars": max_chars, "blocklist_words": len(BLOCKLIST), "blocked": len(blocked),
                         "near_duplicate_threshold": threshold, "near_duplicates_removed": len(pairs),
                         "embedder": "all-MiniLM-L6-v2", "limit": limit},
            "sources": [],
        }
        for src in SOURCES:
            rows = store.query(
                """SELECT p.text, ps.external_id FROM prompt_sources ps JOIN prompts p ON p.id = ps.prompt_id
                   JOIN sources s ON s.id = ps.source_id JOIN collection c ON c.prompt_id = ps.prompt_id
                   WHERE s.name = ? AND c.removed_at IS NULL ORDER BY ps.first_row""",
                [src["name"]],
            )
            file = f"{src['name']}.jsonl"
            with open(out_dir / file, "w", encoding="utf-8", newline="\n") as fh:
                for r in rows:
                    fh.write(json.dumps({"prompt": r["text"], "source_id": r["external_id"]}, ensure_ascii=False) + "\n")
            manifest["sources"].append({
                "name": src["name"], "file": file, "licence": src["licence"], "origin": src["origin"],
                "map": {"text": "prompt", "id": "source_id"}, "prompts": len(rows), "input": inputs[src["name"]],
            })
        manifest["prompts"] = len(pdb.select(Selection()))
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from", dest="source_dir", type=Path, required=True, help="folder with the source files")
    ap.add_argument("--out", type=Path, default=HERE, help="output folder (default: prompt_db/)")
    ap.add_argument("--threshold", type=float, default=0.92, help="near-duplicate cosine similarity")
    ap.add_argument("--max-chars", type=int, default=400, help="longer prompts are dropped")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N rows of each source (tests)")
    args = ap.parse_args()
    manifest = build(args.source_dir, args.out, threshold=args.threshold, max_chars=args.max_chars, limit=args.limit)
    print(json.dumps({"prompts": manifest["prompts"], **manifest["curation"]}, indent=2))


if __name__ == "__main__":
    main()
