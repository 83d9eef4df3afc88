import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from promptevo.cli import _register_subcommands, app

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


def test_profiles_json_lists_models():
    r = invoke("profiles", "--json")
    data = json.loads(r.stdout)
    assert {"tiny", "gpu", "paper"} <= set(data)
    assert data["gpu"]["render"]["steps"] == 1 and data["gpu"]["render"]["guidance"] == 0.0


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
    from promptevo import llm as llm_module
    from promptevo.store import Store

    monkeypatch.setattr(llm_module, "load_llm", lambda cfg: llm_module.ScriptedLLM(["A misty waterfall, dawn light"]))
    r = invoke("rewrite", "a waterfall", "--db", str(tmp_path / "calls.db"), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)[0]["rewrite"] == "A misty waterfall, dawn light"
    with Store(tmp_path / "calls.db") as s:
        [call] = s.query("SELECT * FROM llm_calls")
    assert call["role"] == "generator" and call["response"] == "A misty waterfall, dawn light"
