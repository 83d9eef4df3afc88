import io

import pytest
from PIL import Image

from promptevo.images import png_bytes, to_uint8

from .lazy import torch


def test_tiny_pipeline_loads_through_from_pretrained(renderer):
    from promptevo.renderers.tiny import tiny_sd_path

    assert (tiny_sd_path() / "model_index.json").is_file()
    assert type(renderer.pipe).__name__ == "StableDiffusionPipeline"
    assert renderer.config.device == "cpu" and renderer.config.dtype == "float32"


def test_image_depends_on_seed_not_on_batch(renderer):
    batch = renderer.render(["a waterfall", "a samurai", "a waterfall"], [1, 2, 3])
    assert batch.images.shape == (3, 3, 64, 64)
    assert batch.batch_sizes == [3, 3, 3]
    alone = renderer.render(["a waterfall"], [1]).images[0]
    assert torch.allclose(alone, batch.images[0], atol=1e-4)
    assert not torch.allclose(batch.images[0], batch.images[2], atol=1e-3)


def test_token_count_uses_the_clip_tokenizer(renderer):
    assert renderer.token_count("a waterfall") == 4  # start, two words, end
    assert renderer.token_count("waterfall " * 100) > 77


def test_scoring_tensors_equals_scoring_the_png(renderer, scorer):
    images = renderer.render(["a fox", "a city"], [5, 6]).images
    from_tensors = scorer.score(images, ["a fox", "a city"])
    pil = [Image.open(io.BytesIO(png_bytes(img))) for img in to_uint8(images)]
    from_png = scorer.score(pil, ["a fox", "a city"])
    assert from_tensors == pytest.approx(from_png, abs=1e-4)
    assert all(-100 <= v <= 100 for v in from_tensors)


def test_text_features_are_computed_once_per_prompt(scorer):
    scorer._text_features.clear()
    images = torch.rand(4, 3, 64, 64)
    scorer.score(images, ["a", "b", "a", "b"])
    assert set(scorer._text_features) == {"a", "b"}
    first = scorer._text_features["a"]
    scorer.score(images[:1], ["a"])
    assert scorer._text_features["a"] is first


def test_score_is_100_times_the_cosine(scorer):
    image = torch.randint(0, 256, (1, 3, 224, 224)).float() / 255  # already 8-bit, as images are
    value = scorer.score(image, ["a lighthouse"])[0]
    from promptevo.rewards.hps import hps_preprocess

    with torch.inference_mode():
        img = scorer.model.encode_image(hps_preprocess(image, 224, scorer.mean, scorer.std), normalize=True)
        txt = scorer.model.encode_text(scorer.tokenizer(["a lighthouse"]), normalize=True)
    assert value == pytest.approx(100 * float((img * txt).sum()), abs=1e-4)


def test_out_of_memory_halves_the_batch(renderer, monkeypatch):
    real = renderer._call
    sizes = []

    def flaky(prompts, seeds):
        sizes.append(len(prompts))
        if len(prompts) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(prompts, seeds)

    monkeypatch.setattr(renderer, "_call", flaky)
    monkeypatch.setattr(renderer, "batch_limit", 8)
    batch = renderer.render([f"p{i}" for i in range(5)], list(range(5)))
    assert sizes[:3] == [5, 2, 2]  # 5 fails, then chunks of 2
    assert batch.batch_sizes == [2, 2, 2, 2, 1]
    assert batch.images.shape[0] == 5


def test_cached_evaluator_caches_images_and_scores(store, renderer, evaluator):
    from promptevo.evaluation.evaluator import CachedEvaluator, Job

    v = evaluator.search_variant
    cached = CachedEvaluator(store, evaluator)
    jobs = [Job("a waterfall, misty", 1, "a waterfall", v), Job("a samurai, ink", 2, "a samurai", v)]
    calls = renderer.pipeline_calls
    first = cached.evaluate(jobs)
    assert renderer.pipeline_calls == calls + 1  # both images in one pipeline call
    again = cached.evaluate(jobs)
    assert renderer.pipeline_calls == calls + 1  # nothing rendered twice
    assert [r.cached for r in again] == [True, True]
    assert [r.scores for r in again] == [r.scores for r in first]
    # a new target reuses the stored image, and scores it from its PNG
    other = cached.evaluate([Job("a waterfall, misty", 1, "a river", v)])
    assert renderer.pipeline_calls == calls + 1
    assert other[0].image_id == first[0].image_id and not other[0].cached
    assert store.images_count() == 2
    assert len({i for r in first + other for i in r.score_ids.values()}) == 3


def test_speed_settings_are_in_the_render_config_and_tiny_vae_renders(tiny):
    import dataclasses

    from promptevo.renderers.diffusers import DiffusersRenderer

    assert "tiny_vae" not in tiny.render.identity()  # old configs keep their hash
    fast = dataclasses.replace(tiny.render, channels_last=True, tiny_vae="tiny")
    assert fast.hash != tiny.render.hash and fast.identity()["tiny_vae"] == "tiny"
    r = DiffusersRenderer(fast)
    assert type(r.pipe.vae).__name__ == "AutoencoderTiny"
    batch = r.render(["a waterfall", "a fox"], [0, 1])
    assert tuple(batch.images.shape) == (2, 3, tiny.render.height, tiny.render.width)
    assert float(batch.images.min()) >= 0 and float(batch.images.max()) <= 1


def test_token_counting_while_rendering_on_another_thread_is_safe(renderer):
    """The round renders naive images on a worker thread while the LLM's rewrites are measured
    against the text window on the main thread; a shared fast tokenizer broke the pipeline's batch."""
    from concurrent.futures import ThreadPoolExecutor

    prompts = ["a fox", "a lighthouse on a cliff at night in a storm", "a cat", "an old library full of books and dust"]
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(lambda: [renderer.render(prompts, [0, 1, 2, 3]) for _ in range(6)])
        counts = set()
        while not future.done():
            counts.add(renderer.token_count("a lighthouse on a cliff at night"))
        batches = future.result()
    assert counts == {9} and all(tuple(b.images.shape[:2]) == (4, 3) for b in batches)
    # the race is rare in a short test; what prevents it is that the two never share a tokenizer
    assert renderer._count_tokenizer is not renderer.pipe.tokenizer
