"""The evaluation boundary: jobs in, evaluations out.

A job is (text, seed, target prompt, variant); a variant is a render config plus an ordered
tuple of post-render operations, hashed like render configs (an image is defined by variant,
text and seed). An evaluation is the image, in memory, and one value per reward model.

- `LocalEvaluator` is pure compute: render, post-ops, every reward on the batch. It is built
  from a picklable `EvaluatorSpec`, so the same code can run in a worker process or a Ray actor.
- `CachedEvaluator` wraps any evaluator and is the only code that reads or writes images and
  scores in the store: only what is missing is rendered or scored, all missing images of a call
  go to the renderer as one batch, and rewards take the rendered tensors directly. PNGs are
  written for people and later runs, and read back only to score an old image anew.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from promptevo.config import RenderConfig, ScorerConfig
from promptevo.errors import UserError
from promptevo.hashing import config_hash
from promptevo.images import png_bytes, to_uint8
from promptevo.registry import Renderer, RewardModel
from promptevo.storage.store import Store


@dataclass(frozen=True)
class PostOp:
    """One post-render operation (a registered kind) with its value."""

    op: str
    value: float = 0.0


@dataclass(frozen=True)
class Variant:
    render: RenderConfig
    post_ops: tuple[PostOp, ...] = ()

    def identity(self) -> dict[str, Any]:
        """What defines its pixels. Without post-ops, exactly the render config's identity, so
        images made before variants existed are found under the same hash."""
        d = self.render.identity()
        if self.post_ops:
            d = {"render": d, "post_ops": [[p.op, p.value] for p in self.post_ops]}
        return d

    @functools.cached_property  # frozen: computed once (the driver asks per image)
    def hash(self) -> str:
        return self.render.hash if not self.post_ops else config_hash(self.identity())


@dataclass(frozen=True)
class Job:
    text: str  # given to the renderer
    seed: int
    target: str  # what the image is scored against (the user's naive prompt)
    variant: Variant


@dataclass(frozen=True)
class Evaluation:
    job: Job
    image: Any  # [3, H, W] float tensor in [0, 1]; None when a worker sent the PNG instead
    scores: dict[str, float]
    batch_size: int  # images per pipeline call that made it
    png: bytes | None = None  # encoded where it was made (a remote worker), so the driver only writes it
    error: str | None = None  # the job failed on its worker (no image, no scores): why
    render_s: float = 0.0  # seconds its variant's batch took to draw, per image (the variant's cost)

    def pixels(self):
        """The image as a tensor, decoded from the PNG when that is what came back."""
        if self.image is not None:
            return self.image
        import io

        from promptevo.images import load_image_tensor

        return load_image_tensor(io.BytesIO(self.png))


class Evaluator(Protocol):
    reward_names: tuple[str, ...]  # in order; the first is the primary reward
    reward_versions: dict[str, str]  # name -> version, stored with each score
    search_variant: Variant  # what search rounds render with
    final_variant: Variant  # what the selection pass and the held-out evaluation render with

    def evaluate(self, jobs: Sequence[Job]) -> list[Evaluation]: ...

    def score(self, images, targets: Sequence[str], rewards: Sequence[str] | None = None,
              texts: Sequence[str] | None = None) -> dict[str, list[float]]: ...

    def token_count(self, text: str, variant: Variant) -> int: ...

    def text_window(self, variant: Variant) -> int: ...


@dataclass(frozen=True)
class EvaluatorSpec:
    """Everything a worker needs to build a LocalEvaluator: plain frozen configs, picklable."""

    render: RenderConfig
    rewards: tuple[ScorerConfig, ...]
    max_models: int = 2  # render models the pool keeps loaded at once (variants of one model count once)


class LocalEvaluator:
    def __init__(self, renderer: Renderer, rewards: Sequence[RewardModel], max_models: int = 2):
        from promptevo.evaluation.model_pool import ModelPool
        from promptevo.registry import build_renderer

        if not rewards:
            raise UserError("an evaluator needs at least one reward model")
        self.renderer, self.rewards = renderer, list(rewards)
        final = renderer.full_decoder()
        # every render variant's pipeline comes from the pool: the profile's own first, others
        # (another model, steps, scheduler) loaded when a job asks for them
        self.pool = ModelPool(build_renderer, max_models)
        self.pool.add(renderer, renderer.config)
        self.pool.add(final, final.config)
        self.search_variant, self.final_variant = Variant(renderer.config), Variant(final.config)
        self.reward_names = tuple(r.name for r in self.rewards)
        self.reward_versions = {r.name: r.version for r in self.rewards}
        self._text_rewards = {r.name for r in self.rewards if r.uses_text}
        if len(set(self.reward_names)) != len(self.reward_names):
            raise UserError(f"two reward models share a name: {', '.join(self.reward_names)}")

    @classmethod
    def from_spec(cls, spec: EvaluatorSpec) -> LocalEvaluator:
        from promptevo.registry import build_renderer, build_reward

        renderer = build_renderer(spec.render)  # first: missing weights fail fast
        return cls(renderer, [build_reward(r) for r in spec.rewards], spec.max_models)

    def renderer_for(self, variant: Variant) -> Renderer:
        """The renderer that draws `variant` (VariantUnavailable when its model cannot load)."""
        return self.pool.get(variant.render)

    def token_count(self, text: str, variant: Variant) -> int:
        return self.renderer_for(variant).token_count(text)

    def text_window(self, variant: Variant) -> int:
        """The variant's own model's window (a FLUX variant reads 256 T5 tokens where SD reads 77)."""
        renderer = self.renderer_for(variant)
        return getattr(renderer, "window", renderer.config.text_window)

    def evaluate(self, jobs: Sequence[Job]) -> list[Evaluation]:
        """Render each distinct (variant, text, seed) once, one batch per variant, apply the
        variant's post-ops, and score every job with every reward in one batch. A variant that
        cannot be loaded or drawn (not the evaluator's own) fails its jobs alone, with the reason."""
        import torch

        from promptevo.evaluation.model_pool import VariantUnavailable

        images: dict[tuple[str, str, int], tuple[Any, int, float]] = {}
        failed: dict[str, str] = {}
        by_variant: dict[Variant, list[tuple[str, int]]] = {}
        for job in jobs:
            by_variant.setdefault(job.variant, [])
            key = (job.text, job.seed)
            if key not in by_variant[job.variant]:
                by_variant[job.variant].append(key)
        own = {self.search_variant.render.hash, self.final_variant.render.hash}
        for variant, keys in by_variant.items():
            t0 = time.perf_counter()
            try:
                batch = self.renderer_for(variant).render([t for t, _ in keys], [s for _, s in keys])
            except VariantUnavailable as exc:
                failed[variant.hash] = str(exc)
                continue
            except Exception as exc:  # noqa: BLE001 - a candidate variant failing must not stop the run
                if variant.render.hash in own:
                    raise
                failed[variant.hash] = f"{type(exc).__name__}: {exc}"
                continue
            pixels = apply_post_ops(batch.images, variant.post_ops)
            per_image = (time.perf_counter() - t0) / max(len(keys), 1)
            for i, (text, seed) in enumerate(keys):
                images[(variant.hash, text, seed)] = (pixels[i], batch.batch_sizes[i], per_image)
        unique = [j for j in dict.fromkeys(jobs) if j.variant.hash not in failed]
        done = {j: Evaluation(j, None, {}, 0, error=failed[j.variant.hash]) for j in jobs if j.variant.hash in failed}
        if unique:
            tensors = [images[(j.variant.hash, j.text, j.seed)][0] for j in unique]
            stacked = torch.stack([t.to(tensors[0].device) for t in tensors])
            values = self.score(stacked, [j.target for j in unique], texts=[j.text for j in unique])
            for i, j in enumerate(unique):
                image, batch_size, seconds = images[(j.variant.hash, j.text, j.seed)]
                done[j] = Evaluation(j, image, {name: values[name][i] for name in self.reward_names}, batch_size,
                                     render_s=seconds)
        return [done[j] for j in jobs]

    def score(self, images, targets: Sequence[str], rewards: Sequence[str] | None = None,
              texts: Sequence[str] | None = None) -> dict[str, list[float]]:
        """Every reward (or the named ones) on a [N, 3, H, W] batch against its targets; rewards
        that read the rendered texts (`uses_text`) get `texts` as well."""
        return {r.name: (cast(Any, r).score(images, list(targets), texts=list(texts) if texts is not None else None)
                         if r.name in self._text_rewards else r.score(images, list(targets)))
                for r in self.rewards if rewards is None or r.name in rewards}


FILE_WRITERS = 4  # threads that hash and write a batch's PNG files


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's header (IHDR), without decoding it."""
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def apply_post_ops(images, post_ops: Sequence[PostOp]):
    from promptevo.registry import post_op

    for op in post_ops:
        images = post_op(op.op)(images, op.value)
    return images


@dataclass(frozen=True)
class CachedEvaluation:
    job: Job
    image_id: int | None  # None when the job failed
    scores: dict[str, float]
    score_ids: dict[str, int]
    cached: bool  # nothing had to be rendered or scored
    error: str | None = None  # the job failed on its worker: nothing was stored for it

    @property
    def score(self) -> float:
        """The primary reward's value."""
        return next(iter(self.scores.values()))


@dataclass
class CachedEvaluator:
    store: Store
    inner: Any  # an Evaluator

    def __post_init__(self) -> None:
        self.reward_names = self.inner.reward_names
        self.search_variant, self.final_variant = self.inner.search_variant, self.inner.final_variant
        self.reward_versions = dict(self.inner.reward_versions)
        self._lock = threading.Lock()  # one evaluation at a time: the overlapped thread and the loop
        self.compute_s = 0.0  # seconds spent rendering and scoring (the inner evaluator's calls)
        self._costs: dict[str, list[float]] = {}  # variant hash -> [images drawn, seconds drawing them], not yet taken

    def take_costs(self) -> dict[str, tuple[int, float]]:
        """Images drawn and seconds spent drawing them per variant hash since the last call
        (cached images cost nothing): what the optimiser records as each variant's cost."""
        with self._lock:
            taken, self._costs = self._costs, {}
        return {h: (int(n), s) for h, (n, s) in taken.items()}

    def token_count(self, text: str, variant: Variant) -> int:
        return self.inner.token_count(text, variant)

    def text_window(self, variant: Variant) -> int:
        return self.inner.text_window(variant)

    def evaluate(self, jobs: Sequence[Job]) -> list[CachedEvaluation]:
        with self._lock:
            return self._evaluate(jobs)

    @contextlib.contextmanager
    def _computing(self):
        """One evaluation at a time, its seconds counted in compute_s."""
        with self._lock:
            t0 = time.perf_counter()
            try:
                yield
            finally:
                self.compute_s += time.perf_counter() - t0

    def compute(self, jobs: Sequence[Job]) -> list[Evaluation]:
        """The inner evaluator's images and scores, in memory, stored nowhere (a plan's fit)."""
        with self._computing():
            return [e if e.image is not None else dataclasses.replace(e, image=e.pixels()) for e in self.inner.evaluate(jobs)]

    def score(self, images, targets: Sequence[str], rewards: Sequence[str] | None = None,
              texts: Sequence[str] | None = None) -> dict[str, list[float]]:
        """Rewards of images in memory, stored nowhere."""
        with self._computing():
            return self.inner.score(images, targets, rewards=rewards, texts=texts)

    def _evaluate(self, jobs: Sequence[Job]) -> list[CachedEvaluation]:
        import torch

        store = self.store
        image_ids: dict[tuple[str, str, int], int] = {}
        for job in jobs:
            key = (job.variant.hash, job.text, job.seed)
            if key not in image_ids:
                found = store.find_image(*key)
                if found:
                    image_ids[key] = found["id"]
        results: dict[Job, CachedEvaluation] = {}
        to_render = [j for j in dict.fromkeys(jobs) if (j.variant.hash, j.text, j.seed) not in image_ids]
        if to_render:
            t0 = time.perf_counter()
            evaluations = self.inner.evaluate(to_render)
            self.compute_s += time.perf_counter() - t0
            for e in evaluations:
                if e.error is None:
                    cost = self._costs.setdefault(e.job.variant.hash, [0, 0.0])
                    cost[0], cost[1] = cost[0] + 1, cost[1] + e.render_s
            results.update((r.job, r) for r in self.record(evaluations, image_ids))
        rescore: list[tuple[Job, int]] = []
        for job in dict.fromkeys(jobs):
            if job in results:
                continue
            image_id = image_ids[(job.variant.hash, job.text, job.seed)]
            found = {name: store.find_score(image_id, name, self.reward_versions[name], job.target) for name in self.reward_names}
            if all(found.values()):
                results[job] = CachedEvaluation(job, image_id, {n: f["value"] for n, f in found.items()},
                                                {n: f["id"] for n, f in found.items()}, cached=True)
            else:
                rescore.append((job, image_id))
        if rescore:  # rendered before, scored now against a new target or by a new reward
            from promptevo.images import load_image_tensor

            loaded: dict[int, Any] = {}
            for _, image_id in rescore:
                if image_id not in loaded:
                    row = store.image(image_id)
                    assert row is not None, f"image {image_id} is in the trials but not in the images table"
                    loaded[image_id] = load_image_tensor(store.image_path(row))
            t0 = time.perf_counter()
            values = self.inner.score(torch.stack([loaded[i] for _, i in rescore]), [j.target for j, _ in rescore],
                                      texts=[j.text for j, _ in rescore])
            self.compute_s += time.perf_counter() - t0
            for k, (job, image_id) in enumerate(rescore):
                results[job] = self._save(job, image_id, {n: values[n][k] for n in self.reward_names}, cached=False)
        return [results[j] for j in jobs]

    def record(self, evaluations: Sequence[Evaluation], image_ids: dict[tuple[str, str, int], int] | None = None
               ) -> list[CachedEvaluation]:
        """Store evaluations made elsewhere (this evaluator's inner one, or a bulk pipeline):
        each image once (PNG encoded here unless it came encoded), every score, the batch's rows
        in one transaction (the PNG files are written first)."""
        import torch

        store, image_ids = self.store, {} if image_ids is None else image_ids
        for variant in dict.fromkeys(e.job.variant for e in evaluations):
            store.add_render_config(variant.hash, variant.identity())
        local = [i for i, e in enumerate(evaluations) if e.png is None and e.error is None]
        pixels = dict(zip(local, to_uint8(torch.stack([evaluations[i].image for i in local])))) if local else {}
        pngs = {i: ev.png if ev.png is not None else png_bytes(pixels[i]) for i, ev in enumerate(evaluations)
                if ev.error is None and (ev.job.variant.hash, ev.job.text, ev.job.seed) not in image_ids}
        with concurrent.futures.ThreadPoolExecutor(FILE_WRITERS) as pool:  # hashing and writing release the GIL
            written = dict(zip(pngs, pool.map(store.write_image_file, pngs.values())))
        out = []
        with store.atomic():
            for i, ev in enumerate(evaluations):
                if ev.error is not None:
                    out.append(CachedEvaluation(ev.job, None, {}, {}, cached=False, error=ev.error))
                    continue
                key = (ev.job.variant.hash, ev.job.text, ev.job.seed)
                if key not in image_ids:
                    width, height = png_size(pngs[i])
                    image_ids[key] = store.save_image(png=pngs[i], render_hash=key[0], prompt=ev.job.text, seed=ev.job.seed,
                                                      width=width, height=height, batch_size=ev.batch_size, written=written[i])
                out.append(self._save(ev.job, image_ids[key], ev.scores, cached=False))
        return out

    def missing(self, jobs: Sequence[Job]) -> list[Job]:
        """The distinct jobs the store cannot answer yet (no image, or a reward's score missing)."""
        out = []
        for job in dict.fromkeys(jobs):
            image = self.store.find_image(job.variant.hash, job.text, job.seed)
            if image is None or not all(self.store.find_score(image["id"], n, self.reward_versions[n], job.target)
                                        for n in self.reward_names):
                out.append(job)
        return out

    def _save(self, job: Job, image_id: int, scores: dict[str, float], *, cached: bool) -> CachedEvaluation:
        ids = {}
        with self.store.atomic():
            for name in self.reward_names:
                ids[name] = self.store.save_score(image_id=image_id, scorer=name, version=self.reward_versions[name],
                                                  target=job.target, value=scores[name])
        return CachedEvaluation(job, image_id, dict(scores), ids, cached)
