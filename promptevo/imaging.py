"""Render-and-score with the store as a cache: an image is identified by (render config, prompt,
seed) and a score by (image, scorer, target prompt). Only what is missing is rendered or scored,
all missing images go to the renderer in one batched call, and the scorer takes the rendered
tensors directly; PNGs are written for people and for later runs, never read back on this path."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from promptevo.render import Renderer, png_bytes, to_uint8
from promptevo.score import Scorer
from promptevo.store import Store


@dataclass(frozen=True)
class Job:
    prompt: str  # text given to the renderer
    seed: int
    target: str  # text the image is scored against (the naive prompt)


@dataclass(frozen=True)
class Result:
    job: Job
    image_id: int
    score_id: int
    score: float
    cached: bool


def render_and_score(store: Store, renderer: Renderer, scorer: Scorer, jobs: Sequence[Job]) -> list[Result]:
    import torch

    rhash = renderer.config.hash
    store.add_render_config(rhash, renderer.config.identity())
    version = scorer.config.version
    images: dict[tuple[str, int], dict] = {}
    for job in jobs:
        key = (job.prompt, job.seed)
        if key not in images:
            found = store.find_image(rhash, job.prompt, job.seed)
            if found:
                images[key] = found
    missing = list(dict.fromkeys((j.prompt, j.seed) for j in jobs if (j.prompt, j.seed) not in images))
    fresh: dict[tuple[str, int], object] = {}
    if missing:
        batch = renderer.render([p for p, _ in missing], [s for _, s in missing])
        pixels = to_uint8(batch.images)
        for i, (prompt, seed) in enumerate(missing):
            image_id = store.save_image(
                png=png_bytes(pixels[i]),
                render_hash=rhash,
                prompt=prompt,
                seed=seed,
                width=int(pixels.shape[-1]),
                height=int(pixels.shape[-2]),
                batch_size=batch.batch_sizes[i],
            )
            images[(prompt, seed)] = {"id": image_id}
            fresh[(prompt, seed)] = batch.images[i]

    results: dict[Job, Result] = {}
    to_score: list[Job] = []
    for job in dict.fromkeys(jobs):
        image_id = images[(job.prompt, job.seed)]["id"]
        found = store.find_score(image_id, scorer.name, version, job.target)
        if found:
            results[job] = Result(job, image_id, found["id"], found["value"], cached=True)
        else:
            to_score.append(job)
    if to_score:
        tensors = []
        for job in to_score:
            key = (job.prompt, job.seed)
            if key not in fresh:  # rendered earlier, scored now against a new target: read it once
                fresh[key] = _load_png(store, images[key])
            tensors.append(fresh[key])
        values = scorer.score(torch.stack([t.to(tensors[0].device) for t in tensors]), [j.target for j in to_score])
        for job, value in zip(to_score, values):
            image_id = images[(job.prompt, job.seed)]["id"]
            score_id = store.save_score(image_id=image_id, scorer=scorer.name, version=version, target=job.target, value=value)
            results[job] = Result(job, image_id, score_id, value, cached=False)
    return [results[j] for j in jobs]


def _load_png(store: Store, image: dict):
    from PIL import Image

    from promptevo.score import pil_to_tensor

    row = image if "path" in image else store.one("SELECT * FROM images WHERE id = ?", [image["id"]])
    with Image.open(store.image_path(row)) as im:
        return pil_to_tensor([im])[0]
