"""Runs (or resumes) an optimisation run with the scripted LLM and the tiny models, in its own
process, so tests can kill it with SIGKILL at any moment. Prints each stage as it starts.
A third argument `ray` renders and scores on two actors of a local Ray it starts."""

import sys

from promptevo.config import PROFILES
from promptevo.evaluation.components import build_components
from promptevo.llms.backends import ScriptedLLM
from promptevo.optimise.optimizer import Optimizer
from promptevo.storage.store import Store
from tests.scripted import script

if __name__ == "__main__":
    db, run_id = sys.argv[1], sys.argv[2]
    if sys.argv[3:] == ["ray"]:
        import ray

        from promptevo.evaluation.evaluator import EvaluatorSpec
        from promptevo.evaluation.ray_workers import RayEvaluator

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        tiny = PROFILES["tiny"]
        evaluator = RayEvaluator(EvaluatorSpec(render=tiny.render, rewards=tiny.rewards), actors=2,
                                 actor_options={"num_cpus": 0})
    else:
        evaluator = build_components(PROFILES["tiny"], llm=False).evaluator
    print("ready", flush=True)
    with Store(db) as store:
        Optimizer(store, run_id, llm=ScriptedLLM(script), evaluator=evaluator,
                  on_progress=lambda p: print(f"stage {p.stage}|{p.round}", flush=True)).run_all()
    print("done", flush=True)
