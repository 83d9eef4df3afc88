"""Adding a component is registering it: a reward model and an objective defined here, in the
test file alone, run through the whole loop with no edit to the package; and a stopped SYNTHETIC
experiment run resumes from the command line with the components it recorded."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from promptevo.cli.main import _register_subcommands, app
from promptevo.config import ScorerConfig
from promptevo.errors import UserError
from promptevo.evaluation.components import build_components
from promptevo.llms.backends import ScriptedLLM
from promptevo.optimise.optimizer import Optimizer
from promptevo.optimise.run_config import OptimizeConfig, create_run
from promptevo.registry import Objective, RewardModel, build_reward, kinds, register_objective, register_reward
from promptevo.storage.repository import RunRepository

from .conftest import shared_data
from .scripted import script

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ["a waterfall", "a samurai", "a lighthouse at night", "a fox in the snow", "an old library", "a city street in the rain"]
_register_subcommands()
runner = CliRunner()


class Brightness(RewardModel):
    """Mean pixel value x 100: a reward that needs no model."""

    name, version = "test-brightness-v1", "1"

    def score(self, images, prompts):
        if len(images) != len(prompts):
            raise ValueError("one prompt per image")
        return [100.0 * float(img.float().mean()) for img in images]


@register_reward("test-brightness", name=lambda config: "test-brightness-v1")
def build_brightness(config):
    return Brightness()


class Weighted(Objective):
    def __init__(self, weights):
        self.weights = dict(weights)

    def score(self, scores):
        return sum(w * scores[name] for name, w in self.weights.items())

    def spec(self):
        return {"kind": "test-weighted", "weights": self.weights}


@register_objective("test-weighted")
def build_weighted(weights):
    return Weighted(weights)


def test_a_reward_and_an_objective_registered_here_run_through_the_loop(store, tiny):
    assert "test-brightness" in kinds()["reward"] and "test-weighted" in kinds()["objective"]
    profile = replace(tiny, extra_rewards=(ScorerConfig(version="1", kind="test-brightness"),))
    components = build_components(profile, llm=False)
    assert components.evaluator.reward_names == ("hps-tiny", "test-brightness-v1")
    config = OptimizeConfig(rounds=2, batch_size=2, objective={"kind": "test-weighted", "weights": {"test-brightness-v1": 1.0}})
    run_id = create_run(store, profile, config, PROMPTS)
    summary = Optimizer(store, run_id, llm=ScriptedLLM(script), evaluator=components.evaluator).run_all()
    repo = RunRepository(store)
    trials = repo.trials(run_id)
    assert trials and all(set(t.scores) == {"hps-tiny", "test-brightness-v1"} for t in trials)  # every score stored
    assert summary["objective"] == {"kind": "test-weighted", "weights": {"test-brightness-v1": 1.0}}
    # the statistics are the new objective's: brightness gains over the naive image, by round
    naive = {(t.round, t.prompt_id, t.seed): t.scores["test-brightness-v1"] for t in trials if t.arm == "naive"}
    gains = {}
    for t in trials:
        if t.phase == "search" and t.arm != "naive":
            gains.setdefault(t.instruction_id, []).append(t.scores["test-brightness-v1"] - naive[(t.round, t.prompt_id, t.seed)])
    for item in summary["instructions"]:
        if item["pulls"] == 1:
            assert item["mean_reward"] == pytest.approx(sum(gains[item["id"]]) / len(gains[item["id"]]), abs=1e-9)
    stored = repo.run_config(run_id)
    assert stored["profile"]["extra_rewards"][0]["kind"] == "test-brightness"  # resumable with the same components


def test_unknown_kinds_are_user_errors(tiny):
    with pytest.raises(UserError, match="unknown reward kind 'nope'"):
        build_reward(ScorerConfig(version="1", kind="nope"))
    with pytest.raises(UserError, match="unknown objective kind"):
        from promptevo.registry import build_objective

        build_objective({"kind": "nope"})


def test_a_killed_synthetic_experiment_run_resumes_from_the_command_line(tmp_path):
    config = tmp_path / "exp.toml"
    config.write_text(f"""
name = "resume"
models = "synthetic"
prompts = "{shared_data('seed-paper', 'naive_prompts.txt')}"
prompt_limit = 9
repeats = 2
[optimize]
rounds = 40
batch_size = 2
[arms.only]
selector = "ucb"
""", encoding="utf-8")
    out = tmp_path / "out"
    db = out / "runs" / "only-r0.db"
    proc = subprocess.Popen([sys.executable, "-m", "promptevo", "experiment", "run", str(config), "--out", str(out)],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    from promptevo.storage.store import Store

    deadline, run_id = time.monotonic() + 240, None
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if db.exists():
            try:
                with Store(db, readonly=True) as s:
                    runs = RunRepository(s).runs()
                    if runs and runs[0]["rounds_done"] >= 2:
                        run_id = runs[0]["id"]
                        break
            except UserError:
                continue  # the file is being created
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert run_id, "the experiment did not get two rounds done"
    with Store(db, readonly=True) as s:
        assert RunRepository(s).run(run_id)["status"] == "running"
    r = runner.invoke(app, ["runs", "resume", run_id, "--db", str(db), "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["status"] == "finished" and summary["profile"] == "synthetic"
    assert [x["phase"] for x in summary["rounds"]].count("search") == 40
    assert {row["arm"] for row in summary["heldout"]} == {"best", "initial", "naive"}
