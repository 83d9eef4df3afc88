"""How far one driver goes, and what Ray actors add on this machine (issue 17).

    .venv/bin/python benchmarks/ray_scaling.py [--images 256] [--size 512] [--out benchmarks/results/ray-scaling.json]

1. The driver's ceiling: `CachedEvaluator` (the only writer) in front of an evaluator that
   returns ready images and scores in no time, as a GPU fleet would if it were infinitely fast.
   What remains is the driver's bookkeeping per image: (PNG encoding,) the image file, its row,
   one score row per reward. Once with float tensors coming back (the driver encodes the PNGs,
   as with the local evaluator), once with PNG bytes (encoded by the workers, as Ray actors do).
   And whole search rounds (planning, the LLM's rewrites from a scripted LLM, the cache, the
   objective, arm statistics, the critic) in front of the same instant evaluator.
2. Ray: images/s of the tiny models through `RayEvaluator` with one actor and with two, in one
   run, on this machine's cores (each actor gets the same share of a local Ray).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def photographs(size: int):
    """Real photographs (scikit-image's) at size x size, as [N, 3, H, W] floats: PNGs of real
    pictures are the size a render's are (noise would be twice as large)."""
    import skimage.data as data
    import torch
    from PIL import Image

    from promptevo.images import pil_to_tensor

    names = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")
    return pil_to_tensor([Image.fromarray(getattr(data, n)()).convert("RGB").resize((size, size)) for n in names]).to(torch.float32)


class InstantEvaluator:
    """Ready images and scores, no compute: the driver's cost alone."""

    def __init__(self, size: int, rewards: int, png: bool):
        from promptevo.config import RenderConfig
        from promptevo.evaluation.evaluator import Variant
        from promptevo.images import png_bytes, to_uint8

        self.reward_names = tuple(f"reward-{i}" for i in range(rewards))
        self.reward_versions = {n: "v" for n in self.reward_names}
        self.search_variant = self.final_variant = Variant(RenderConfig(model="instant", steps=1, guidance=0.0, width=size, height=size))
        self.photos = photographs(size)
        self.png = png  # send PNG bytes, as Ray workers do (else float tensors, as the local evaluator)
        self.pngs = [png_bytes(p) for p in to_uint8(self.photos)]  # made ahead: the workers' encoding is not the driver's

    def token_count(self, text, variant):
        return len(text.split()) + 2

    def text_window(self, variant):
        return 77

    def score(self, images, targets, rewards=None, texts=None):
        return {n: [0.0] * len(targets) for n in self.reward_names if rewards is None or n in rewards}

    def evaluate(self, jobs):
        from promptevo.evaluation.evaluator import Evaluation

        out = []
        for j in jobs:
            scores = {n: float(hash((j.text, j.seed, n)) % 1000) / 100 for n in self.reward_names}
            k = j.seed % len(self.pngs)
            if self.png:
                # distinct bytes per job (every image its own file, as in a real run): the trailer
                # replaced by the seed; the driver writes PNGs and reads only their header
                out.append(Evaluation(j, None, scores, len(jobs), png=self.pngs[k][:-12] + j.seed.to_bytes(12, "big")))
            else:  # a distinct picture per job: one pixel row nudged by the seed
                image = self.photos[k].clone()
                image[0, 0, : 32] = (j.seed % 997) / 997.0
                out.append(Evaluation(j, image, scores, len(jobs)))
        return out


def driver_ceiling(images: int, size: int, rewards: int, batch: int, png: bool) -> dict:
    from promptevo.evaluation.evaluator import CachedEvaluator, Job
    from promptevo.storage.store import Store

    inner = InstantEvaluator(size, rewards, png)
    jobs = [Job(f"prompt {i}", i, f"prompt {i}", inner.search_variant) for i in range(images)]
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "ceiling.db") as store:
        cached = CachedEvaluator(store, inner)
        t0 = time.perf_counter()
        for start in range(0, images, batch):
            cached.evaluate(jobs[start:start + batch])
        total = time.perf_counter() - t0
        assert store.one("SELECT COUNT(*) AS n FROM images")["n"] == images
    return {"images": images, "size": size, "rewards": rewards, "batch": batch, "seconds": round(total, 3),
            "images_per_s": round(images / total, 1),
            "png_kb": round(sum(map(len, inner.pngs)) / len(inner.pngs) / 1024, 1)}


