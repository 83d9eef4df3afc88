"""The prompt collection: import with provenance, duplicates, search, tags, splits, export,
scoring, Datasette, and the optimiser's use of it as a reference database."""

import asyncio
import csv
import json
import os
import subprocess
import sys

import pytest

from promptevo.errors import UserError
from promptevo.promptdb.collection import PromptDB, Selection, auto_tags, split_part
from promptevo.promptdb.prompt_io import normalize, read_table
from promptevo.storage.store import Store

from .conftest import shared_data


@pytest.fixture(scope="session")
def embedder():
    from promptevo.embed import Embedder

    return Embedder()


@pytest.fixture(scope="session")
def lexica_db(tmp_path_factory, embedder):
    """The seed paper's 1,000 Lexica prompts, imported and embedded once for the session."""
    path = tmp_path_factory.mktemp("lexica") / "lexica.db"
    with Store(path) as store:
        pdb = PromptDB(store)
        pdb.import_file(shared_data("seed-paper", "lexica_prompts.jsonl"), source="lexica", licence="unknown (tests only)")
        pdb.ensure_embeddings(embedder)
    return path


def test_import_twice_adds_nothing_and_reports_exact_duplicates(tmp_path):
    lines = shared_data("seed-paper", "lexica_prompts.jsonl").read_text(encoding="utf-8").splitlines()
    texts = [normalize(json.loads(line)["prompt"]) for line in lines]
    with Store(tmp_path / "p.db") as store:
        pdb = PromptDB(store)
        first = pdb.import_file(shared_data("seed-paper", "lexica_prompts.jsonl"))
        count = store.one("SELECT COUNT(*) AS n FROM collection")["n"]
        second = pdb.import_file(shared_data("seed-paper", "lexica_prompts.jsonl"))
        assert store.one("SELECT COUNT(*) AS n FROM collection")["n"] == count
        assert store.one("SELECT COUNT(*) AS n FROM prompt_sources")["n"] == count
    assert first.rows == len(lines) == 1000
    assert count == first.added == len(set(texts))
    assert first.duplicate_rows == len(texts) - len(set(texts)) > 0
    assert second.added == 0 and second.already == count and second.duplicate_rows == first.duplicate_rows
    for group in first.duplicates:
        assert len({texts[n - 1] for n in group["rows"]}) == 1 and len(group["rows"]) > 1


