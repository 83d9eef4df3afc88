"""Render and score workers on Ray: one actor per GPU, one driver that writes.

`RayEvaluator` has the evaluation boundary's interface, so the optimiser and `CachedEvaluator`
use it unchanged: the cache (the only code that writes images and scores) stays in the driver,
and only what is missing goes out. Each actor builds a `LocalEvaluator` from the picklable
`EvaluatorSpec` once and keeps it (models load once per actor). A batch is split into one
contiguous shard per actor, by image (every job of one (variant, text, seed) goes to the same
actor, so nothing is rendered twice), and the results come back in job order.

Faults: actors restart without limit and Ray re-runs the method calls that were in flight on
the restarted actor (max_task_retries), so a killed actor loses nothing; the driver stores a
batch only once every shard has returned, so nothing is stored twice; a driver killed at any
moment resumes as a local run does, from the store. A job the worker raises on (not a dead
actor) fails alone: its shard is re-run one job at a time and the failed job comes back with its
error, which the optimiser records (event `job_failed`) before going on.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

from promptevo.errors import UserError
from promptevo.evaluation.evaluator import Evaluation, EvaluatorSpec, Job, Variant

INSTALL = "--workers ray needs Ray: pip install 'promptevo[ray]'"
TASK_RETRIES = 3  # re-runs of one call after its actor died (a job that kills every actor stops here)


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError(INSTALL) from None
    return ray


def connect(address: str | None):
    """Ray, started locally or joined at `address` unless this process is already connected;
    returns (ray, whether this call started it)."""
    ray = import_ray()
    if ray.is_initialized():
        return ray, False
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise UserError(f"cannot reach Ray at {address!r}: {exc}") from None
    return ray, True


def actor_defaults(ray, options: dict[str, Any] | None, actors: int | None) -> tuple[dict[str, Any], int]:
    """The actors' resources and how many: one GPU each, one per GPU in the cluster (one CPU
    actor without GPUs), unless given."""
    gpus = int(ray.cluster_resources().get("GPU", 0))
    return options or ({"num_gpus": 1} if gpus else {"num_cpus": 1}), actors or max(gpus, 1)


class EvaluatorWorker:
    """What runs inside one actor: the local evaluator, built once from its spec."""

    def __init__(self, spec: EvaluatorSpec):
        from promptevo.evaluation.evaluator import LocalEvaluator

        self.evaluator = LocalEvaluator.from_spec(spec)

    def describe(self) -> dict[str, Any]:
        ev = self.evaluator
        return {"reward_names": ev.reward_names, "reward_versions": ev.reward_versions,
                "search_variant": ev.search_variant, "final_variant": ev.final_variant}

    def evaluate(self, jobs: Sequence[Job]) -> list[Evaluation]:
        """Each image as PNG bytes: encoded here, in parallel across actors, and far smaller to
        send than a float tensor; the driver only writes them."""
        import torch

        from promptevo.images import png_bytes, to_uint8

        evaluations = self.evaluator.evaluate(jobs)
        drawn = [i for i, e in enumerate(evaluations) if e.error is None]
        pixels = dict(zip(drawn, to_uint8(torch.stack([evaluations[i].image for i in drawn]).detach().cpu()))) if drawn else {}
        return [e if e.error is not None else dataclasses.replace(e, image=None, png=png_bytes(pixels[i]))
                for i, e in enumerate(evaluations)]

    def score(self, images, targets, rewards=None, texts=None) -> dict[str, list[float]]:
        return self.evaluator.score(images, targets, rewards=rewards, texts=texts)

    def token_counts(self, texts: Sequence[str], variant: Variant) -> list[int]:
        return [self.evaluator.token_count(t, variant) for t in texts]

    def text_window(self, variant: Variant) -> int:
        return self.evaluator.text_window(variant)

    def pid(self) -> int:
        return os.getpid()


def shards(jobs: Sequence[Job], n: int) -> list[list[Job]]:
    """The distinct jobs in n contiguous parts of near-equal size by image; empty parts dropped."""
    by_image: dict[tuple[str, str, int], list[Job]] = {}
    for job in dict.fromkeys(jobs):
        by_image.setdefault((job.variant.hash, job.text, job.seed), []).append(job)
    groups = list(by_image.values())
    size, extra = divmod(len(groups), n)
    out, start = [], 0
    for i in range(n):
        end = start + size + (i < extra)
        if end > start:
            out.append([j for g in groups[start:end] for j in g])
        start = end
    return out


class RayEvaluator:
    """An Evaluator whose work runs on Ray actors (a local Ray it starts, or a cluster)."""

    def __init__(self, spec: EvaluatorSpec, *, address: str | None = None, actors: int | None = None,
                 actor_options: dict[str, Any] | None = None):
        ray, self._started = connect(address)
        options, self.size = actor_defaults(ray, actor_options, actors)
        # two calls at a time per actor: the LLM's token counts are answered while a batch renders
        worker = ray.remote(EvaluatorWorker).options(max_restarts=-1, max_task_retries=TASK_RETRIES, max_concurrency=2,
                                                     **options)
        self.actors = [worker.remote(spec) for _ in range(self.size)]
        info = ray.get(self.actors[0].describe.remote())  # missing weights fail here, once
        self.reward_names, self.reward_versions = tuple(info["reward_names"]), dict(info["reward_versions"])
        self.search_variant, self.final_variant = info["search_variant"], info["final_variant"]
        self._tokens: dict[tuple[str, str], int] = {}
        self._windows: dict[str, int] = {}
        self._ray = ray

    def evaluate(self, jobs: Sequence[Job]) -> list[Evaluation]:
        """Every job's evaluation in job order; a job its worker raised on comes back with its
        error (and no image), found by re-running the failed shard one job at a time."""
        parts = shards(jobs, len(self.actors))
        refs = [(a, p, a.evaluate.remote(p)) for a, p in zip(self.actors, parts)]
        done: dict[Job, Evaluation] = {}
        for actor, part, ref in refs:
            try:
                results = self._ray.get(ref)
            except self._ray.exceptions.RayTaskError:  # raised in our code, not a dead actor (Ray re-runs those)
                results = [self._one(actor, job) for job in part]
            done.update((e.job, e) for e in results)
        return [done[j] for j in jobs]

    def _one(self, actor, job: Job) -> Evaluation:
        try:
            return self._ray.get(actor.evaluate.remote([job]))[0]
        except self._ray.exceptions.RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            return Evaluation(job, None, {}, 0, error=f"{type(cause).__name__}: {str(cause)[:500]}")

    def score(self, images, targets: Sequence[str], rewards: Sequence[str] | None = None,
              texts: Sequence[str] | None = None) -> dict[str, list[float]]:
        return self._ray.get(self.actors[0].score.remote(images, list(targets), rewards, list(texts) if texts is not None else None))

    def token_count(self, text: str, variant: Variant) -> int:
        key = (variant.hash, text)
        if key not in self._tokens:
            self._tokens[key] = self._ray.get(self.actors[0].token_counts.remote([text], variant))[0]
        return self._tokens[key]

    def text_window(self, variant: Variant) -> int:
        if variant.hash not in self._windows:
            self._windows[variant.hash] = self._ray.get(self.actors[0].text_window.remote(variant))
        return self._windows[variant.hash]

    def close_actors(self) -> None:
        """Free the actors (and their devices), keeping Ray up for other work."""
        for actor in self.actors:
            self._ray.kill(actor)
        self.actors = []

    def close(self) -> None:
        self.close_actors()
        if self._started:
            self._ray.shutdown()


class ScoreBatch:
    """Ray Data's callable class for bulk scoring: the local evaluator built once per actor; a
    batch of jobs (pickled) in, PNG bytes and scores out."""

    def __init__(self, spec: EvaluatorSpec):
        self.worker = EvaluatorWorker(spec)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import json
        import pickle

        import numpy as np

        evaluations = self.worker.evaluate([pickle.loads(b) for b in batch["job"]])
        return {"job": batch["job"], "png": np.array([e.png for e in evaluations], dtype=object),
                "scores": np.array([json.dumps(e.scores) for e in evaluations], dtype=object),
                "batch_size": np.array([e.batch_size for e in evaluations])}


def bulk_evaluate(spec: EvaluatorSpec, jobs: Sequence[Job], cached, *, batch: int = 16, actors: int | None = None,
                  address: str | None = None, actor_options: dict[str, Any] | None = None, progress=None) -> int:
    """Render and score `jobs` with Ray Data (`map_batches` over a pool of ScoreBatch actors)
    and store the results from the driver as they stream back, a batch per transaction.
    Returns how many were evaluated."""
    import json
    import pickle

    ray, _ = connect(address)
    if not jobs:
        return 0
    options, actors = actor_defaults(ray, actor_options, actors)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    items = [{"job": pickle.dumps(j)} for j in jobs]
    results = ray.data.from_items(items).map_batches(
        ScoreBatch, fn_constructor_args=(spec,), batch_size=batch, concurrency=actors,
        batch_format="numpy", **options)
    done = 0
    for out in results.iter_batches(batch_size=batch, batch_format="numpy"):
        cached.record([Evaluation(pickle.loads(j), None, json.loads(s), int(n), png=bytes(p))
                       for j, p, s, n in zip(out["job"], out["png"], out["scores"], out["batch_size"])])
        done += len(out["job"])
        if progress:
            progress(done, len(jobs))
    return done