def loop_ceiling(size: int, rewards: int, prompts: int, arms: int, rounds: int) -> dict:
    """Whole search rounds (planning, rewrites by a scripted LLM, the cache and its writes, the
    objective, arm statistics, the critic) in front of the instant evaluator: images/s of the
    optimiser's own bookkeeping when rendering and scoring cost nothing."""
    from promptevo.config import PROFILES
    from promptevo.lab.bench import scripted_llm
    from promptevo.optimise.optimizer import Optimizer
    from promptevo.optimise.run_config import OptimizeConfig, create_run
    from promptevo.rewards.objective import weighted_spec
    from promptevo.storage.store import Store

    inner = InstantEvaluator(size, rewards, png=True)
    spec = weighted_spec({"hps": 1.0}, {}, {"hps": inner.reward_names[0]})
    config = OptimizeConfig(rounds=rounds, batch_size=prompts, population=arms + 1, arms_per_round=arms,
                            new_per_gradient=1, select_prompts=0, heldout_fraction=0.1, objective=spec)
    names = [f"subject {i}" for i in range(prompts * 2)]
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "loop.db") as store:
        run_id = create_run(store, PROFILES["tiny"], config, names)
        optimizer = Optimizer(store, run_id, llm=scripted_llm(), evaluator=inner)
        t0 = time.perf_counter()
        for r in range(1, rounds + 1):
            optimizer.search_round(r)
        total = time.perf_counter() - t0
        images = store.one("SELECT COUNT(*) AS n FROM images")["n"]
        trials = store.one("SELECT COUNT(*) AS n FROM trials")["n"]
    # the scripted LLM gives every instruction the same rewrite, so arms share images: trials
    # (one per arm, prompt and seed, each with its scores) are the loop's unit of work
    return {"rounds": rounds, "trials": trials, "images": images, "seconds": round(total, 3),
            "trials_per_s": round(trials / total, 1), "images_per_s": round(images / total, 1)}


def ray_scaling(images: int) -> dict:
    import ray

    from promptevo.config import PROFILES
    from promptevo.evaluation.evaluator import EvaluatorSpec, Job
    from promptevo.evaluation.ray_workers import RayEvaluator

    tiny = PROFILES["tiny"]
    cores = os.cpu_count() or 1
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, configure_logging=False)
    out = {}
    try:
        for actors in (1, 2):
            ev = RayEvaluator(EvaluatorSpec(render=tiny.render, rewards=tiny.rewards), actors=actors,
                              actor_options={"num_cpus": cores // actors})
            jobs = [Job(f"a waterfall #{i}", i, "a waterfall", ev.search_variant) for i in range(images)]
            ev.evaluate(jobs[: 2 * actors])  # warm: models loaded, first calls done
            t0 = time.perf_counter()
            ev.evaluate(jobs)
            out[f"{actors}_actor"] = round(images / (time.perf_counter() - t0), 2)
            for a in ev.actors:
                ray.kill(a)
    finally:
        ray.shutdown()
    out["ratio_2_to_1"] = round(out["2_actor"] / out["1_actor"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rewards", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--ray-images", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ray-scaling.json"))
    args = parser.parse_args()
    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
              # the driver's ceiling when it encodes PNGs itself (the local evaluator's tensors) and
              # when workers send PNG bytes (the Ray evaluator)
              "driver_ceiling_tensors": driver_ceiling(args.images, args.size, args.rewards, args.batch, png=False),
              "driver_ceiling_pngs": driver_ceiling(args.images, args.size, args.rewards, args.batch, png=True),
              "loop_ceiling": loop_ceiling(args.size, args.rewards, prompts=64, arms=4, rounds=4),
              "target_images_per_s": 1600,
              "ray_tiny": ray_scaling(args.ray_images)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
