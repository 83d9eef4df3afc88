"""Components registered from outside the package run through the loop: a renderer, a reward, an
LLM backend and an optimiser strategy defined here, and the README's "adding a reward" example
run as the README writes it (a module named in PROMPTEVO_PLUGINS, used by `--objective`)."""

import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from promptevo import registry
from promptevo.config import LLMConfig, Profile, RenderConfig, ScorerConfig
from promptevo.evaluation.components import build_components
from promptevo.optimise.optimizer import Optimizer
from promptevo.optimise.run_config import OptimizeConfig, create_run
from promptevo.registry import Completion, RenderBatch, RewardModel
from promptevo.rewards.objective import weighted_objective

from .scripted import script

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ["a waterfall", "a samurai", "a lighthouse at night", "a fox in the snow", "an old library", "a city street"]


class FlatRenderer:
    """Draws each (prompt, seed) as one flat colour from their hash: cheap, deterministic."""

    def __init__(self, config: RenderConfig):
        self.config, self.batch_limit, self.calls = config, config.max_batch, 0

    def render(self, prompts, seeds):
        import torch

        self.calls += 1
        colours = [[b / 255 for b in hashlib.sha256(f"{p}|{s}".encode()).digest()[:3]] for p, s in zip(prompts, seeds)]
        images = torch.tensor(colours).view(-1, 3, 1, 1).expand(-1, 3, self.config.height, self.config.width)
        return RenderBatch(images.contiguous(), [len(prompts)] * len(prompts))

    def token_count(self, text):
        return len(text.split()) + 2

    def full_decoder(self):
        return self


class Redness(RewardModel):
    name, version = "redness-v1", "v1"

    def score(self, images, prompts):
        return [float(100 * (im[0].mean() - im[1:].mean())) for im in images]


class EchoLLM:
    """An LLM backend answering by role (the test script), every generator reply marked."""

    model_name = "echo"

    def complete(self, requests, *, temperature=None, seed=None):
        texts = [script(r) + (" [echo]" if r.role == "generator" else "") for r in requests]
        return [Completion(text=t, model=self.model_name) for t in texts]


class FirstPromptsStrategy:
    """Always the first prompts and fixed seeds; the lowest ids as arms; one new instruction per
    round made without the LLM; the answer is the best search mean of every instruction."""

    name = "first-prompts"

    def draw(self, opt, r, rng):
        pool = opt.repo.prompts(opt.run_id, "optimize")[: opt.config.batch_size]
        return [p["id"] for p in pool], [[7] for _ in pool]

    def arms(self, opt, r, rng):
        return sorted(p["id"] for p in opt.population())[: opt.config.arms_per_round]

    def evolve(self, opt, r, rewards):
        parent = max(rewards, key=lambda a: (rewards[a], -a))
        return [{"text": f"{opt.repo.instruction(parent)['text']} Round {r}: warmer light.", "parent_id": parent,
                 "gradient_id": None, "llm_call_id": None}]

    def candidates(self, opt):
        return [i for i in opt.repo.instructions(opt.run_id) if i["origin"] != "baseline"]

    def choose(self, opt):
        rows = self.candidates(opt)
        stats = {s.arm: s for s in opt.arm_stats([r["id"] for r in rows]) if s.pulls}
        best = max(stats, key=lambda a: (stats[a].mean, -a))
        return next(r for r in rows if r["id"] == best)


registry.register_renderer("flat-test")(FlatRenderer)
registry.register_reward("redness", name=lambda c: "redness-v1", measures="red minus the other channels", scale=2.0)(
    lambda config: Redness())
registry.register_llm("echo-test")(lambda config: EchoLLM())
registry.register_strategy("first-prompts")(FirstPromptsStrategy)


