"""`promptevo db`: curate a prompt collection (import, duplicates, search, similar, tags, splits,
export, scoring, statistics). Every command takes --db PATH and --json."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from promptevo.cli.common import (
    DeviceOpt,
    HPSCheckpointOpt,
    JsonOpt,
    ProfileOpt,
    RenderModelOpt,
    build_profile,
    err,
    new_app,
    out,
    print_json,
    progress_bar,
)
from promptevo.embed import DEFAULT_EMBEDDER
from promptevo.errors import UserError
from promptevo.promptdb.collection import DEFAULT_NEAR_THRESHOLD, PromptDB, Selection
from promptevo.promptdb.prompt_io import (
    MAX_PROMPT_CHARS,
    parse_mapping,
    write_selection,
)

db_app = new_app(
    "Curate a prompt collection: import files with provenance, find duplicates, search by words or "
    "meaning, tag, split, export and score. `optimize --reference-db` draws reference prompts from it."
)

PromptDbOpt = Annotated[Path, typer.Option("--db", help="SQLite prompt database.", envvar="PROMPTEVO_PROMPT_DB")]
EmbedderOpt = Annotated[str, typer.Option(help="Sentence embedder: bundled all-MiniLM-L6-v2, a hub id or a folder.")]
SearchOpt = Annotated[str | None, typer.Option("--search", help="Only prompts containing these words (full-text).")]
TagOpt = Annotated[list[str] | None, typer.Option("--tag", help="Only prompts with this tag (repeatable: all must match).")]
SplitOpt = Annotated[str | None, typer.Option("--split", help="Only this split part: test, or NAME:test.")]
SourceOpt = Annotated[str | None, typer.Option("--source", help="Only prompts from this source.")]
IdOpt = Annotated[list[str] | None, typer.Option("--id", help="Only this prompt id (repeatable).")]
LimitOpt = Annotated[int | None, typer.Option(min=1, help="At most this many prompts.")]
RemovedOpt = Annotated[bool, typer.Option("--include-removed", help="Include prompts removed as duplicates.")]


def _selection(search=None, tag=None, split=None, source=None, ids=None, limit=None, include_removed=False,
               similar=None, k=10) -> Selection:
    from promptevo.promptdb.collection import normalize_tag

    return Selection(ids=tuple(ids or ()), search=search, tags=tuple(normalize_tag(t) or t for t in tag or ()), split=split, source=source,
                     limit=limit, include_removed=include_removed, similar=similar, k=k)


@contextlib.contextmanager
def _open(path: Path, readonly: bool = False, create: bool = False) -> Iterator[PromptDB]:
    """The prompt database; only the import commands create one (and its folder)."""
    from promptevo.storage.store import Store

    if create:
        Store.make_folder(path)
    elif not path.exists() and not path.is_dir():
        raise UserError(f"database {path} does not exist; create it with `promptevo db import FILE --db {path}`")
    with Store(path, readonly=readonly, create=create) as store:
        yield PromptDB(store)


def _embedder(name: str, device: str | None = None):
    from promptevo.embed import Embedder

    with err.status(f"loading sentence embedder {name}"):
        return Embedder(name, device=device or "cpu")


def _print_rows(rows: list[dict], columns: list[str], title: str | None = None) -> None:
    table = Table(*columns, title=title)
    for r in rows:
        table.add_row(*[("" if r.get(c) is None else str(r.get(c))) for c in columns])
    out.print(table)


@db_app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="txt (one prompt per line), JSON, JSONL, CSV, TSV or Parquet.")],
    db: PromptDbOpt = Path("prompts.db"),
    source: Annotated[str | None, typer.Option(help="Source name (default: the file name). Re-importing a source adds only new prompts.")] = None,
    licence: Annotated[str | None, typer.Option(help="Licence of the source's prompts, e.g. CC0-1.0.")] = None,
    origin: Annotated[str | None, typer.Option(help="Where the file came from (URL or citation).")] = None,
    map_: Annotated[list[str] | None, typer.Option("--map", help="FIELD=COLUMN for text, id, licence, tags (repeatable). Default text column: prompt, text or caption.")] = None,
    max_chars: Annotated[int, typer.Option(min=1, help="Longer prompts are rejected.")] = MAX_PROMPT_CHARS,
    encoding: Annotated[str, typer.Option(help="Text encoding of the file, e.g. latin-1 or cp1252.")] = "utf-8",
    auto_tag: Annotated[bool, typer.Option("--auto-tag", help="Also tag style and category by keywords.")] = False,
    as_json: JsonOpt = False,
):
    """Import prompts with their source and licence. Column names match in any case (a `Prompt`
    header is the prompt column). Text is normalised (Unicode NFKC, whitespace); empty, overlong,
    binary and malformed rows are counted and reported; exact duplicates are stored once and
    reported; tags are normalised (World Knowledge -> world-knowledge). The file is read and
    checked before the database is opened, so a bad file creates nothing."""
    from promptevo.promptdb.prompt_io import read_table

    mapping = parse_mapping(map_ or [])
    result = read_table(file, mapping, max_chars=max_chars, encoding=encoding)
    with _open(db, create=True) as pdb:
        report = pdb.import_read(result, source=source, licence=licence, origin=origin)
        tagged = pdb.auto_tag(pdb.select(Selection(source=report.source))) if auto_tag else 0
    data = {**report.to_dict(), "auto_tags": tagged}
    if as_json:
        print_json(data)
        return
    err.print(
        f"{report.path}: {report.rows:,} rows as {report.format}; [bold]{report.added:,} added[/], "
        f"{report.already:,} already in {db}, {report.duplicate_rows:,} exact duplicate rows"
        + (", rejected: " + ", ".join(f"{n:,} {why}" for why, n in report.rejected.items()) if report.rejected else "")
        + (f"; {tagged:,} auto tags" if auto_tag else "")
    )
    read_from = ", ".join(f"{k} from column {c!r}" for k, c in report.columns.items())
    if read_from and report.format in ("csv", "tsv", "json", "jsonl", "parquet"):
        err.print(f"  {read_from}")
    if report.tags_refused:
        err.print(f"  tags refused (nothing usable after normalising): {', '.join(map(repr, report.tags_refused[:10]))}")
    for d in report.duplicates[:5]:
        err.print(f"  duplicate rows {d['rows']}: {d['text'][:80]}")


@db_app.command("import-collection")
def import_collection(
    folder: Annotated[Path, typer.Argument(help="A collection folder with manifest.json, e.g. the shipped prompt_db/.")],
    db: PromptDbOpt = Path("prompts.db"),
    as_json: JsonOpt = False,
):
    """Import a whole collection (every source its manifest lists, with licence and origin).
    `promptevo db import-collection prompt_db --db reference.db` makes the default reference set."""
    if not (folder / "manifest.json").is_file():
        raise UserError(f"{folder} has no manifest.json (a collection folder lists its sources there)")
    with _open(db, create=True) as pdb:
        reports = pdb.import_collection(folder)
    if as_json:
        print_json([r.to_dict() for r in reports])
        return
    for r in reports:
        err.print(f"{r.source}: {r.rows:,} rows, {r.added:,} added, {r.already:,} already present")


@db_app.command()
def duplicates(
    db: PromptDbOpt = Path("prompts.db"),
    near: Annotated[bool, typer.Option("--near/--exact", help="Near duplicates by sentence embedding (default: exact).")] = False,
    threshold: Annotated[float, typer.Option(help="Cosine similarity from which two prompts are near duplicates.")] = DEFAULT_NEAR_THRESHOLD,
    remove: Annotated[bool, typer.Option("--remove", help="Remove near duplicates from the collection (kept in the database, marked removed).")] = False,
    embedder: EmbedderOpt = DEFAULT_EMBEDDER,
    as_json: JsonOpt = False,
):
    """Report exact duplicates (rows repeated in a file or across sources, stored once) or near
    duplicates; each near duplicate points at the earlier prompt it repeats."""
    if remove and not near:
        raise UserError("--remove applies to --near duplicates (exact duplicates are already stored once)")
    with _open(db, readonly=not near) as pdb:
        if not near:
            rows = pdb.exact_duplicates()
            if as_json:
                print_json(rows)
            else:
                _print_rows(rows, ["id", "occurrences", "sources", "text"], title=f"{len(rows)} prompts seen more than once")
            return
        model = _embedder(embedder)
        with progress_bar("embedding") as update:
            pairs = pdb.near_duplicates(model, threshold, progress=update)
        removed = pdb.remove(pairs) if remove else 0
    if as_json:
        print_json({"threshold": threshold, "pairs": pairs, "removed": removed})
        return
    _print_rows(pairs, ["similarity", "id", "duplicate_of", "text", "kept_text"], title=f"{len(pairs)} near duplicates (>= {threshold})")
    if remove:
        err.print(f"removed {removed} near duplicates from the collection")


@db_app.command()
def search(
    query: Annotated[str, typer.Argument(help="Words to look for (all must occur).")],
    db: PromptDbOpt = Path("prompts.db"),
    limit: Annotated[int, typer.Option(min=1)] = 20,
    tag: TagOpt = None,
    split: SplitOpt = None,
    source: SourceOpt = None,
    as_json: JsonOpt = False,
):
    """Full-text search (SQLite FTS5), best matches first."""
    with _open(db, readonly=True) as pdb:
        rows = pdb.select(_selection(search=query, tag=tag, split=split, source=source, limit=limit))
    if as_json:
        print_json(rows)
    else:
        _print_rows(rows, ["id", "text"], title=f"{len(rows)} matches")


@db_app.command()
def similar(
    text: Annotated[str, typer.Argument(help="A prompt; the nearest collected prompts are listed.")],
    db: PromptDbOpt = Path("prompts.db"),
    k: Annotated[int, typer.Option("-k", min=1, help="How many.")] = 10,
    tag: TagOpt = None,
    split: SplitOpt = None,
    source: SourceOpt = None,
    embedder: EmbedderOpt = DEFAULT_EMBEDDER,
    as_json: JsonOpt = False,
):
    """The k nearest prompts by meaning (cosine similarity of sentence embeddings). Embeddings
    missing from the database are computed once and stored. `optimize --reference-db` picks its
    reference prompts with exactly this."""
    model = _embedder(embedder)
    with _open(db) as pdb, progress_bar("embedding") as update:
        pdb.ensure_embeddings(model, progress=update)
        rows = pdb.similar(model, text, k, _selection(tag=tag, split=split, source=source))
    if as_json:
        print_json(rows)
    else:
        _print_rows(rows, ["similarity", "id", "text"], title=f"nearest to {text!r}")


@db_app.command()
def embed(
    db: PromptDbOpt = Path("prompts.db"),
    embedder: EmbedderOpt = DEFAULT_EMBEDDER,
    as_json: JsonOpt = False,
):
    """Compute and store the embeddings the collection lacks (similar and duplicates do it on demand)."""
    model = _embedder(embedder)
    with _open(db) as pdb, progress_bar("embedding") as update:
        n = pdb.ensure_embeddings(model, progress=update)
    if as_json:
        print_json({"model": model.name, "embedded": n})
    else:
        err.print(f"embedded {n:,} prompts with {model.name}")


@db_app.command()
def tag(
    tags: Annotated[list[str] | None, typer.Argument(help="Tags to add, e.g. style:photo category:landscape.")] = None,
    db: PromptDbOpt = Path("prompts.db"),
    auto: Annotated[bool, typer.Option("--auto", help="Tag style and category by keywords (origin 'auto').")] = False,
    remove: Annotated[bool, typer.Option("--remove", help="Remove the tags instead.")] = False,
    search: SearchOpt = None,
    tag_: Annotated[list[str] | None, typer.Option("--where-tag", help="Only prompts that already have this tag.")] = None,
    split: SplitOpt = None,
    source: SourceOpt = None,
    ids: IdOpt = None,
    limit: LimitOpt = None,
    as_json: JsonOpt = False,
):
    """Tag a selection of prompts (all prompts when no selection is given)."""
    if not tags and not auto:
        raise UserError("give tags to add, or --auto")
    with _open(db) as pdb:
        rows = pdb.select(_selection(search=search, tag=tag_, split=split, source=source, ids=ids, limit=limit))
        changed = pdb.tag([r["id"] for r in rows], tags or [], remove=remove) if tags else 0
        if auto:
            changed += pdb.auto_tag(rows)
    if as_json:
        print_json({"prompts": len(rows), "changed": changed})
    else:
        err.print(f"{len(rows):,} prompts selected; {changed:,} tags {'removed' if remove else 'added'}")


@db_app.command()
def split(
    db: PromptDbOpt = Path("prompts.db"),
    name: Annotated[str, typer.Option(help="Name of the split set; several can coexist.")] = "default",
    seed: Annotated[int, typer.Option(help="Seed of the assignment.")] = 0,
    fractions: Annotated[str, typer.Option(help="train,validation,test fractions.")] = "0.8,0.1,0.1",
    search: SearchOpt = None,
    tag: TagOpt = None,
    source: SourceOpt = None,
    as_json: JsonOpt = False,
):
    """Assign train / validation / test parts from a hash of (name, seed, prompt): the same every
    time, and prompts imported later never move the ones already assigned."""
    try:
        fracs = [float(x) for x in fractions.split(",")]
    except ValueError:
        raise UserError(f"--fractions takes three numbers like 0.8,0.1,0.1, got {fractions!r}") from None
    with _open(db) as pdb:
        rows = pdb.select(_selection(search=search, tag=tag, source=source))
        counts = pdb.split(rows, name=name, seed=seed, fractions=fracs)
    if as_json:
        print_json({"name": name, "seed": seed, "counts": counts})
    else:
        err.print(f"split {name!r} (seed {seed}): " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))


@db_app.command()
def export(
    out_file: Annotated[Path, typer.Argument(metavar="OUT", help="Output file: .txt, .jsonl or .csv.")],
    db: PromptDbOpt = Path("prompts.db"),
    fmt: Annotated[str | None, typer.Option("--format", help="txt, jsonl or csv (default: from the file name).")] = None,
    search: SearchOpt = None,
    tag: TagOpt = None,
    split: SplitOpt = None,
    source: SourceOpt = None,
    ids: IdOpt = None,
    limit: LimitOpt = None,
    include_removed: RemovedOpt = False,
    as_json: JsonOpt = False,
):
    """Export a selection with its provenance (sources, licences, tags, splits)."""
    with _open(db, readonly=True) as pdb:
        rows = pdb.describe(pdb.select(_selection(search=search, tag=tag, split=split, source=source, ids=ids,
                                                  limit=limit, include_removed=include_removed)))
    n = write_selection(rows, out_file, fmt)
    if as_json:
        print_json({"file": str(out_file), "prompts": n})
    else:
        err.print(f"wrote {n:,} prompts to {out_file}")


@db_app.command()
def score(
    db: PromptDbOpt = Path("prompts.db"),
    seeds: Annotated[int, typer.Option(min=1, help="Images per prompt (seeds 0..N-1).")] = 1,
    batch: Annotated[int, typer.Option(min=1, help="Images per render-and-score batch.")] = 16,
    search: SearchOpt = None,
    tag: TagOpt = None,
    split: SplitOpt = None,
    source: SourceOpt = None,
    ids: IdOpt = None,
    limit: LimitOpt = None,
    profile: ProfileOpt = "tiny",
    device: DeviceOpt = None,
    render_model: RenderModelOpt = None,
    hps_checkpoint: HPSCheckpointOpt = None,
    workers: Annotated[str, typer.Option(help="local (this process) or ray (Ray Data: a pool of actors, one per GPU, renders and scores; this process writes).")] = "local",
    ray_address: Annotated[str | None, typer.Option(help="With --workers ray: a running cluster (auto, or ray://HOST:PORT); default: a local Ray.")] = None,
    ray_actors: Annotated[int | None, typer.Option(min=1, help="With --workers ray: actors (default: one per GPU, or 1).")] = None,
    as_json: JsonOpt = False,
):
    """Render and score a selection against each prompt itself; images and scores are cached by
    (render config, prompt, seed), so scoring again renders nothing."""
    from promptevo.evaluation.components import build_components
    from promptevo.evaluation.evaluator import CachedEvaluator, EvaluatorSpec, Job

    if workers not in ("local", "ray"):
        raise UserError(f"--workers is local or ray (got {workers!r})")
    prof = build_profile(profile, device=device, render_model=render_model, hps_checkpoint=hps_checkpoint)
    with _open(db) as pdb:
        rows = pdb.select(_selection(search=search, tag=tag, split=split, source=source, ids=ids, limit=limit))
        if not rows:
            raise UserError("the selection is empty")
        if workers == "ray":  # Ray Data fills the cache; the pass below then reads it
            from promptevo.evaluation.ray_workers import (
                RayEvaluator,
                bulk_evaluate,
                import_ray,
            )

            import_ray()
            spec = EvaluatorSpec(render=prof.render, rewards=prof.rewards)
            with err.status("starting Ray"):
                probe = RayEvaluator(spec, address=ray_address, actors=1)  # names, versions, variants; missing weights fail here
            evaluator = CachedEvaluator(pdb.store, probe)
            jobs = [Job(text=r["text"], seed=s, target=r["text"], variant=probe.final_variant) for r in rows for s in range(seeds)]
            probe.close_actors()
            with progress_bar("render and score on Ray") as update:
                bulk_evaluate(spec, evaluator.missing(jobs), evaluator, batch=batch, actors=ray_actors, progress=update)
            if evaluator.missing(jobs):  # Ray Data returned fewer results than it was given
                raise UserError("Ray returned no result for some images; run `db score` again to finish them")
        else:
            with err.status("loading renderer and rewards"):
                evaluator = CachedEvaluator(pdb.store, build_components(prof, llm=False).evaluator)
        with progress_bar("render and score") as update:
            results = pdb.score(rows, evaluator, list(range(seeds)), batch=batch, progress=update)
    if as_json:
        print_json(results)
    else:
        _print_rows(results, ["id", "mean", "seeds", "cached", "text"], title=f"{evaluator.reward_names[0]} scores")


@db_app.command()
def stats(db: PromptDbOpt = Path("prompts.db"), as_json: JsonOpt = False):
    """Counts, sources and licences, lengths, tags, splits, embeddings and scores."""
    with _open(db, readonly=True) as pdb:
        data = pdb.stats()
    if as_json:
        print_json(data)
        return
    out.print(f"[bold]{data['prompts']:,}[/] prompts" + "".join(f", {n:,} removed ({why})" for why, n in data["removed"].items()))
    _print_rows(data["sources"], ["name", "licence", "prompts", "rows", "origin"], title="sources")
    out.print(f"characters: {data['chars']}\nwords: {data['words']}")
    for key in ("tags", "splits", "embeddings"):
        if data[key]:
            out.print(f"{key}: " + ", ".join(f"{k} {v:,}" for k, v in data[key].items()))
    if data["scores"]:
        _print_rows(data["scores"], ["scorer", "prompts", "images", "mean", "min", "max"], title="scores")


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
