"""`--workers ray`: the evaluator on Ray actors, on a local Ray this module starts itself (two
logical "gpu_slot" resources stand in for GPUs), with the tiny models and the scripted LLM."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from promptevo.cli.main import _register_subcommands, app
from promptevo.evaluation.evaluator import EvaluatorSpec, Job
from promptevo.evaluation.ray_workers import shards

_register_subcommands()
runner = CliRunner()
PROMPTS = ["a waterfall", "a samurai", "a lighthouse at night", "a fox in the snow", "an old library", "a desert at dawn"]


def jobs_for(variant, n=12):
    return [Job(f"{PROMPTS[i % len(PROMPTS)]}, detailed", 100 + i, PROMPTS[i % len(PROMPTS)], variant) for i in range(n)]


def test_shards_split_by_image_in_order_and_near_equal(tiny):
    from promptevo.evaluation.evaluator import Variant

    v = Variant(tiny.render)
    jobs = jobs_for(v, 7)
    jobs.insert(3, Job(jobs[0].text, jobs[0].seed, "another target", v))  # same image, another target
    parts = shards(jobs + jobs[:2], 3)  # duplicates are evaluated once
    assert [len({(j.text, j.seed) for j in p}) for p in parts] == [3, 2, 2]
    flat = [j for p in parts for j in p]
    assert sorted(flat, key=jobs.index) == list(dict.fromkeys(jobs))  # each distinct job once
    image = lambda j: (j.text, j.seed)  # noqa: E731
    assert list(dict.fromkeys(map(image, flat))) == list(dict.fromkeys(map(image, jobs)))  # images in order
    assert jobs[3] in parts[0]  # with the other job of its image
    assert shards(jobs[:1], 4) == [[jobs[0]]]


def test_workers_ray_without_ray_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as when it is not installed
    r = runner.invoke(app, ["optimize", "a fox", "a cat", "--workers", "ray", "--db", str(tmp_path / "x.db")])
    assert r.exit_code == 2 and "pip install 'promptevo[ray]'" in r.output
    assert not (tmp_path / "x.db").exists()
    bad = runner.invoke(app, ["optimize", "a fox", "a cat", "--workers", "mpi", "--db", str(tmp_path / "x.db")])
    assert bad.exit_code == 2 and "--workers is local or ray" in bad.output


@pytest.fixture(scope="module")
def ray_evaluator(tiny):
    import ray

    ray.init(num_cpus=2, resources={"gpu_slot": 2}, include_dashboard=False, log_to_driver=False, configure_logging=False)
    from promptevo.evaluation.ray_workers import RayEvaluator

    spec = EvaluatorSpec(render=tiny.render, rewards=tiny.rewards)
    evaluator = RayEvaluator(spec, actors=2, actor_options={"num_cpus": 0, "resources": {"gpu_slot": 1}})
    try:
        yield evaluator
    finally:
        evaluator.close()
        ray.shutdown()


def _same(a, b):
    assert [e.job for e in a] == [e.job for e in b]
    for x, y in zip(a, b):
        assert x.image is None and x.png[:8] == b"\x89PNG\r\n\x1a\n"  # encoded on the actor
        assert float((x.pixels() - y.image.clamp(0, 1)).abs().max()) < 1 / 255 + 2e-3  # PNG holds 8 bits
        assert x.scores.keys() == y.scores.keys() and all(abs(x.scores[k] - y.scores[k]) < 2e-3 for k in x.scores)


@pytest.mark.slow
def test_ray_actors_give_the_local_evaluators_results_in_job_order(ray_evaluator, evaluator):
    import ray

    jobs = jobs_for(ray_evaluator.search_variant)
    got = ray_evaluator.evaluate(jobs + jobs[:3])
    _same(got, evaluator.evaluate(jobs + jobs[:3]))
    assert len({ray.get(a.pid.remote()) for a in ray_evaluator.actors}) == 2  # two actor processes did the work
    assert ray_evaluator.reward_names == evaluator.reward_names
    text = "a waterfall in the mist"
    assert ray_evaluator.token_count(text, ray_evaluator.search_variant) == evaluator.token_count(text, evaluator.search_variant)


@pytest.mark.slow
def test_an_actor_killed_mid_batch_loses_and_duplicates_nothing(ray_evaluator, evaluator, store):
    import ray

    from promptevo.evaluation.evaluator import CachedEvaluator

    cached = CachedEvaluator(store, ray_evaluator)
    jobs = jobs_for(ray_evaluator.search_variant, 24)
    pid = ray.get(ray_evaluator.actors[0].pid.remote())
    result = {}
    thread = threading.Thread(target=lambda: result.update(out=cached.evaluate(jobs)))
    thread.start()
    time.sleep(0.5)  # the batch is on its way to the actors
    in_flight = thread.is_alive()
    ray.kill(ray_evaluator.actors[0], no_restart=False)  # the process dies; Ray restarts it and re-runs its call
    assert in_flight
    thread.join(timeout=300)
    assert not thread.is_alive()
    assert ray.get(ray_evaluator.actors[0].pid.remote()) != pid  # a new process
    out = result["out"]
    assert [o.job for o in out] == jobs and not any(o.cached for o in out)
    images = store.one("SELECT COUNT(*) AS n FROM images")["n"]
    scores = store.one("SELECT COUNT(*) AS n FROM scores")["n"]
    assert images == len(jobs) and scores == len(jobs) * len(ray_evaluator.reward_names)
    local = evaluator.evaluate(jobs)
    assert np.allclose([o.score for o in out], [e.scores[evaluator.reward_names[0]] for e in local], atol=2e-3)
    again = cached.evaluate(jobs)  # everything is in the store now
    assert all(o.cached for o in again) and store.one("SELECT COUNT(*) AS n FROM images")["n"] == images


@pytest.mark.slow
def test_a_whole_optimisation_on_ray_matches_the_local_one(ray_evaluator, evaluator, tmp_path, tiny):
    from promptevo.llms.backends import ScriptedLLM
    from promptevo.optimise.optimizer import Optimizer
    from promptevo.optimise.run_config import OptimizeConfig, create_run
    from promptevo.storage.store import Store
    from tests.scripted import script

    config = OptimizeConfig(rounds=2, batch_size=3, population=2, new_per_gradient=1, select_prompts=2, eval_seeds=1)
    tables = []
    for name, ev in (("local", evaluator), ("ray", ray_evaluator)):
        with Store(tmp_path / f"{name}.db") as store:
            run_id = create_run(store, tiny, config, PROMPTS)
            tables.append(Optimizer(store, run_id, llm=ScriptedLLM(script), evaluator=ev).run_all()["heldout"])
    local, on_ray = tables
    assert [r["arm"] for r in local] == [r["arm"] for r in on_ray]
    for a, b in zip(local, on_ray):
        assert abs(a["score_mean"] - b["score_mean"]) < 2e-3


@pytest.mark.slow
def test_a_driver_killed_on_ray_resumes_to_the_uninterrupted_result(tmp_path, tiny, evaluator):
    """SIGKILL the driver (and with it the Ray it started) in round 2; a new driver on a new
    Ray finishes the run, with the counts and held-out numbers of an uninterrupted local run."""
    from promptevo.llms.backends import ScriptedLLM
    from promptevo.optimise.optimizer import Optimizer
    from promptevo.optimise.run_config import OptimizeConfig, create_run
    from promptevo.storage.repository import RunRepository
    from promptevo.storage.store import Store
    from tests.scripted import script

    root = Path(__file__).resolve().parent.parent
    config = OptimizeConfig(rounds=3, batch_size=2, population=2, new_per_gradient=1, select_prompts=2, eval_seeds=1)
    with Store(tmp_path / "straight.db") as store:
        rid = create_run(store, tiny, config, PROMPTS)
        expected = Optimizer(store, rid, llm=ScriptedLLM(script), evaluator=evaluator).run_all()
        expected_counts = RunRepository(store).counts(rid)
    db = tmp_path / "killed.db"
    with Store(db) as store:
        run_id = create_run(store, tiny, config, PROMPTS)
    env = {**os.environ, "PYTHONPATH": str(root)}
    driver = subprocess.Popen([sys.executable, "-m", "tests.loop_driver", str(db), run_id, "ray"], cwd=root, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    for line in driver.stdout:
        if line.startswith("stage rendering and scoring|2"):
            os.killpg(driver.pid, signal.SIGKILL)  # the driver and everything it started
            break
    driver.wait(timeout=60)
    assert driver.returncode == -signal.SIGKILL
    again = subprocess.run([sys.executable, "-m", "tests.loop_driver", str(db), run_id, "ray"], cwd=root, env=env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "done" in again.stdout, again.stdout[-2000:]
    with Store(db) as store:
        repo = RunRepository(store)
        got = {k: v for k, v in repo.counts(run_id).items() if k not in ("events", "llm_calls")}
        assert got == {k: v for k, v in expected_counts.items() if k not in ("events", "llm_calls")}
        heldout = {r["arm"]: r["score_mean"] for r in Optimizer(store, run_id, llm=ScriptedLLM(script), evaluator=evaluator)
                   .run_all()["heldout"]}
    assert heldout.keys() == {r["arm"] for r in expected["heldout"]}
    assert all(abs(heldout[r["arm"]] - r["score_mean"]) < 2e-3 for r in expected["heldout"])


@pytest.mark.slow
def test_bulk_scoring_with_ray_data_equals_local_scoring(tmp_path, ray_evaluator):
    """`db score --workers ray` (Ray Data, the driver writing back) gives the scores the local
    evaluator gives, and a second run finds everything in the cache."""
    import json

    from promptevo.storage.store import Store

    (tmp_path / "p.txt").write_text("\n".join(PROMPTS) + "\n")
    dbs = {}
    for name in ("local", "ray"):
        dbs[name] = tmp_path / f"{name}.db"
        assert runner.invoke(app, ["db", "import", str(tmp_path / "p.txt"), "--db", str(dbs[name])]).exit_code == 0
    local = runner.invoke(app, ["db", "score", "--db", str(dbs["local"]), "--seeds", "2", "--json"])
    on_ray = runner.invoke(app, ["db", "score", "--db", str(dbs["ray"]), "--seeds", "2", "--batch", "4", "--workers", "ray", "--json"])
    assert local.exit_code == 0 and on_ray.exit_code == 0, on_ray.output
    a, b = ({r["text"]: r for r in json.loads(x.stdout)} for x in (local, on_ray))
    assert a.keys() == b.keys() == set(PROMPTS)
    assert all(abs(a[t]["mean"] - b[t]["mean"]) < 2e-3 for t in a)
    again = runner.invoke(app, ["db", "score", "--db", str(dbs["ray"]), "--seeds", "2", "--workers", "ray", "--json"])
    assert all(r["cached"] == 2 for r in json.loads(again.stdout))  # nothing rendered twice
    with Store(dbs["ray"]) as store:
        assert store.one("SELECT COUNT(*) AS n FROM images")["n"] == 2 * len(PROMPTS)


@pytest.mark.slow
def test_a_job_its_actor_raises_on_fails_alone_and_the_rest_is_stored(ray_evaluator, store):
    """A job the workers raise on (a variant with a post-render operation nobody registered)
    comes back with its error; the other jobs of its batch and shard are evaluated and stored,
    and it is stored nowhere."""
    from promptevo.evaluation.evaluator import CachedEvaluator, PostOp, Variant

    jobs = jobs_for(ray_evaluator.search_variant, 6)
    other = Variant(ray_evaluator.search_variant.render, (PostOp("no-such-op", 1.0),))
    bad = Job("a waterfall, unrenderable", 7, "a waterfall", other)
    out = CachedEvaluator(store, ray_evaluator).evaluate(jobs[:2] + [bad] + jobs[2:])
    assert [o.job for o in out] == jobs[:2] + [bad] + jobs[2:]
    failed = [o for o in out if o.error]
    assert [o.job for o in failed] == [bad] and "no-such-op" in failed[0].error and failed[0].image_id is None
    assert all(o.image_id and len(o.scores) == len(ray_evaluator.reward_names) for o in out if o is not failed[0])
    assert store.one("SELECT COUNT(*) AS n FROM images")["n"] == len(jobs)


def test_a_failed_job_is_recorded_and_the_round_goes_on(store, repo, tiny, evaluator):
    """The optimiser stores every trial but the failed one's and records why it failed (a
    scripted evaluator fails one job, as a Ray worker that raised on it reports it)."""
    from promptevo.evaluation.evaluator import CachedEvaluator
    from promptevo.llms.backends import ScriptedLLM
    from promptevo.optimise.optimizer import Optimizer
    from promptevo.optimise.run_config import OptimizeConfig, create_run
    from tests.scripted import script

    class FailsOne:
        def __init__(self, inner):
            self.inner = inner
            self.reward_names, self.reward_versions = inner.reward_names, inner.reward_versions
            self.search_variant, self.final_variant = inner.search_variant, inner.final_variant
            self.token_count, self.text_window, self.score = inner.token_count, inner.text_window, inner.score
            self.failed = None

        def evaluate(self, jobs):
            from promptevo.evaluation.evaluator import Evaluation

            out = self.inner.evaluate(jobs)
            if self.failed is None:
                self.failed = next((j for j in jobs if j.text != j.target), None)  # one rewrite (naive jobs come first)
            return [Evaluation(e.job, None, {}, 0, error="RuntimeError: CUDA error: out of memory")
                    if e.job == self.failed else e for e in out]

    config = OptimizeConfig(rounds=1, batch_size=3, population=2, select_prompts=0, eval_seeds=1, new_per_gradient=1)
    run_id = create_run(store, tiny, config, PROMPTS)
    fails = FailsOne(evaluator)
    opt = Optimizer(store, run_id, llm=ScriptedLLM(script), evaluator=fails)
    opt.search_round(1)
    events = repo.events(run_id, "job_failed")
    assert len(events) == 1 and "out of memory" in events[0]["data"]["error"] and events[0]["data"]["text"] == fails.failed.text
    trials = repo.trials(run_id, round=1)
    plan = repo.round(run_id, 1)
    assert len(trials) == 3 * (1 + 2) - 1  # naive + two arms on three prompts, less the failed one
    assert not [t for t in trials if t.rendered == fails.failed.text and t.seed == fails.failed.seed]
    assert plan["status"] == "finished"
    assert CachedEvaluator(store, evaluator).missing([fails.failed]) == [fails.failed]  # nothing stored for it
