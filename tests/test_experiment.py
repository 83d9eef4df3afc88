"""Experiments: the SYNTHETIC benchmark's models, the runner (arms x repeats, skip on rerun,
tables and plots), baselines in the held-out evaluation, and `promptevo bench`."""

import csv
import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from promptevo.cli.main import _register_subcommands, app
from promptevo.errors import UserError
from promptevo.lab.experiment import load_config, run_experiment
from promptevo.lab.synthetic import VOCABULARY
from promptevo.llms.templates import NO_GRADIENT_IMPROVEMENT
from promptevo.storage.repository import RunRepository
from promptevo.storage.store import Store

from .conftest import shared_data

_register_subcommands()
runner = CliRunner()


@pytest.fixture(scope="module")
def synthetic():
    from promptevo.embed import Embedder
    from promptevo.lab.synthetic import synthetic_models

    return synthetic_models(Embedder())


def test_synthetic_scorer_is_deterministic_prefers_the_hidden_target_and_keeps_fidelity(synthetic, tmp_path):
    from promptevo.evaluation.evaluator import CachedEvaluator, Job, LocalEvaluator
    from promptevo.storage.store import Store

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
        evaluator = LocalEvaluator(renderer, [scorer])
        results = CachedEvaluator(store, evaluator).evaluate([Job(p, 1, "a desert", evaluator.search_variant) for p in prompts])
    assert [r.score for r in results] == pytest.approx(first, abs=0.05)
    assert scorer.name == "synthetic-v1"
    # the diagnostic noise-free value is the score's mean over seeds
    many = np.mean([scorer.score(renderer.render(prompts, [s] * 4).images, ["a desert"] * 4) for s in range(60)], axis=0)
    assert scorer.noise_free(prompts, ["a desert"] * 4) == pytest.approx(many, abs=0.25)


def test_simulated_llm_follows_instructions_and_critiques(synthetic):
    llm = synthetic[0]
    from promptevo.llms.calls import ask

    [rw] = ask(llm, "generator", [{"instruction": "Add cinematic, lighting. Keep it short.", "prompt": "a fox"}], role="generator")
    assert rw.completion.text.startswith("a fox, cinematic, lighting")
    from promptevo.optimise.critic import CritiqueExample, Examples

    shown = Examples([
        CritiqueExample("a fox", "a fox, dull, blurry", 1.0, "a fox, cinematic golden hour light, detailed", 3.0,
                        ("a red fox, dramatic sunlight, sharp focus",)),
        CritiqueExample("a cat", "a cat, dull, blurry", 1.0, "a cat, cinematic, detailed, warm light", 2.0)])
    examples = format(shown)
    [g] = ask(llm, "gradient", [{"instruction": "x", "examples": shown, "n": 2}], role="gradient")
    assert "Low-scoring prompt (score 1.00): a fox, dull, blurry" in g.messages[-1]["content"]
    text = g.completion.text
    added = set(re.findall(r"Add the words ([^.]*?)(?: and drop|\.)", text)[0].split(", "))
    shown = set(re.findall(r"[a-z]+", examples.split("Low-scoring")[1])) | {"cinematic", "detailed", "warm", "light"}
    assert added and added <= shown - {"fox", "cat", "dull", "blurry"}  # words it was shown, no subject words
    assert "drop the words" in text and ("dull" in text.split("drop the words")[1] or "blurry" in text.split("drop the words")[1])
    modifier = [{"instruction": "Name the medium, dull tones and blurry edges.", "improvement": "Add the words cinematic, warm and drop the words dull, blurry."}]
    [m] = ask(llm, "modifier", modifier, role="modifier")
    assert "cinematic, warm" in m.completion.text and "dull" not in m.completion.text and "blurry" not in m.completion.text
    modifier[0]["improvement"] = NO_GRADIENT_IMPROVEMENT  # the ablation: blind edits from a fixed vocabulary
    blind = [c.completion.text for c in ask(llm, "modifier", modifier * 2, role="modifier", seed=3)]
    assert all(len(set(re.findall(r"[a-z]+", b)) & set(VOCABULARY)) == 3 for b in blind)
    assert blind[0] != blind[1]  # two requests in one batch: two different edits, as the loop asks for two
    assert blind == [c.completion.text for c in ask(llm, "modifier", modifier * 2, role="modifier", seed=3)]


def test_simulated_critique_points_towards_the_hidden_preferences_it_never_sees(synthetic):
    """The ablation is only meaningful if the critique carries signal: from scored examples alone
    (low and better rewrites built from random words), the words it proposes must be worth more to
    the hidden scorer than the blind edit's vocabulary."""
    import numpy as np

    from promptevo.lab.synthetic import keywords
    from promptevo.llms.calls import ask

    llm, renderer, scorer = synthetic
    naive = shared_data("seed-paper", "naive_prompts.txt").read_text(encoding="utf-8").splitlines()[:6]
    pool = list(dict.fromkeys(w for line in shared_data("seed-paper", "lexica_prompts.jsonl").read_text(encoding="utf-8").splitlines()[:300]
                              for w in keywords(json.loads(line)["prompt"], 40)))
    rng = np.random.default_rng(0)

    def gains(texts, targets, seeds=(1, 2, 3)):
        per_seed = [scorer.score(renderer.render(texts, [s] * len(texts)).images, targets) for s in seeds]
        return np.mean(per_seed, axis=0)

    from promptevo.optimise.critic import CritiqueExample, Examples

    blocks = []
    for prompt in naive:
        rewrites = [prompt + ", " + ", ".join(rng.choice(pool, 4, replace=False)) for _ in range(6)]
        scores = gains(rewrites, [prompt] * 6, seeds=(7,))
        low, high = int(np.argmin(scores)), int(np.argmax(scores))
        blocks.append(CritiqueExample(prompt, rewrites[low], float(scores[low]), rewrites[high], float(scores[high])))
    [g] = ask(llm, "gradient", [{"instruction": "x", "examples": Examples(blocks), "n": 2}], role="gradient")
    proposed = [w for m in re.findall(r"Add the words ([^.]*?)(?: and drop|\.)", g.completion.text) for w in m.split(", ")]
    assert len(proposed) >= 3

    def value(word):  # mean gain of appending the word, over the prompts, with the scorer's noise averaged
        return float(np.mean(gains([p + ", " + word for p in naive], naive) - gains(naive, naive)))

    critique = np.mean([value(w) for w in proposed])
    blind = np.mean([value(w) for w in VOCABULARY])
    assert critique > blind + 0.3, (proposed, critique, blind)


