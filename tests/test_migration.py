"""A database written by promptevo before the evaluation boundary (commit 6b9b2e3, tiny profile:
one finished run, one stopped after its first search round) migrates in place with every row
kept, and opens, shows, reports, exports and resumes.

The fixture was made by that commit's code; its `summary.json` holds what that code's
`summarize` returned, so the migrated database must give the same numbers."""

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from promptevo.cli.main import _register_subcommands, app
from promptevo.llms.backends import ScriptedLLM
from promptevo.optimise.optimizer import Optimizer
from promptevo.storage.repository import RunRepository
from promptevo.storage.store import Store

from .scripted import script

FIXTURE = Path(__file__).parent / "fixtures" / "v1-runs.db"
FINISHED, STOPPED = "20261123-202858-2736", "20261123-203251-6351"
_register_subcommands()
runner = CliRunner()


@pytest.fixture
def old_db(tmp_path):
    db = tmp_path / "v1.db"
    shutil.copy(FIXTURE, db)
    shutil.copytree(FIXTURE.with_name(FIXTURE.name + "-artifacts"), tmp_path / "v1.db-artifacts")
    return db


def raw_counts(db):
    """Rows per table, read with plain sqlite3 (the old schema has no repository to read it)."""
    with sqlite3.connect(db) as conn:
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'prompts_fts%'")]
        return {t: conn.execute(f"SELECT COUNT(*) FROM [{t}]").fetchone()[0] for t in tables}


def test_old_database_migrates_in_place_with_every_row_kept(old_db):
    before = raw_counts(old_db)
    assert "trial_scores" not in before and before["trials"] > 0
    with Store(old_db) as store:
        repo = RunRepository(store)
        after = raw_counts(old_db)
        assert {t: n for t, n in after.items() if t in before and t != "_migrations"} == {
            t: n for t, n in before.items() if t != "_migrations"}
        assert after["trial_scores"] == before["trials"]  # every trial keeps its score, now by reward
        for run_id in (FINISHED, STOPPED):
            assert all(set(t.scores) == {"hps-tiny"} for t in repo.trials(run_id))


def test_migrated_runs_summarise_exactly_as_the_old_code_did(old_db):
    from promptevo.optimise.summary import summarize

    expected = json.loads(FIXTURE.with_name("v1-runs.summary.json").read_text(encoding="utf-8"))
    with Store(old_db, readonly=True) as store:  # a read-only open migrates first
        repo = RunRepository(store)
        for run_id in (FINISHED, STOPPED):
            got = summarize(repo, run_id)
            for key in ("rounds", "best_instruction", "instructions", "heldout"):
                assert got[key] == expected[run_id][key], (run_id, key)
        # the stopped run said "running" for ever; migrated, it says what it is
        assert [summarize(repo, r)["status"] for r in (FINISHED, STOPPED)] == ["finished", "interrupted"]


def test_old_database_lists_shows_reports_and_exports(old_db, tmp_path):
    db = str(old_db)
    listed = json.loads(runner.invoke(app, ["runs", "list", "--db", db, "--json"]).stdout)
    assert {r["id"]: r["status"] for r in listed} == {FINISHED: "finished", STOPPED: "interrupted"}
    shown = runner.invoke(app, ["runs", "show", FINISHED, "--db", db])
    assert shown.exit_code == 0 and "held-out" in shown.stdout
    with Store(old_db, readonly=True) as store:
        repo = RunRepository(store)
        budget, counts = repo.budget(FINISHED), repo.counts(FINISHED)
    assert (budget["images"], budget["llm_calls"]) == (counts["scored_images"], counts["llm_calls"]) and budget["wall_s"] > 0
    assert 0 < budget["search_images"] < budget["images"]
    assert (f"budget: {budget['images']} images scored ({budget['search_images']} to decide), "
            f"{budget['llm_calls']} LLM calls") in shown.stdout
    r = runner.invoke(app, ["runs", "report", FINISHED, "--db", db, "-o", str(tmp_path / "r.html")])
    assert r.exit_code == 0, r.output
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") >= 2 and "<svg" in page
    exported = json.loads(runner.invoke(app, ["runs", "export", FINISHED, "--db", db]).stdout)
    assert exported["trials"] and all(t["scores"] == {"hps-tiny": t["score"]} for t in exported["trials"])


def test_old_stopped_run_resumes_to_the_end(old_db, evaluator):
    with Store(old_db) as store:
        repo = RunRepository(store)
        first_plan = repo.round(STOPPED, 1)["plan_json"]
        trials_before = repo.counts(STOPPED)["trials"]
        summary = Optimizer(store, STOPPED, llm=ScriptedLLM(script), evaluator=evaluator).run_all()
        assert summary["status"] == "finished"
        assert [(r["round"], r["phase"], r["status"]) for r in repo.rounds(STOPPED)] == [
            (1, "search", "finished"), (2, "search", "finished"), (3, "selection", "finished"), (4, "evaluation", "finished")]
        assert repo.round(STOPPED, 1)["plan_json"] == first_plan  # the old round is kept as it was
        assert repo.counts(STOPPED)["trials"] > trials_before
        assert {row["arm"] for row in summary["heldout"]} == {"best", "initial", "naive"}
