"""A head start and a budget: seed recipes in the first population (templates made without the
LLM, compared with the answer on held-out prompts), and limits on images, LLM calls and dollars
that stop a run cleanly before a stage and let it resume when raised."""

import json

import pytest
from typer.testing import CliRunner

from promptevo.cli.main import _register_subcommands, app
from promptevo.errors import UserError
from promptevo.llms.backends import ScriptedLLM
from promptevo.llms.templates import REFINE_INSTRUCTION, STYLE_SUFFIX
from promptevo.optimise import budget, recipes
from promptevo.optimise.optimizer import Optimizer
from promptevo.optimise.run_config import OptimizeConfig, create_run

from .openai_server import ScriptedServer
from .scripted import script

runner = CliRunner()
_register_subcommands()
PROMPTS = ["a waterfall", "a samurai", "a lighthouse at night", "a fox in the snow", "an old library", "a city street in the rain"]


def test_recipes_resolve_and_apply(tmp_path):
    got = recipes.resolve(["suffix", "refine"])
    assert [r["name"] for r in got] == ["suffix", "refine"] and got[1]["text"] == REFINE_INSTRUCTION
    assert recipes.apply(got[0]["text"], "a fox") == "a fox" + STYLE_SUFFIX
    assert recipes.apply(recipes.BUILT_IN["reference"], "a fox", lambda p: "a fox, by a master") == "a fox, in the style of: a fox, by a master"
    assert recipes.apply(recipes.BUILT_IN["reference"], "a fox", lambda p: None) == "a fox"
    path = tmp_path / "mine.txt"
    path.write_text("# mine\n{prompt}, oil on canvas\n\nDescribe the light.\n{prompt}, oil on canvas\n")
    assert [r["text"] for r in recipes.resolve([], path)] == ["{prompt}, oil on canvas", "Describe the light."]
    with pytest.raises(UserError, match="reference database"):
        recipes.resolve(["reference"])
    with pytest.raises(UserError, match="takes suffix"):
        recipes.resolve(["magic"])
    path.write_text("# only comments\n")
    with pytest.raises(UserError, match="no recipe"):
        recipes.resolve([], path)


def test_seed_recipes_join_the_population_and_are_compared_on_held_out_prompts(store, repo, tiny, evaluator):
    config = OptimizeConfig(rounds=2, batch_size=2, recipes=recipes.resolve(["suffix", "refine"]), population=3)
    run_id = create_run(store, tiny, config, PROMPTS)
    llm = ScriptedLLM(script)
    summary = Optimizer(store, run_id, llm=llm, evaluator=evaluator).run_all()
    made = repo.instructions(run_id, origin="recipe")
    assert [m["text"] for m in made] == ["{prompt}" + STYLE_SUFFIX, REFINE_INSTRUCTION]
    suffix_id = made[0]["id"]
    texts = {p["id"]: p["text"] for p in repo.prompts(run_id)}
    rows = [r for rnd in range(1, 5) for r in repo.rewrites(run_id, rnd) if r["instruction_id"] == suffix_id]
    assert rows and all(r["text"] == texts[r["prompt_id"]] + STYLE_SUFFIX and r["handling"] == "template"
                        and r["llm_call_id"] is None for r in rows)
    # the template was never sent to the LLM
    assert not any(STYLE_SUFFIX in json.dumps(c.fields) for c in llm.calls if c.role == "generator")
    arms = {row["arm"] for row in summary["heldout"]}
    assert {"recipe:suffix", "recipe:refine", "best", "naive"} <= arms
    vs = summary["versus_recipes"]
    assert vs["recipe"] in ("suffix", "refine") and vs["n"] == 2 * 2 and vs["ci_low"] <= vs["mean"] <= vs["ci_high"]
    best = {r["arm"]: r for r in summary["heldout"]}
    picked = max(("recipe:suffix", "recipe:refine"), key=lambda a: best[a]["score_mean"])
    assert vs["recipe"] == picked.removeprefix("recipe:")


