"""The stronger optimiser (issue 18): the Pareto front and selector, reward-aware word hints, the
history-aware updater, merges, the Pareto set, the budget, and `--optimizer pareto`."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from promptevo.cli.main import _register_subcommands, app
from promptevo.optimise import bandit
from promptevo.optimise.hints import Hints, WordEffect, word_effects

_register_subcommands()
runner = CliRunner()
PROMPTS = ["a waterfall", "a samurai", "a lighthouse at night", "a fox in the snow", "an old library",
           "a city street in the rain", "a desert at dawn", "a robot in a garden", "a castle on a hill"]


def arm(i, **per_prompt):
    gains = {p: list(v) for p, v in per_prompt.items()}
    return bandit.ArmStats(i, rewards=[float(np.mean([x for v in gains.values() for x in v]))], per_prompt=gains)


def test_pareto_front_keeps_each_arm_that_is_best_on_some_prompt():
    a = arm(1, p1=[3.0], p2=[3.0], p3=[0.0])  # best mean, best on p1 and p2
    b = arm(2, p1=[1.0], p2=[1.0], p3=[2.0])  # worse mean, but the best on p3
    c = arm(3, p1=[2.0], p2=[2.0], p3=[1.0])  # never the best: dominated by a on p1, p2 and by b on p3
    d = arm(4, p4=[0.5])  # the only arm scored on p4
    assert bandit.pareto_front([a, b, c, d]) == {1: 2, 2: 1, 4: 1}


def test_pareto_selector_tries_new_arms_first_then_draws_from_the_front_by_wins():
    a, b, c = arm(1, p1=[3.0], p2=[3.0], p3=[0.0]), arm(2, p1=[1.0], p2=[1.0], p3=[2.0]), arm(3, p1=[2.0], p2=[2.0], p3=[1.0])
    new = bandit.ArmStats(9)
    rng = np.random.default_rng(0)
    sel = bandit.make_selector("pareto")
    assert sel.select([a, b, c, new], 1, rng) == [9]
    picks = [sel.select([a, b, c], 1, rng)[0] for _ in range(600)]
    assert set(picks) == {1, 2}  # never the dominated arm
    assert 1.5 < picks.count(1) / picks.count(2) < 2.7  # two prompts won against one
    assert sorted(sel.select([a, b, c], 3, rng)) == [1, 2, 3]  # asked for more than the front: the rest by mean


def test_word_hints_credit_the_word_that_scores_even_inside_bundles():
    """An instruction adds its words as a bundle, so a word's marginal difference credits every
    word of a good bundle; the regression shares out the credit and finds the word that scores."""
    rng = np.random.default_rng(1)
    bundles = [("golden",), ("golden", "lens"), ("golden", "palette"), ("lens", "palette"), ("ink", "lens", "palette"), ("ink",)]
    texts, naive, pids, gains = [], [], [], []
    for rep in range(12):
        for words in bundles:
            prompt = PROMPTS[rep % 4]
            texts.append(f"{prompt}, {', '.join(words)}")
            naive.append(prompt)
            pids.append(str(rep % 4))
            gains.append(1.5 * ("golden" in words) + (rep % 4) + rng.normal(0, 0.3))
    effects = {w.word: w for w in word_effects(texts, naive, pids, gains)}
    assert set(effects) == {"golden", "lens", "palette", "ink"}  # subject words are not hints
    assert max(effects.values(), key=lambda w: w.z).word == "golden"
    assert effects["golden"].effect == pytest.approx(1.5, abs=0.35) and effects["golden"].images == 36
    assert all(abs(effects[w].effect) < 0.4 for w in ("lens", "palette", "ink"))
    assert word_effects(texts[:4], naive[:4], pids[:4], gains[:4]) == []  # too few images to say anything
    hints = Hints(((effects["golden"],), (WordEffect("ink", -0.4, 24, -2.0),)))
    text = format(hints)
    assert f"Words in rewrites that scored higher: golden ({effects['golden'].effect:+.2f} over 36 images)" in text and "scored lower: ink (-0.40 over 24 images)" in text
    assert format(Hints(((), ()))) == "(not enough scored images yet)"


@pytest.fixture(scope="module")
def synthetic():
    from promptevo.embed import Embedder
    from promptevo.lab.synthetic import synthetic_models

    return synthetic_models(Embedder())


def test_pareto_optimiser_scores_every_candidate_on_one_set_sees_its_history_and_merges(synthetic, tmp_path):
    from promptevo.evaluation.evaluator import LocalEvaluator
    from promptevo.lab.synthetic import synthetic_profile
    from promptevo.optimise.optimizer import Optimizer
    from promptevo.optimise.run_config import OptimizeConfig, create_run
    from promptevo.storage.repository import RunRepository
    from promptevo.storage.store import Store

    llm, renderer, scorer = synthetic
    config = OptimizeConfig(rounds=4, selector="pareto", pareto_set=4, select_prompts=0, history=True, merge=True,
                            new_per_gradient=1, heldout_fraction=0.34, eval_seeds=1, seed=5)
    with Store(tmp_path / "p.db") as store:
        run_id = create_run(store, synthetic_profile(), config, PROMPTS)
        summary = Optimizer(store, run_id, llm=llm, evaluator=LocalEvaluator(renderer, [scorer])).run_all()
        repo = RunRepository(store)
        search = [r for r in repo.rounds(run_id) if r["phase"] == "search"]
        plans = [json.loads(r["plan_json"]) for r in search]
        assert len(plans) == 4 and len(plans[0]["prompts"]) == 4
        assert all((p["prompts"], p["seeds"]) == (plans[0]["prompts"], plans[0]["seeds"]) for p in plans)  # one set
        assert not [r for r in repo.rounds(run_id) if r["phase"] == "selection" and repo.trials(run_id, round=r["round"])]
        naive = {t.image_id for t in repo.trials(run_id, phase="search") if t.arm == "naive"}
        assert len(naive) == 4  # the naive images were made once, not once per round
        # every candidate was scored on every prompt of the set
        stats = Optimizer(store, run_id, llm=llm, evaluator=LocalEvaluator(renderer, [scorer])).arm_stats(
            [i["id"] for i in repo.instructions(run_id) if i["origin"] != "baseline"])
        assert all(set(s.per_prompt) == set(plans[0]["prompts"]) for s in stats if s.pulls)
        # the updater saw the history and the hints; merges combined two front instructions
        calls = repo.llm_calls(run_id, role="modifier")
        assert calls and {c["template"] for c in calls} == {"modifier_history"}
        seen = json.loads(calls[-1]["messages_json"])[-1]["content"]
        assert "Best so far: (gain " in seen and "Worst so far" in seen and "Words in rewrites that scored" in seen
        merged = repo.events(run_id, "merged")
        assert merged and all(len(set(e["data"]["pair"])) == 2 for e in merged)
        assert len({tuple(e["data"]["pair"]) for e in merged}) == len(merged)  # no pair merged twice
        made = repo.instructions(run_id, origin="merge")
        assert made and {m["parent_id"] for m in made} <= {e["data"]["pair"][0] for e in merged}
        assert all(m["llm_call_id"] in {e["data"]["llm_call_id"] for e in merged} for m in made)
        # the answer is the best Pareto-set mean over every instruction tried, retired ones included
        best = summary["best_instruction"]
        assert best["mean_reward"] == max(i["mean_reward"] for i in summary["instructions"] if i["mean_reward"] is not None)
        budget = summary["budget"]
        assert budget["search_images"] == len({t.image_id for t in repo.trials(run_id, phase="search")})
        assert budget["search_images"] < budget["images"]


def test_optimizer_option_sets_the_pareto_defaults_and_refuses_unknown_names(tmp_path):
    bad = runner.invoke(app, ["optimize", "a fox", "a cat", "--optimizer", "gepa", "--db", str(tmp_path / "x.db")])
    assert bad.exit_code == 2 and "--optimizer is loop or pareto" in bad.output
    bad = runner.invoke(app, ["optimize", "a fox", "a cat", "--parent", "middle", "--db", str(tmp_path / "x.db")])
    assert bad.exit_code == 2 and "--parent is one of weakest, best" in bad.output
    assert not (tmp_path / "x.db").exists()


def test_default_loop_keeps_its_config_hash():
    """Runs made before the new options existed keep their hash (and so resume and compare)."""
    from promptevo.optimise.run_config import OptimizeConfig

    d = OptimizeConfig().to_dict()
    assert not {"parent", "history", "merge", "pareto_set"} & set(d)
    assert {"parent", "history", "merge", "pareto_set"} <= set(OptimizeConfig(parent="best", history=True, merge=True,
                                                                              pareto_set=4).to_dict())
