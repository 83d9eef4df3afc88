"""Render variants as arms: parsing, the model pool (lazy, shared, bounded), failing variants,
routing, and `optimize --variant` as a user runs it."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from promptevo.cli.main import _register_subcommands, app
from promptevo.errors import UserError
from promptevo.llms.backends import ScriptedLLM

from .scripted import script
from .test_end_to_end import promptevo

_register_subcommands()
runner = CliRunner()
PROMPTS = ["a waterfall", "a samurai", "a lighthouse at night", "a fox in the snow", "an old library", "a city street in the rain",
           "a desert at dawn", "a tiger", "a steam locomotive"]


def test_variant_specs_parse_and_refuse_bad_settings(tmp_path):
    from promptevo.config import PROFILES
    from promptevo.optimise.variants import (
        load_variants,
        named,
        parse_variant,
        render_of,
    )

    assert parse_variant("steps=2, guidance=5,size=128x64,name=fast") == {
        "steps": 2, "guidance": 5.0, "width": 128, "height": 64, "name": "fast"}
    for bad, message in [("steps", "KEY=VALUE"), ("colour=red", "unknown setting 'colour'"), ("steps=two", "whole number"),
                         ("steps=0", "at least 1"), ("size=100x64", "multiple of 8")]:
        with pytest.raises(UserError, match=message):
            parse_variant(bad)
    assert [s["name"] for s in named([{"steps": 1}, {"steps": 2, "guidance": 3.0}])] == ["steps=1", "steps=2,guidance=3.0"]
    with pytest.raises(UserError, match="two variants are named"):
        named([{"steps": 1}, {"steps": 1}])
    tiny = PROFILES["tiny"].render
    assert render_of(tiny, {"model": "/some/folder"}).kind == "diffusers"  # not the tiny model any more
    assert render_of(tiny, {"steps": 1}).kind == "tiny" and render_of(tiny, {"steps": 1}).hash != tiny.hash
    (tmp_path / "v.toml").write_text('[[variant]]\nname = "one"\nsteps = 1\n[[variant]]\nsteps = 2\nscheduler = "DDIMScheduler"\n')
    assert load_variants(tmp_path / "v.toml") == [{"name": "one", "steps": 1}, {"steps": 2, "scheduler": "DDIMScheduler"}]
    with pytest.raises(UserError, match="no \\[\\[variant\\]\\] tables"):
        (tmp_path / "e.toml").write_text("x = 1\n")
        load_variants(tmp_path / "e.toml")


@pytest.fixture(scope="module")
def three_models(tmp_path_factory):
    """Three tiny Stable Diffusion folders: three models as far as the pool can tell."""
    from promptevo.renderers.tiny import tiny_sd_path

    root = tmp_path_factory.mktemp("models")
    return [shutil.copytree(tiny_sd_path(), root / name) for name in ("a", "b", "c")]


def _config(folder, **kw):
    from promptevo.config import RenderConfig

    return RenderConfig(model=str(folder), steps=kw.pop("steps", 2), guidance=0.0, width=64, height=64, device="cpu", **kw)


def test_pool_loads_lazily_shares_a_model_between_variants_and_releases_the_least_recently_used(three_models):
    from promptevo.evaluation.model_pool import ModelPool
    from promptevo.registry import build_renderer

    a, b, c = three_models
    pool = ModelPool(build_renderer, max_models=2)
    assert pool.loaded() == [] and pool.loads == 0  # nothing until asked
    two = pool.get(_config(a))
    one = pool.get(_config(a, steps=1))
    euler = pool.get(_config(a, scheduler="DDIMScheduler"))  # the tiny model samples with Euler
    assert pool.loads == 1 and one.pipe is two.pipe is euler.pipe  # one model, three variants: one copy in memory
    own_scheduler = type(two.pipe.scheduler)
    images = [r.render(["a red fox"], [7]).images for r in (two, one, euler)]
    assert not np.allclose(images[0].numpy(), images[1].numpy())  # the variant's steps are honoured
    assert not np.allclose(images[0].numpy(), images[2].numpy())  # and its scheduler
    assert type(two.pipe.scheduler) is own_scheduler  # swapped in for the call only
    assert np.allclose(two.render(["a red fox"], [7]).images.numpy(), images[0].numpy())

    pool.get(_config(b))
    pool.get(_config(a))  # a is now the most recently used
    pool.get(_config(c))  # over the bound: b goes
    assert pool.loads == 3 and pool.peak == 2
    assert [key[1] for key in pool.loaded()] == [str(a), str(c)]
    pool.get(_config(b))  # loaded again when asked for, releasing a
    assert pool.loads == 4 and [key[1] for key in pool.loaded()] == [str(c), str(b)] and pool.peak == 2


def test_a_variant_that_cannot_load_fails_its_jobs_alone(evaluator, tmp_path):
    from promptevo.evaluation.evaluator import Job, Variant
    from promptevo.optimise.variants import variant_of

    broken = variant_of(evaluator.search_variant, {"model": str(tmp_path / "no-such-model")})
    fast = variant_of(evaluator.search_variant, {"steps": 1})
    jobs = [Job("a fox", 1, "a fox", evaluator.search_variant), Job("a fox", 1, "a fox", broken),
            Job("a fox", 1, "a fox", fast)]
    out = evaluator.evaluate(jobs)
    assert out[0].error is None and out[2].error is None and out[0].scores and out[2].render_s > 0
    assert "does not exist" in out[1].error and out[1].image is None
    loads = evaluator.pool.loads
    again = evaluator.evaluate([Job("a cat", 2, "a cat", broken)])
    assert again[0].error == out[1].error and evaluator.pool.loads == loads  # remembered, not loaded again
    assert isinstance(broken, Variant) and broken.hash != fast.hash


def test_routing_groups_prompts_and_picks_each_groups_best_arm():
    from promptevo.optimise.routing import assign, kmeans, route_table

    rng = np.random.default_rng(0)
    centres = np.eye(4)[:2]
    vectors = np.concatenate([centres[0] + 0.05 * rng.normal(size=(6, 4)), centres[1] + 0.05 * rng.normal(size=(6, 4))])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    c = kmeans(vectors, 2, seed=1)
    labels = assign(vectors, c)
    assert len(set(labels[:6])) == 1 and len(set(labels[6:])) == 1 and labels[0] != labels[6]
    assert np.array_equal(c, kmeans(vectors, 2, seed=1))  # deterministic
    group = {f"p{i}": int(g) for i, g in enumerate(labels)}
    # arm 1 is good on the first six prompts, arm 2 on the last six; arm 3 is never seen twice in a group
    gains = [(1, f"p{i}", 1.0 if i < 6 else -1.0) for i in range(12)] + [(2, f"p{i}", -1.0 if i < 6 else 1.0) for i in range(12)]
    gains.append((3, "p0", 9.0))
    table = {r["group"]: r for r in route_table(gains, group, 2, fallback=3)}
    assert table[labels[0]]["arm_id"] == 1 and table[labels[6]]["arm_id"] == 2 and table[labels[0]]["n"] == 6
    assert route_table(gains, group, 3, fallback=3)[2] == {"group": 2, "arm_id": 3, "gain": None, "n": 0}  # an empty group


def test_optimise_instruction_and_variant_with_a_failing_variant_routes_and_records_cost(store, repo, tiny, evaluator, tmp_path):
    from promptevo.optimise.optimizer import Optimizer
    from promptevo.optimise.run_config import OptimizeConfig, create_run
    from promptevo.optimise.variants import named

    variants = tuple(named([{"steps": 1}, {"steps": 2}, {"model": str(tmp_path / "missing"), "name": "broken"}]))
    config = OptimizeConfig(rounds=3, batch_size=3, arms_per_round=3, eval_seeds=1, route_groups=2, variants=variants)
    run_id = create_run(store, tiny, config, PROMPTS)
    summary = Optimizer(store, run_id, llm=ScriptedLLM(script), evaluator=evaluator).run_all()
    assert summary["status"] == "finished"
    rows = {v["name"]: v for v in repo.variants(run_id)}
    assert rows["broken"]["status"] == "failed" and "does not exist" in rows["broken"]["error"]
    assert [e["data"]["name"] for e in repo.events(run_id, "variant_failed")] == ["broken"]
    assert rows["steps=1"]["images"] > 0 and rows["steps=1"]["seconds_per_image"] > 0
    search = [json.loads(r["plan_json"]) for r in repo.rounds(run_id) if r["phase"] == "search"]
    broken_id = rows["broken"]["id"]
    first = [r for r in search if any(v == broken_id for _, v in r["pairs"])]
    assert first and all(v != broken_id for r in search[search.index(first[0]) + 1:] for _, v in r["pairs"])  # retired
    # trials are credited to their (instruction, variant) arm, and the arms are stored
    arms = {(a["instruction_id"], a["variant_id"]) for a in repo.arms(run_id)}
    assert {tuple(p) for r in search for p in r["pairs"]} <= arms
    v = summary["variants"]
    assert {r["name"] for r in v["variants"] if r["pulls"]} >= {"steps=1", "steps=2"}
    assert v["routing"] and all(r["variant"] != "broken" for r in v["routing"])
    assert {r["arm"] for r in summary["heldout"]} >= {"best", "routed", "naive"} and v["routed_vs_best"]["n"] == 3
    routed = [t for t in repo.trials(run_id, phase="evaluation") if t.arm == "routed"]
    by_route = {(r["instruction_id"], r["variant_id"]) for r in repo.routes(run_id)}
    hashes = {r["final_hash"]: r["id"] for r in repo.variants(run_id)}
    assert routed and all((t.instruction_id, hashes[t.variant_hash]) in by_route for t in routed)
    naive = [t for t in repo.trials(run_id, phase="search") if t.arm == "naive"]
    assert {t.variant_hash for t in naive} == {evaluator.search_variant.hash}  # naive prompts on the profile's settings

    # resuming a finished run recomputes nothing and keeps the table
    before = repo.routes(run_id)
    Optimizer(store, run_id, llm=ScriptedLLM(script), evaluator=evaluator).run_all()
    assert repo.routes(run_id) == before


def test_joint_search_selects_pairs_and_cost_weight_needs_variants(store, repo, tiny, evaluator):
    from promptevo.optimise.optimizer import Optimizer
    from promptevo.optimise.run_config import OptimizeConfig, create_run
    from promptevo.optimise.variants import named

    config = OptimizeConfig(rounds=2, batch_size=2, arms_per_round=2, eval_seeds=1, variant_search="joint",
                            variants=tuple(named([{"steps": 1}, {"steps": 2}])), cost_weight=0.5)
    run_id = create_run(store, tiny, config, PROMPTS[:6])
    summary = Optimizer(store, run_id, llm=ScriptedLLM(script), evaluator=evaluator).run_all()
    # joint: every live instruction x variant pair is an arm, unpulled ones tried first
    assert len(repo.arms(run_id)) >= 6 and summary["variants"]["search"] == "joint"
    pairs = [tuple(p) for r in repo.rounds(run_id) if r["phase"] == "search" for p in json.loads(r["plan_json"])["pairs"]]
    assert len(set(pairs)) == len(pairs) == 4
    with pytest.raises(UserError, match="--cost-weight weighs the variants' cost"):
        dataclasses.replace(config, variants=()).validate()
    assert "variants" not in OptimizeConfig().to_dict()  # runs without variants keep their config hash


def test_optimize_variant_errors_exit_2(tmp_path):
    db = tmp_path / "x.db"
    for args, message in [(["--variant", "steps=zero"], "whole number"), (["--variant", "colour=red"], "unknown setting"),
                          (["--cost-weight", "1"], "give candidate variants"),
                          (["--variants", str(tmp_path / "none.toml")], "does not exist"),
                          (["--variant", "steps=1", "--variant-search", "both"], "factored or joint")]:
        result = runner.invoke(app, ["optimize", "a fox", "a cat", "a dog", "--db", str(db), *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
    assert not db.exists()


@pytest.mark.slow
def test_optimize_with_two_tiny_variants_then_apply_routes(tmp_path):
    """The issue's command on the real tiny models and SmolLM2: instruction and variant optimised
    together, the routing table stored and shown, and `apply` routing new prompts by it."""
    db = tmp_path / "run.db"
    p = promptevo("optimize", "--profile", "tiny", "--prompts", "examples/prompts.txt", "--variant", "steps=1", "--variant",
                  "steps=2", "--rounds", "1", "--eval-seeds", "1", "--new-per-gradient", "1", "--db", str(db), "--json")
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads(p.stdout)
    v = summary["variants"]
    assert {r["name"] for r in v["variants"]} == {"steps=1", "steps=2"} and v["routing"]
    assert all(r["seconds_per_image"] > 0 for r in v["variants"] if r["images"])
    run_id = summary["run_id"]
    shown = promptevo("runs", "show", run_id, "--db", str(db))
    assert shown.returncode == 0 and "routing table" in shown.stdout and "gain per GPU-s" in shown.stdout
    report = promptevo("runs", "report", run_id, "--db", str(db), "-o", str(tmp_path / "r.html"))
    assert report.returncode == 0 and "<h2>Routing table</h2>" in (tmp_path / "r.html").read_text()
    exported = promptevo("runs", "export", run_id, "--db", str(db))
    assert json.loads(exported.stdout)["routes"] and len(json.loads(exported.stdout)["variants"]) == 2
    applied = promptevo("apply", run_id, "a red bicycle", "a portrait of an old fisherman", "--db", str(db), "--json")
    assert applied.returncode == 0, applied.stderr[-2000:]
    rows = json.loads(applied.stdout)
    routes = {r["group"]: r for r in v["routing"]}
    assert len(rows) == 2 and all(r["variant"] == routes[r["group"]]["variant"] for r in rows)
    assert all(r["instruction_id"] == routes[r["group"]]["instruction_id"] and r["rewrite"] for r in rows)
    assert all(r["render"] == {"steps": int(r["variant"].split("=")[1])} for r in rows)


def test_a_variant_of_another_model_brings_its_defaults_and_its_own_text_window(evaluator):
    from promptevo.config import get_profile
    from promptevo.evaluation.evaluator import Job, Variant
    from promptevo.optimise.variants import render_of, variant_of

    gpu = get_profile("gpu").render
    flux = render_of(gpu, {"model": "black-forest-labs/FLUX.1-schnell"})
    assert (flux.steps, flux.guidance, flux.width, flux.dtype) == (4, 0.0, 1024, "bfloat16")  # FLUX's own, not SD-Turbo's
    mine = render_of(gpu, {"model": "black-forest-labs/FLUX.1-schnell", "steps": 2, "width": 512})
    assert (mine.steps, mine.width, mine.height) == (2, 512, 1024)  # the spec's settings over the model's
    assert render_of(gpu, {"steps": 2}).width == 512  # the same model keeps the run's settings
    searching = dataclasses.replace(gpu, tiny_vae="madebyollin/taesd")
    assert render_of(searching, {"model": "black-forest-labs/FLUX.1-schnell"}).tiny_vae == "madebyollin/taef1"

    dit = variant_of(evaluator.search_variant, {"model": "tiny-flux"})
    assert isinstance(dit, Variant) and dit.render.kind == "diffusers"
    assert evaluator.text_window(evaluator.search_variant) == 77 and evaluator.text_window(dit) == 256
    long = "a fox " * 60  # about 120 CLIP tokens
    assert evaluator.token_count(long, evaluator.search_variant) > 77
    out = evaluator.evaluate([Job(long, 1, "a fox", dit), Job("a fox", 1, "a fox", evaluator.search_variant)])
    assert out[0].error is None and out[0].scores and out[0].scores != out[1].scores