def test_formats_mapping_normalisation_and_rejections(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.txt").write_bytes(
        "a  waterfall\n\n  a\u00a0waterfall \nbad \x00 row\n".encode() + b"\xff\xfe broken\n" + ("x" * 3000 + "\n").encode()
    )
    with open(tmp_path / "b.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["caption", "licence", "ref"])
        w.writerows([["ａ samurai", "CC0-1.0", "s1"], ["", "CC0-1.0", "s2"], ["a fox", "CC-BY-4.0", "s3"]])
    (tmp_path / "c.tsv").write_text("prompt\tkind\na lighthouse\tphoto\n", encoding="utf-8")
    (tmp_path / "d.jsonl").write_text('{"prompt": "a castle"}\nnot json\n{"other": 1}\n"a bare string"\n', encoding="utf-8")
    (tmp_path / "e.json").write_text(json.dumps([{"text": "a desert", "image": "001"}]), encoding="utf-8")
    pq.write_table(pa.table({"prompt": ["a tiger", "a tiger ", None], "tags": ["animal,style:photo", "", ""]}), tmp_path / "f.parquet")
    with Store(tmp_path / "p.db") as store:
        pdb = PromptDB(store)
        a = pdb.import_file(tmp_path / "a.txt")
        assert a.added == 1 and a.duplicate_rows == 1  # whitespace and NBSP normalised to one prompt
        assert a.rejected == {"binary": 1, "not UTF-8": 1, "empty": 1, "overlong": 1}
        b = pdb.import_file(tmp_path / "b.csv", mapping={"text": "caption", "licence": "licence", "id": "ref"}, licence="mixed")
        assert b.added == 2 and b.rejected == {"empty": 1}
        row = store.one("""SELECT p.text, ps.licence, ps.external_id, ps.raw_text FROM prompt_sources ps
                           JOIN prompts p ON p.id = ps.prompt_id WHERE ps.external_id = 's1'""")
        assert row == {"text": "a samurai", "licence": "CC0-1.0", "external_id": "s1", "raw_text": "ａ samurai"}  # NFKC
        assert pdb.import_file(tmp_path / "c.tsv").added == 1
        d = pdb.import_file(tmp_path / "d.jsonl")
        assert d.added == 2 and d.rejected == {"malformed": 1, "no text field": 1}
        assert pdb.import_file(tmp_path / "e.json").added == 1
        f = pdb.import_file(tmp_path / "f.parquet", mapping={"tags": "tags"})
        assert f.added == 1 and f.duplicate_rows == 1 and f.rejected == {"no text field": 1}
        assert {t["tag"] for t in store.query("SELECT tag FROM tags")} == {"animal", "style:photo"}
        view = store.query("SELECT text, sources, licences FROM collection_view WHERE text = 'a fox'")
        assert view == [{"text": "a fox", "sources": "b.csv", "licences": "CC-BY-4.0"}]
    with pytest.raises(UserError, match="no column 'nope'"):
        read_table(tmp_path / "b.csv", {"text": "nope"})
    (tmp_path / "g.parquet").write_bytes(b"PAR1 garbage")
    with pytest.raises(UserError, match="not a readable Parquet"):
        read_table(tmp_path / "g.parquet")


def test_full_text_search_ranks_and_survives_punctuation(lexica_db):
    with Store(lexica_db, readonly=True) as store:
        pdb = PromptDB(store)
        rows = pdb.select(Selection(search="waterfall"))
        assert rows and all("waterfall" in r["text"].lower() for r in rows)
        assert pdb.select(Selection(search='"waterfall" * ^')) == rows  # quotes and operators are not syntax
        with pytest.raises(UserError):
            pdb.select(Selection(search="!!!"))


def test_similar_ranks_waterfalls_first_and_embeds_once(tmp_path, lexica_db, embedder):
    with Store(lexica_db) as store:
        pdb = PromptDB(store)
        before = embedder.encoded
        top = pdb.similar(embedder, "A waterfall", k=5)
        assert embedder.encoded == before + 1  # only the query: the collection's vectors are stored
        assert all("waterfall" in r["text"].lower() for r in top[:3])
        assert [r["similarity"] for r in top] == sorted((r["similarity"] for r in top), reverse=True)
        assert pdb.ensure_embeddings(embedder) == 0


def test_db_similar_command_ranks_waterfall_prompts_first(lexica_db):
    out = subprocess.run(
        [sys.executable, "-m", "promptevo", "db", "similar", "A waterfall", "--db", str(lexica_db), "-k", "3", "--json"],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert len(rows) == 3 and all("waterfall" in r["text"].lower() for r in rows)


def test_near_duplicates_found_and_removed(tmp_path, embedder):
    prompts = ["a red fox sleeping in fresh snow", "a red fox asleep in the fresh snow", "A red fox sleeping in fresh snow!",
               "a lighthouse in a storm at night", "a bowl of ramen, studio photo"]
    (tmp_path / "p.txt").write_text("\n".join(prompts), encoding="utf-8")
    with Store(tmp_path / "p.db") as store:
        pdb = PromptDB(store)
        pdb.import_file(tmp_path / "p.txt")
        pairs = pdb.near_duplicates(embedder, threshold=0.9)
        assert {p["text"] for p in pairs} == set(prompts[1:3])
        assert {p["kept_text"] for p in pairs} == {prompts[0]}
        pdb.remove(pairs)
        assert [r["text"] for r in pdb.select()] == [prompts[0], *prompts[3:]]
        assert pdb.stats()["removed"] == {"near-duplicate": 2}
        assert len(pdb.select(Selection(include_removed=True))) == 5


def test_tags_splits_and_export(tmp_path):
    prompts = [f"a photo of a mountain lake number {i}" for i in range(60)] + ["an anime dragon"]
    (tmp_path / "p.txt").write_text("\n".join(prompts), encoding="utf-8")
    assert auto_tags("an oil painting of a castle") == ["style:painting", "category:architecture"]
    with Store(tmp_path / "p.db") as store:
        pdb = PromptDB(store)
        pdb.import_file(tmp_path / "p.txt", licence="CC0-1.0")
        rows = pdb.select()
        pdb.auto_tag(rows)
        assert [r["text"] for r in pdb.select(Selection(tags=("style:anime",)))] == ["an anime dragon"]
        with pytest.raises(UserError):
            pdb.tag([rows[0]["id"]], ["&&&"])  # nothing usable once normalised
        assert pdb.tag([rows[0]["id"]], ["Two Words"]) == 1  # normalised to two-words, not refused
        counts = pdb.split(rows, seed=1)
        assert sum(counts.values()) == 61 and counts["train"] > counts["test"] > 0
        parts = {r["prompt_id"]: r["part"] for r in store.query("SELECT * FROM splits")}
        pdb.split(rows, seed=1)
        assert {r["prompt_id"]: r["part"] for r in store.query("SELECT * FROM splits")} == parts
        other = {r["id"]: split_part(2, "default", r["id"], (0.8, 0.1, 0.1)) for r in rows}
        assert other != parts  # another seed, another assignment
        test = pdb.select(Selection(split="test"))
        assert {r["id"] for r in test} == {p for p, part in parts.items() if part == "test"}
        described = pdb.describe(test)
    from promptevo.promptdb.prompt_io import write_selection

    write_selection(described, tmp_path / "test.jsonl")
    write_selection(described, tmp_path / "test.csv")
    write_selection(described, tmp_path / "test.txt")
    back = [json.loads(line) for line in (tmp_path / "test.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [b["text"] for b in back] == [r["text"] for r in test]
    assert all(b["licences"] == "CC0-1.0" and b["splits"] == "default:test" for b in back)
    assert (tmp_path / "test.txt").read_text(encoding="utf-8").splitlines() == [r["text"] for r in test]
    with open(tmp_path / "test.csv", newline="", encoding="utf-8") as fh:
        assert [r["text"] for r in csv.DictReader(fh)] == [r["text"] for r in test]


def test_score_is_cached_and_summarised(tmp_path, renderer, evaluator):
    from promptevo.evaluation.evaluator import CachedEvaluator

    (tmp_path / "p.txt").write_text("a waterfall\na samurai\na lighthouse\n", encoding="utf-8")
    with Store(tmp_path / "p.db") as store:
        pdb = PromptDB(store)
        pdb.import_file(tmp_path / "p.txt")
        rows = pdb.select()
        cached = CachedEvaluator(store, evaluator)
        calls = renderer.pipeline_calls
        first = pdb.score(rows, cached, [0, 1], batch=4)
        assert renderer.pipeline_calls > calls
        calls = renderer.pipeline_calls
        again = pdb.score(rows, cached, [0, 1], batch=4)
        assert renderer.pipeline_calls == calls  # nothing rendered twice
        assert [r["mean"] for r in again] == [r["mean"] for r in first] and all(r["cached"] == 2 for r in again)
        stats = pdb.stats()
        assert stats["scores"][0]["prompts"] == 3 and stats["scores"][0]["images"] == 6


def test_database_opens_in_datasette(lexica_db):
    from datasette.app import Datasette

    async def fetch():
        ds = Datasette([str(lexica_db)])
        await ds.invoke_startup()
        name = lexica_db.stem
        tables = (await ds.client.get(f"/{name}.json")).json()["tables"]
        view = await ds.client.get(f"/{name}/collection_view.json?_shape=objects&_size=5")
        searched = await ds.client.get(f"/{name}/prompts.json?_search=waterfall&_shape=objects")
        return tables, view, searched

    tables, view, searched = asyncio.run(fetch())
    by_name = {t["name"]: t for t in tables}
    assert {"collection", "sources", "prompt_sources", "tags", "splits", "embeddings"} <= set(by_name)
    assert by_name["prompts"]["fts_table"] == "prompts_fts"
    assert view.status_code == 200 and view.json()["rows"][0]["sources"] == "lexica"
    rows = searched.json()["rows"]
    assert rows and all("waterfall" in r["text"].lower() for r in rows)


def test_reference_db_feeds_the_nearest_prompts_into_gradients(tmp_path, lexica_db, embedder, tiny, evaluator):
    from promptevo.llms.backends import ScriptedLLM
    from promptevo.optimise.optimizer import Optimizer
    from promptevo.optimise.run_config import OptimizeConfig, create_run
    from promptevo.promptdb.references import ReferencePrompts
    from promptevo.storage.repository import RunRepository

    from .scripted import script

    prompts = ["a waterfall", "a tiger", "a submarine", "a desert"]
    config = OptimizeConfig(rounds=2, batch_size=2, heldout_fraction=0.25, reference_db=str(lexica_db), reference_k=2)
    with Store(tmp_path / "run.db") as store:
        run_id = create_run(store, tiny, config, prompts)
        refs = ReferencePrompts(lexica_db, 2, embedder=embedder)
        Optimizer(store, run_id, llm=ScriptedLLM(script), evaluator=evaluator, references=refs).run_all()
        repo = RunRepository(store)
        calls = repo.llm_calls(run_id, role="gradient")
        events = repo.events(run_id, "reference_prompts")
    assert calls and events
    with Store(lexica_db, readonly=True) as ref_store:
        pdb = PromptDB(ref_store)
        for call in calls:
            user = json.loads(call["messages_json"])[-1]["content"]
            shown = [line.split(": ", 1)[1] for line in user.splitlines() if line.startswith("Short prompt: ")]
            assert shown
            for naive in shown:
                nearest = [r["text"] for r in pdb.similar(embedder, naive, 3) if r["text"] != naive][:2]
                for text in nearest:
                    assert f"Professional prompt for a similar subject: {text}" in user
    with pytest.raises(UserError, match="does not exist"):
        with Store(tmp_path / "x.db") as store:
            create_run(store, tiny, OptimizeConfig(reference_db=str(tmp_path / "missing.db")), prompts)


def _repo():
    from pathlib import Path

    return Path(__file__).resolve().parent.parent


def test_shipped_collection_imports_with_a_licence_for_every_prompt(tmp_path):
    manifest = json.loads((_repo() / "prompt_db" / "manifest.json").read_text(encoding="utf-8"))
    out = subprocess.run(
        [sys.executable, "-m", "promptevo", "db", "import-collection", str(_repo() / "prompt_db"),
         "--db", str(tmp_path / "ref.db"), "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    reports = json.loads(out.stdout)
    assert [r["added"] + r["already"] for r in reports] == [s["prompts"] for s in manifest["sources"]]
    assert all(not r["rejected"] and r["duplicate_rows"] == 0 for r in reports)  # the files are already curated
    with Store(tmp_path / "ref.db", readonly=True) as store:
        licences = store.query("SELECT licences, COUNT(*) AS n FROM collection_view GROUP BY licences")
        assert sum(r["n"] for r in licences) == manifest["prompts"]
        assert {lic for r in licences for lic in r["licences"].split(",")} <= {"CC0-1.0", "Apache-2.0"}


def test_collection_build_is_deterministic(tmp_path, embedder):
    sys.path.insert(0, str(_repo() / "prompt_db"))
    try:
        import build
    finally:
        sys.path.pop(0)
    source = shared_data("diffusiondb-sample")
    a = build.build(source, tmp_path / "a", limit=300, embedder=embedder)
    b = build.build(source, tmp_path / "b", limit=300, embedder=embedder)
    assert a == b
    for name in ("manifest.json", "diffusiondb.jsonl", "imagereward-benchmark.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    rows = [json.loads(line) for line in (tmp_path / "a" / "diffusiondb.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == a["sources"][0]["prompts"] and 0 < len(rows) <= 300
    assert not any(build._BLOCK.search(r["prompt"]) for r in rows)


ANIMAL_PROMPTS = [
    "a corgi wearing a red bowtie", "two cats playing chess", "a herd of zebras at sunset", "three puppies in a basket",
    "a panda eating bamboo", "an octopus reading a newspaper", "a flock of geese over a lake", "foxes in the snow",
    "a kangaroo with a backpack", "a raccoon stealing pizza", "penguins on an iceberg", "a giraffe in a library",
    "butterflies around a lantern", "a squirrel holding an acorn", "wolves howling at the moon", "a hedgehog in a teacup",
    "a sloth hanging from a branch", "an elephant painting", "two rabbits having tea", "a golden retriever on a beach",
    "goldfish in a glass bowl", "a turtle crossing the road", "a lion cub sleeping", "mice in a cheese shop",
    "a horse galloping through a field", "a snail on a leaf", "a shark in a swimming pool", "a cow on the moon",
    "ducklings following their mother", "an owl with spectacles",
]
NOT_ANIMAL_PROMPTS = ["a red bicycle against a wall", "a bowl of ramen", "a lighthouse at night", "a city street in the rain",
                      "an old library", "a portrait of a woman", "a castle on a hill", "a cup of coffee on a table"]


def test_auto_tags_find_animals_in_plural_and_in_common_kinds():
    from promptevo.promptdb.collection import auto_tags

    found = [p for p in ANIMAL_PROMPTS if "category:animal" in auto_tags(p)]
    recall = len(found) / len(ANIMAL_PROMPTS)
    print(f"animal recall on {len(ANIMAL_PROMPTS)} Parti-style prompts: {recall:.2f}")
    assert recall >= 0.95, sorted(set(ANIMAL_PROMPTS) - set(found))
    assert not [p for p in NOT_ANIMAL_PROMPTS if "category:animal" in auto_tags(p)]
    assert "category:landscape" in auto_tags("snowy mountains and waterfalls") and "style:photo" in auto_tags("two photos")