def test_a_renderer_reward_llm_and_strategy_from_outside_run_through_the_loop(store):
    base = ScorerConfig(version="v1", arch="", device="cpu", kind="redness")
    profile = Profile(name="plugins", description="registered in a test module", llm=LLMConfig(backend="echo-test", model="echo"),
                      render=RenderConfig(model="flat", steps=1, guidance=0.0, width=8, height=8, device="cpu", kind="flat-test"),
                      scorer=base)
    configs, spec = weighted_objective("redness=1,exposure=0.5", scored={"redness": "redness-v1"}, device="cpu")
    profile = dataclasses.replace(profile, extra_rewards=tuple(configs.values()))
    config = OptimizeConfig(rounds=2, batch_size=2, arms_per_round=2, select_prompts=0, objective=spec, strategy="first-prompts")
    run_id = create_run(store, profile, config, PROMPTS)
    components = build_components(profile)
    assert isinstance(components.llm, EchoLLM) and isinstance(components.evaluator.renderer, FlatRenderer)
    summary = Optimizer(store, run_id, llm=components.llm, evaluator=components.evaluator).run_all()

    assert summary["status"] == "finished"
    repo = Optimizer(store, run_id, llm=components.llm, evaluator=components.evaluator).repo
    first = [p["id"] for p in repo.prompts(run_id, "optimize")[:2]]
    search = [r for r in repo.rounds(run_id) if r["phase"] == "search"]
    assert [json.loads(r["plan_json"])["prompts"] for r in search] == [first, first]  # the strategy drew them
    assert all(json.loads(r["plan_json"])["seeds"] == [[7], [7]] for r in search)
    made = [i for i in repo.instructions(run_id) if i["origin"] == "modifier"]
    assert [i["text"].endswith(f"Round {i['created_round']}: warmer light.") for i in made] == [True, True]
    assert all(r["text"].endswith("[echo]") for r in repo.rewrites(run_id))  # the LLM backend wrote every rewrite
    trials = repo.trials(run_id)
    assert trials and all({"redness-v1", "exposure-v1"} <= set(t.scores) for t in trials)  # both rewards, every image
    assert components.evaluator.renderer.calls > 0
    assert summary["objective"]["scales"]["redness-v1"] == 2.0  # the registered fact weighs it
    assert summary["best_instruction"]["id"] == FirstPromptsStrategy().choose(
        Optimizer(store, run_id, llm=components.llm, evaluator=components.evaluator))["id"]


def test_an_unregistered_strategy_is_one_line(store, tiny):
    from promptevo.errors import UserError

    with pytest.raises(UserError, match="unknown strategy kind 'nope'; registered: .*first-prompts.*loop"):
        create_run(store, tiny, OptimizeConfig(strategy="nope"), PROMPTS)


def readme_example() -> str:
    """The README's reward module, exactly as written there."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### Adding a reward"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def run_cli(args, tmp_path, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PROMPTEVO_PLUGINS": "brightness", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "promptevo", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_the_readme_reward_example_is_listed_and_refused_where_it_cannot_work(tmp_path):
    (tmp_path / "brightness.py").write_text(readme_example(), encoding="utf-8")
    listed = run_cli(["rewards", "--json"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    row = next(r for r in json.loads(listed.stdout) if r["kind"] == "brightness")
    assert row["measures"] == "mean brightness of the image" and row["unit"] == 5.0 and row["installed"]
    missing = run_cli(["rewards"], tmp_path / "nowhere")
    assert missing.returncode == 2 and "PROMPTEVO_PLUGINS names 'brightness'" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_the_readme_reward_example_works_with_objective(tmp_path, monkeypatch):
    """The README's command as written (its module on the path, named in PROMPTEVO_PLUGINS), on the
    tiny models with the scripted LLM standing in for SmolLM2: the reward is what is tested."""
    from typer.testing import CliRunner

    from promptevo.cli.main import _register_subcommands, app
    from promptevo.llms.backends import ScriptedLLM

    (tmp_path / "brightness.py").write_text(readme_example(), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PROMPTEVO_PLUGINS", "brightness")
    monkeypatch.setattr(registry, "build_llm", lambda config: ScriptedLLM(script))
    monkeypatch.chdir(ROOT)
    _register_subcommands()
    db = tmp_path / "bright.db"
    r = CliRunner().invoke(app, ["optimize", "--profile", "tiny", "--prompts", "examples/prompts.txt", "--objective",
                                 "hps=1,brightness=1", "--db", str(db), "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["objective"]["weights"] == {"hps-tiny": 1.0, "brightness-v1": 1.0}
    assert summary["objective"]["scales"]["brightness-v1"] == 5.0
    import sqlite3

    with sqlite3.connect(db) as conn:
        values = [v for (v,) in conn.execute("SELECT value FROM scores WHERE scorer = 'brightness-v1'")]
        images = conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    assert len(values) == images > 0 and all(0 <= v <= 100 for v in values)