def test_a_run_stops_at_its_image_budget_and_resumes_when_it_is_raised(store, repo, tiny, evaluator):
    config = OptimizeConfig(rounds=2, batch_size=2)
    straight = create_run(store, tiny, config, PROMPTS)
    Optimizer(store, straight, llm=ScriptedLLM(script), evaluator=evaluator).run_all()

    run_id = create_run(store, tiny, config, PROMPTS)
    per_round = budget.stage_estimate(config, repo, run_id, "search")["images"]
    assert per_round == 2 * (2 + 1)
    budget.set_limits(repo, run_id, budget.Limits(max_images=per_round + 2))
    with pytest.raises(budget.BudgetReached, match="search round 2 not started"):
        Optimizer(store, run_id, llm=ScriptedLLM(script), evaluator=evaluator).run_all()
    assert [r["round"] for r in repo.rounds(run_id)] == [1]  # round 2 was not planned
    assert repo.require_run(run_id)["status"] == "interrupted"
    stop = repo.events(run_id, "stopped")[-1]["data"]
    assert stop["reason"] == "budget" and "--max-images" in stop["message"]
    budget.set_limits(repo, run_id, budget.Limits(max_images=10_000))
    assert budget.limits_of(repo, run_id).max_images == 10_000
    summary = Optimizer(store, run_id, llm=ScriptedLLM(script), evaluator=evaluator).run_all()
    assert summary["status"] == "finished" and summary["budget"]["stopped_at_budget"] is None
    # nothing lost, nothing repeated: the same work as the run that never stopped
    counts = repo.counts(run_id)
    assert {k: v for k, v in counts.items() if k != "events"} == {k: v for k, v in repo.counts(straight).items() if k != "events"}
    assert ([r["text"] for r in repo.rewrites(run_id, 2)] == [r["text"] for r in repo.rewrites(straight, 2)])


def test_cost_from_the_price_table_and_the_users_prices(store, repo, tiny):
    run_id = create_run(store, tiny, OptimizeConfig(), PROMPTS)
    for model, p, c in (("gpt-4o-mini-2024-07-18", 1_000_000, 0), ("gpt-4o-mini", 0, 1_000_000), ("my-model", 500, 500),
                        ("smollm2", 10**6, 10**6)):
        store.log_llm_call(run_id=run_id, role="generator", model=model, messages=[], response="x", prompt_tokens=p,
                           completion_tokens=c)
    spent = budget.spent(repo, run_id, {})
    assert spent["cost_usd"] == pytest.approx(0.15 + 0.60) and spent["unpriced_models"] == ["my-model"]
    name, price = budget.parse_price("my-model=2,4")
    assert budget.spent(repo, run_id, {name: price})["cost_usd"] == pytest.approx(0.75 + (500 * 2 + 500 * 4) / 1e6)
    budget.set_limits(repo, run_id, budget.Limits(max_cost=0.5))
    with pytest.raises(budget.BudgetReached, match="--max-cost"):
        budget.check(OptimizeConfig(), repo, run_id, "search", "search round 1")
    for bad in ("gpt=1", "=1,2", "m=-1,2", "m=a,b"):
        with pytest.raises(UserError):
            budget.parse_price(bad)


def test_cli_stops_at_the_llm_call_budget_and_resumes_with_a_raised_one(tmp_path):
    db = tmp_path / "runs.db"
    with ScriptedServer() as server:
        args = ["optimize", "--profile", "tiny", "--llm-base-url", server.url, "--rounds", "2", "--batch-size", "2",
                "--db", str(db), "--seed-recipes", "suffix", *PROMPTS]
        first = runner.invoke(app, [*args, "--max-llm-calls", "3"], terminal_width=200)
        assert first.exit_code == 0, first.output
        assert "cannot cover one round" in first.output and "stopped at its budget" in first.output
        run_id = json.loads(runner.invoke(app, ["runs", "list", "--db", str(db), "--json"]).stdout)[0]["id"]
        shown = runner.invoke(app, ["runs", "show", run_id, "--db", str(db), "--json"])
        b = json.loads(shown.stdout)["budget"]
        assert b["limits"]["max_llm_calls"] == 3 and b["llm_calls"] == 0 and "max-llm-calls" in b["stopped_at_budget"]
        resumed = runner.invoke(app, ["runs", "resume", run_id, "--db", str(db), "--max-llm-calls", "500", "--json"])
        assert resumed.exit_code == 0, resumed.output
        done = json.loads(resumed.stdout)
        assert done["status"] == "finished" and done["budget"]["limits"]["max_llm_calls"] == 500
        assert 0 < done["budget"]["llm_calls"] <= 500 and done["budget"]["cost_usd"] == 0.0
        assert any(r["arm"] == "recipe:suffix" for r in done["heldout"])
        bad = runner.invoke(app, [*args, "--price", "nonsense"])
        assert bad.exit_code == 2 and "--price is MODEL=IN,OUT" in bad.output
