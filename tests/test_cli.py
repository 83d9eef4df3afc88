import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from promptevo.cli.main import _register_subcommands, app

_register_subcommands()
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_render_then_score_prints_one_score_per_image(tmp_path):
    r = invoke("render", "a waterfall", "a samurai", "--out", str(tmp_path), "--per-prompt", "2", "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert len(rows) == 4 and {row["seed"] for row in rows} == {0, 1, 2, 3}
    pngs = sorted(tmp_path.glob("*.png"))
    assert len(pngs) == 4
    sidecar = json.loads(pngs[0].with_suffix(".json").read_text())
    assert {"prompt", "seed", "render_config", "render_config_hash"} <= set(sidecar)
    assert sidecar["render_config"]["steps"] == 2
    assert not any("waterfall" in p.name for p in pngs)
    s = invoke("score", "--json", *map(str, pngs))
    assert s.exit_code == 0, s.output
    scores = json.loads(s.stdout)
    assert len(scores) == 4
    assert all(isinstance(x["score"], float) for x in scores)
    assert {x["prompt"] for x in scores} == {"a waterfall", "a samurai"}
    # any reward of the repository, each image scored by each (one model load, one batch)
    many = invoke("score", "--json", "--reward", "brisque", "--reward", "clip", "--reward", "exposure", *map(str, pngs))
    assert many.exit_code == 0, many.output
    rows = json.loads(many.stdout)
    assert [len(r["scores"]) for r in rows] == [3] * 4 and "score" not in rows[0]
    names = list(rows[0]["scores"])
    assert any(n.startswith("brisque") for n in names) and any(n.startswith("clip") for n in names)
    assert len({r["scores"][names[0]] for r in rows}) > 1  # per image, not one value for all
    weighted = invoke("score", "--json", "--objective", "brisque=1,exposure=2", *map(str, pngs[:2]))
    assert weighted.exit_code == 0, weighted.output
    w = json.loads(weighted.stdout)
    assert all(isinstance(r["objective"], float) and len(r["scores"]) == 2 for r in w)
    for bad, message in ((["--reward", "human"], "judgements"), (["--reward", "nope"], "nope"),
                         (["--reward", "clip", "--objective", "clip=1"], "not both")):
        refused = invoke("score", *bad, str(pngs[0]))
        assert refused.exit_code == 2 and message in refused.output, refused.output


def test_profiles_json_lists_models():
    r = invoke("profiles", "--json")
    data = json.loads(r.stdout)
    assert {"tiny", "gpu", "paper"} <= set(data)
    assert data["gpu"]["render"]["steps"] == 1 and data["gpu"]["render"]["guidance"] == 0.0
    paper = data["paper"]
    assert paper["render"]["model"] == "stabilityai/sdxl-turbo" and paper["scorer"]["version"] == "v2.0"
    assert paper["render"]["steps"] == 1 and paper["render"]["guidance"] == 0.0


@pytest.mark.parametrize("steps, guidance", [(0, 0.0), (5, 0.0), (1, 7.5), (30, 7.5)])
def test_turbo_models_refuse_sampling_they_were_not_distilled_for(steps, guidance):
    from dataclasses import replace

    from promptevo.config import get_profile
    from promptevo.errors import UserError

    render = get_profile("paper").render
    with pytest.raises(UserError, match="1 to 4 steps and guidance 0"):
        replace(render, steps=steps, guidance=guidance)
    assert replace(render, steps=4).steps == 4  # 1 to 4 steps are fine


@pytest.mark.parametrize(
    "args, message",
    [
        (["render", "x", "--profile", "nope"], "unknown profile"),
        (["score", "--prompt", "x", "missing.png"], "does not exist"),
        (["render", "x", "--render-model", "./no/such/model"], "does not exist"),
        (["score", "--prompt", "x", "pyproject.toml"], "not an image"),
    ],
)
def test_user_mistakes_exit_2_without_traceback(args, message):
    r = invoke(*args)
    assert r.exit_code == 2
    assert message in r.stderr
    assert "Traceback" not in r.output + r.stderr


def test_module_entry_point_runs():
    p = subprocess.run([sys.executable, "-m", "promptevo", "--help"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "optimize" in p.stdout


def test_rewrite_logs_calls_when_given_a_database(tmp_path, monkeypatch):
    from promptevo import registry
    from promptevo.llms.backends import ScriptedLLM
    from promptevo.storage.repository import RunRepository
    from promptevo.storage.store import Store

    monkeypatch.setattr(registry, "build_llm", lambda cfg: ScriptedLLM(["A misty waterfall, dawn light"]))
    r = invoke("rewrite", "a waterfall", "--db", str(tmp_path / "calls.db"), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)[0]["rewrite"] == "A misty waterfall, dawn light"
    with Store(tmp_path / "calls.db") as s:
        [call] = RunRepository(s).llm_calls(None)
    assert call["role"] == "generator" and call["response"] == "A misty waterfall, dawn light"


def test_db_commands_from_import_to_export(tmp_path):
    src = tmp_path / "p.csv"
    src.write_text("text,lic\nan oil painting of a lighthouse,CC0-1.0\nA photo of a fox,CC0-1.0\n,CC0-1.0\n"
                   "a photo of a fox,CC0-1.0\n", encoding="utf-8")
    db = str(tmp_path / "p.db")
    r = invoke("db", "import", str(src), "--db", db, "--map", "text=text", "--map", "licence=lic", "--auto-tag", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["added"] == 3 and report["rejected"] == {"empty": 1} and report["auto_tags"] >= 3
    again = json.loads(invoke("db", "import", str(src), "--db", db, "--map", "text=text", "--json").stdout)
    assert again["added"] == 0
    found = json.loads(invoke("db", "search", "lighthouse", "--db", db, "--json").stdout)
    assert [f["text"] for f in found] == ["an oil painting of a lighthouse"]
    assert invoke("db", "tag", "keep", "--search", "fox", "--db", db).exit_code == 0
    assert invoke("db", "split", "--db", db, "--seed", "3", "--fractions", "0.5,0.25,0.25").exit_code == 0
    out = tmp_path / "foxes.jsonl"
    assert invoke("db", "export", str(out), "--tag", "keep", "--db", db).exit_code == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert sorted(r["text"] for r in rows) == ["A photo of a fox", "a photo of a fox"]
    stats = json.loads(invoke("db", "stats", "--db", db, "--json").stdout)
    assert stats["prompts"] == 3 and stats["tags"]["keep"] == 2 and sum(stats["splits"].values()) == 3
    assert stats["sources"][0]["licence"] is None and "category:animal" in stats["tags"]
    dupes = json.loads(invoke("db", "duplicates", "--db", db, "--json").stdout)
    assert dupes == []  # case differs: exact duplicates are equal after normalisation only


@pytest.mark.parametrize("args,message", [
    (["db", "import", "missing.txt"], "does not exist"),
    (["db", "import", "{src}", "--map", "colour=text"], "not one of"),
    (["db", "import", "{src}", "--map", "text=nope"], "no column 'nope'"),
    (["db", "search", "x", "--db", "{tmp}/none.db"], "does not exist"),
    (["db", "search", "!!!"], "no words"),
    (["db", "split", "--fractions", "0.5,0.5"], "three non-negative"),
    (["db", "tag", "--db", "{tmp}/p.db"], "give tags"),
    (["db", "duplicates", "--remove"], "--near"),
    (["db", "export", "{tmp}/out.xlsx"], "export format"),
    (["db", "import-collection", "{tmp}"], "no manifest.json"),
])
def test_db_user_errors_exit_2_without_traceback(tmp_path, args, message):
    src = tmp_path / "p.csv"
    src.write_text("text\na fox\n", encoding="utf-8")
    invoke("db", "import", str(src), "--db", str(tmp_path / "p.db"))
    args = [a.format(src=src, tmp=tmp_path) for a in args]
    if "--db" not in args:
        args += ["--db", str(tmp_path / "p.db")]
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output


def test_an_answer_the_held_out_test_finds_worse_is_called_worse_and_the_plain_prompt_offered():
    from promptevo.cli.optimize import verdict_line
    from promptevo.optimise.summary import heldout_verdict

    def row(arm, mean, low, high):
        return {"arm": arm, "instruction_id": None, "diff_vs_naive": {"mean": mean, "ci_low": low, "ci_high": high, "n": 8}}

    worse = heldout_verdict([row("best", -6.78, -7.18, -6.38), row("initial", -1.0, -2.0, 0.5), {"arm": "naive", "diff_vs_naive": None}])
    assert worse["verdict"] == "worse" and worse["use"] == "naive"
    assert "WORSE than your plain prompts" in verdict_line(worse) and "-6.780" in verdict_line(worse)
    suffix = heldout_verdict([row("best", -0.5, -0.9, -0.1), row("suffix", 0.3, 0.1, 0.5)])
    assert suffix["use"] == "suffix" and "suffix baseline" in verdict_line(suffix)
    assert heldout_verdict([row("best", 0.1, -0.2, 0.4)])["verdict"] == "unclear"
    assert heldout_verdict([row("best", 0.4, 0.2, 0.6)])["verdict"] == "better"
    assert heldout_verdict([]) is None


def test_library_warnings_go_to_the_log_file_not_the_terminal(tmp_path):
    """What brisque, optuna or open_clip print through Python's warnings or logging lands in the
    log file; the terminal keeps promptevo's own lines."""
    code = ("import logging, warnings; from promptevo.cli.common import route_warnings_to_log, log_path; route_warnings_to_log(); "
            "warnings.warn('ExperimentalWarning: multivariate is experimental'); "
            "logging.getLogger('root').error('Failed to download weights'); print(log_path())")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PROMPTEVO_CACHE": str(tmp_path)})
    assert p.returncode == 0 and p.stderr == "", p.stderr
    log = Path(p.stdout.strip()).read_text()
    assert "multivariate is experimental" in log and "Failed to download weights" in log
