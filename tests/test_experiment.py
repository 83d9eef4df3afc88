"""Experiments: the SYNTHETIC benchmark's models, the runner (arms x repeats, skip on rerun,
tables and plots), baselines in the held-out evaluation, and `promptevo bench`."""

import csv
import json

import pytest
from typer.testing import CliRunner

from promptevo.cli import _register_subcommands, app
from promptevo.errors import UserError
from promptevo.experiment import load_config, run_experiment

from .conftest import SHARED

_register_subcommands()
runner = CliRunner()
NAIVE = SHARED / "data" / "seed-paper" / "naive_prompts.txt"
LEXICA = SHARED / "data" / "seed-paper" / "lexica_prompts.jsonl"


@pytest.fixture(scope="module")
def synthetic():
    from promptevo.embed import Embedder
    from promptevo.synthetic import synthetic_models

    return synthetic_models(Embedder())


def test_synthetic_scorer_is_deterministic_prefers_the_hidden_target_and_keeps_fidelity(synthetic, tmp_path):
    from promptevo.imaging import Job, render_and_score
    from promptevo.store import Store

    _, renderer, scorer = synthetic
    prompts = ["a desert", "a desert, cinematic golden hour light, highly detailed, dramatic, warm colours",
               "a cinematic golden hour photograph, dramatic light", "a desert, blurry, low quality, dull"]
    batch = renderer.render(prompts, [1] * 4)
    first = scorer.score(batch.images, ["a desert"] * 4)
    assert first == scorer.score(renderer.render(prompts, [1] * 4).images, ["a desert"] * 4)
    assert first[1] > first[3] and first[1] > first[0]  # the hidden target's words help most
    assert first[1] > first[2]  # dropping the subject costs fidelity
    noisy = scorer.score(renderer.render(prompts[:1] * 3, [1, 2, 3]).images, ["a desert"] * 3)
    assert len(set(noisy)) == 3  # seeded noise
    with Store(tmp_path / "s.db") as store:  # through PNGs and the cache: the same scores
        results = render_and_score(store, renderer, scorer, [Job(p, 1, "a desert") for p in prompts])
    assert [r.score for r in results] == pytest.approx(first, abs=0.05)
    assert scorer.name == "synthetic-v1"


def test_simulated_llm_follows_instructions_and_critiques(synthetic):
    llm = synthetic[0]
    from promptevo.calls import ask

    [rw] = ask(llm, "generator", [{"instruction": "Add cinematic, lighting. Keep it short.", "prompt": "a fox"}], role="generator")
    assert rw.completion.text.startswith("a fox, cinematic, lighting")
    examples = ("Short prompt: a fox\nLow-scoring prompt (score 1.0): a fox, dull\nProfessional prompt for a similar subject: a fox, cinematic, detailed\n\n"
                "Short prompt: a cat\nLow-scoring prompt (score 1.0): a cat, dull\nBetter prompt (score 2.0): a cat, cinematic, detailed, moody")
    [g] = ask(llm, "gradient", [{"instruction": "x", "examples": examples, "n": 2}], role="gradient")
    assert "cinematic" in g.completion.text and "detailed" in g.completion.text and "moody" not in g.completion.text


def _config(tmp_path, **over):
    refs = tmp_path / "refs.jsonl"
    refs.write_text("".join(LEXICA.read_text(encoding="utf-8").splitlines(True)[:80]), encoding="utf-8")
    text = f"""
name = "tiny-selector"
description = "test"
models = "synthetic"
prompts = "{NAIVE}"
prompt_limit = 9
repeats = 2
reference_arm = "ucb"
reference_source = "{refs}"
[optimize]
rounds = 2
batch_size = 2
eval_seeds = 2
reference_db = true
baselines = ["refine", "suffix", "reference"]
[arms.ucb]
selector = "ucb"
[arms.random]
selector = "random"
"""
    for k, v in over.items():
        text = text.replace(k, v)
    path = tmp_path / "exp.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_experiment_runs_every_arm_and_repeat_writes_tables_and_plots_and_skips_on_rerun(tmp_path):
    path = _config(tmp_path)
    out = tmp_path / "out"
    results = run_experiment(path, out=out)
    assert results["runs_done"] == 4 and results["runs_skipped"] == 0
    assert sorted(p.name for p in (out / "runs").glob("*.db")) == ["random-r0.db", "random-r1.db", "ucb-r0.db", "ucb-r1.db"]
    rows = {r["arm"]: r for r in results["rows"]}
    assert {"ucb", "random", "baseline: initial", "baseline: refine", "baseline: suffix", "baseline: reference"} <= set(rows)
    assert rows["ucb"]["ci_low"] < rows["ucb"]["heldout_gain"] < rows["ucb"]["ci_high"]  # repeats differ
    assert "diff_vs_reference" in rows["random"] and "diff_vs_reference" not in rows["ucb"]
    with open(out / "results.csv", newline="", encoding="utf-8") as fh:
        assert {r["arm"] for r in csv.DictReader(fh)} == set(rows)
    md = (out / "results.md").read_text(encoding="utf-8")
    assert "SYNTHETIC" in md and "| ucb | 2 |" in md
    for svg in ("heldout.svg", "curves.svg"):
        text = (out / svg).read_text(encoding="utf-8")
        assert text.startswith("<svg") and "ucb" in text
    assert len(results["curves"]["ucb"]) == 2
    again = run_experiment(path, out=out)
    assert again["runs_done"] == 0 and again["runs_skipped"] == 4 and again["rows"] == results["rows"]


@pytest.mark.parametrize("change,message", [
    ({'reference_arm = "ucb"': 'reference_arm = "nope"'}, "reference_arm"),
    ({"repeats = 2": "repeats = 1"}, "repeats must be"),
    ({"rounds = 2": "roundz = 2"}, "unknown setting 'roundz'"),
    ({"name =": "name = = ="}, "not valid TOML"),
])
def test_bad_experiment_configs_are_user_errors(tmp_path, change, message):
    with pytest.raises(UserError, match=message):
        load_config(_config(tmp_path, **change))


def test_experiment_command_prints_the_table(tmp_path):
    path = _config(tmp_path, **{"repeats = 2": "repeats = 3", "[arms.random]\nselector = \"random\"\n": ""})
    r = runner.invoke(app, ["experiment", "run", str(path), "--repeats", "2", "--out", str(tmp_path / "o"), "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["repeats"] == 2 and data["synthetic"] and [x["arm"] for x in data["rows"]][0] == "ucb"
    assert runner.invoke(app, ["experiment", "run", str(tmp_path / "missing.toml")]).exit_code == 2


def test_bench_prints_ratios_and_writes_its_results_file(tmp_path):
    r = runner.invoke(app, ["bench", "--profile", "tiny", "--images", "4", "--naive-images", "2", "--rounds", "1",
                            "--out", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    saved = json.loads((tmp_path / "tiny-cpu.json").read_text(encoding="utf-8"))
    assert saved["ratios"] == data["ratios"]
    assert set(data["ratios"]) == {"render_batched_vs_per_image", "score_batched_vs_reload", "round_vs_naive_round"}
    assert all(v > 0 for v in data["ratios"].values())
    assert data["round_naive"]["images"] == data["round"]["images"]  # the same work both ways
    assert 0 <= data["round"]["overhead_fraction"] < 1 and data["flops_per_image"]["render"] > 0