def _config(tmp_path, **over):
    refs = tmp_path / "refs.jsonl"
    refs.write_text("".join(shared_data("seed-paper", "lexica_prompts.jsonl").read_text(encoding="utf-8").splitlines(True)[:80]), encoding="utf-8")
    text = f"""
name = "tiny-selector"
description = "test"
models = "synthetic"
prompts = "{shared_data('seed-paper', 'naive_prompts.txt')}"
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


def test_experiment_runs_every_arm_and_repeat_writes_tables_and_plots_and_skips_on_rerun(tmp_path, synthetic):
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
    budgets = []  # every arm reports what its result cost: the mean over its runs of each run's budget
    for arm in ("ucb", "random"):
        with Store(out / "runs" / f"{arm}-r0.db", readonly=True) as s0, Store(out / "runs" / f"{arm}-r1.db", readonly=True) as s1:
            runs = [RunRepository(s).budget(RunRepository(s).first_run()["id"]) for s in (s0, s1)]
            counts = [RunRepository(s).counts(RunRepository(s).first_run()["id"]) for s in (s0, s1)]
        assert [b["images"] for b in runs] == [c["scored_images"] for c in counts]
        assert [b["llm_calls"] for b in runs] == [c["llm_calls"] for c in counts] and all(b["wall_s"] > 0 for b in runs)
        assert rows[arm]["budget"]["images"] == pytest.approx(sum(b["images"] for b in runs) / 2)
        assert 0 < rows[arm]["budget"]["search_images"] < rows[arm]["budget"]["images"]
        b = rows[arm]["budget"]
        budgets.append(f"| {arm} | {b['search_images']:.0f} | {b['images']:.0f} | {b['llm_calls']:.0f} |")
    assert all(b in md for b in budgets)
    for svg in ("heldout.svg", "curves.svg", "budget.svg"):
        text = (out / svg).read_text(encoding="utf-8")
        assert text.startswith("<svg") and "ucb" in text
    assert len(results["curves"]["ucb"]) == 2
    budget_svg = (out / "budget.svg").read_text(encoding="utf-8")  # gain against images: a legend beside the plot
    plot_right = max(float(x) + float(w) for x, w in re.findall(r'<rect x="([\d.]+)" y="[\d.]+" width="([\d.]+)" height="[\d.]+" fill="none"', budget_svg))
    legend = re.findall(r'<rect x="([\d.]+)" y="[\d.]+" width="10" height="10" fill="[^"]+"/><text [^>]*>([^<]+)</text>', budget_svg)
    assert {name for _, name in legend} == {"ucb", "random"} and all(float(x) > plot_right for x, _ in legend)
    assert "baseline: initial" in budget_svg  # a baseline level drawn as a line
    again = run_experiment(path, out=out)
    assert again["runs_done"] == 0 and again["runs_skipped"] == 4 and again["rows"] == results["rows"]
    # noise-free diagnostics: every run read, the chosen instruction is one the run had
    from promptevo.lab.synthetic import noise_free_runs

    runs = noise_free_runs(out, models=synthetic)
    assert [(r["arm"], r["repeat"]) for r in runs] == [("random", 0), ("random", 1), ("ucb", 0), ("ucb", 1)]
    for r in runs:  # the chosen instruction is one the run had
        assert r["chosen"] <= max(r["best_seed"], r["best_found"]) + 1e-9


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


def test_objective_experiment_reports_every_reward_per_arm(tmp_path, synthetic):
    path = _config(tmp_path, **{
        'reference_arm = "ucb"': 'reference_arm = "ucb"\nrewards = ["synthetic-fidelity"]',
        '[arms.random]\nselector = "random"': '[arms.random]\nobjective = "synthetic=1"\nguard = ["synthetic-fidelity"]',
    })
    results = run_experiment(path, out=tmp_path / "out")
    rows = {(r["reward"], r["arm"]): r for r in results["per_reward"]}
    assert set(rows) == {(n, a) for n in ("synthetic-v1", "synthetic-fidelity-v1") for a in ("ucb", "random")}
    assert "diff_vs_reference" in rows[("synthetic-fidelity-v1", "random")]
    md = (tmp_path / "out" / "results.md").read_text(encoding="utf-8")
    assert "| synthetic-fidelity-v1 | random | 2 |" in md
    from promptevo.storage.repository import RunRepository
    from promptevo.storage.store import Store

    with Store(tmp_path / "out" / "runs" / "random-r0.db", readonly=True) as s:
        repo = RunRepository(s)
        spec = repo.run_config(repo.first_run()["id"])["optimize"]["objective"]
    assert spec["guards"] == {"synthetic-fidelity-v1": 1.0} and spec["weights"] == {"synthetic-v1": 1.0}
    with pytest.raises(UserError, match="does not score"):
        bad = _config(tmp_path, **{'[arms.random]\nselector = "random"': '[arms.random]\nobjective = "clip=1"'})
        run_experiment(bad, out=tmp_path / "bad")
