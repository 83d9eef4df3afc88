"""Contract tests: one suite that every renderer, reward model, LLM backend and evaluator must
pass (as diffusers' pipeline tester mixins and optuna's storage suite do). A new registered
kind joins by adding one entry to the lists below."""

import math

import pytest

from promptevo.config import LLMConfig
from promptevo.registry import Request

from .lazy import torch

PROMPTS = ["a waterfall", "a samurai in the rain, ink wash", "a fox"]


@pytest.fixture(scope="module")
def synthetic_parts():
    from promptevo.lab.synthetic import synthetic_models

    return synthetic_models()


# -- renderers ------------------------------------------------------------------------------------

RENDERERS = ["tiny", "synthetic", "tiny-flux", "tiny-sd3"]


def _dit(model: str):
    """The tiny FLUX (searching with its tiny autoencoder) or SD3, drawn by diffusers."""
    import dataclasses

    from promptevo.config import PROFILES
    from promptevo.registry import build_renderer

    render = PROFILES["tiny"].with_overrides(render_model=model, tiny_vae="auto" if model == "tiny-flux" else None).render
    return build_renderer(dataclasses.replace(render, width=32, height=32))


@pytest.fixture(params=RENDERERS)
def any_renderer(request, renderer, synthetic_parts):
    return {"tiny": lambda: renderer, "synthetic": lambda: synthetic_parts[1], "tiny-flux": lambda: _dit("tiny-flux"),
            "tiny-sd3": lambda: _dit("tiny-sd3")}[request.param]()


def test_renderer_contract(any_renderer):
    r = any_renderer
    batch = r.render(PROMPTS, [1, 2, 3])
    images = batch.images
    assert tuple(images.shape) == (3, 3, r.config.height, r.config.width)
    assert float(images.min()) >= 0 and float(images.max()) <= 1
    assert len(batch.batch_sizes) == 3 and all(n >= 1 for n in batch.batch_sizes)
    again = r.render(PROMPTS[:1], [1]).images
    assert torch.allclose(again[0], images[0], atol=1e-5)  # an image is defined by (config, text, seed)
    assert not torch.equal(r.render(PROMPTS[:1], [2]).images[0], again[0])  # the seed matters
    assert isinstance(r.config.hash, str) and r.config.text_window > 0 and r.batch_limit >= 1
    assert 0 < r.token_count("a fox") < r.token_count("a fox in the snow at dawn, oil painting")
    full = r.full_decoder()
    assert isinstance(full.config.hash, str) and tuple(full.render(PROMPTS[:1], [1]).images.shape) == tuple(again.shape)
    with pytest.raises(ValueError):
        r.render(PROMPTS, [1])  # one seed per prompt


# -- reward models --------------------------------------------------------------------------------

REWARDS = ["hps", "synthetic", "clip", "pickscore", "aesthetic", "brisque", "niqe", "piqe", "fidelity", "imagereward",
           "exposure", "contrast", "colourfulness", "noise"]
READS_THE_PROMPT = {"hps", "synthetic", "clip", "pickscore", "fidelity", "imagereward"}  # aesthetic and BRISQUE judge the image alone


@pytest.fixture(params=REWARDS)
def reward_and_images(request, scorer, renderer, synthetic_parts):
    if request.param == "hps":
        return "hps", scorer, renderer.render(PROMPTS, [1, 2, 3]).images
    if request.param == "synthetic":
        return "synthetic", synthetic_parts[2], synthetic_parts[1].render(PROMPTS, [1, 2, 3]).images
    from promptevo.registry import build_reward, reward_info

    return request.param, build_reward(reward_info(request.param).config(tiny=True, device="cpu")), \
        renderer.render(PROMPTS, [1, 2, 3]).images


def test_reward_model_contract(reward_and_images):
    kind, reward, images = reward_and_images
    texts = {"texts": [p + ", oil painting" for p in PROMPTS]} if getattr(reward, "uses_text", False) else {}
    score = lambda imgs, prompts: reward.score(imgs, prompts, **({"texts": texts["texts"][: len(prompts)]} if texts else {}))  # noqa: E731
    assert isinstance(reward.name, str) and reward.name and isinstance(reward.version, str) and reward.version
    values = score(images, PROMPTS)
    assert len(values) == 3 and all(isinstance(v, float) and math.isfinite(v) for v in values)
    assert score(images, PROMPTS) == pytest.approx(values, abs=1e-5)  # deterministic
    singles = [reward.score(images[i : i + 1], PROMPTS[i : i + 1], **({"texts": texts["texts"][i : i + 1]} if texts else {}))[0]
               for i in range(3)]
    assert singles == pytest.approx(values, abs=1e-3)  # a batch scores like its images one by one
    reward.clear_cache()
    assert score(images, PROMPTS) == pytest.approx(values, abs=1e-5)
    if kind in READS_THE_PROMPT:
        assert score(images, ["a submarine"] * 3) != pytest.approx(values, abs=1e-6)  # the target prompt matters
    with pytest.raises(ValueError):
        score(images, PROMPTS[:2])  # one prompt per image


# -- LLM backends ---------------------------------------------------------------------------------

LLMS = ["scripted", "simulated", "openai", "local", "llamacpp"]


@pytest.fixture(params=LLMS)
def any_llm(request, monkeypatch, synthetic_parts):
    from promptevo.registry import build_llm

    if request.param == "openai":
        from .openai_server import ScriptedServer

        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        with ScriptedServer() as server:
            yield build_llm(LLMConfig(backend="openai", model="test-model", base_url=server.url, timeout_s=5.0))
        return
    if request.param == "local":
        yield request.getfixturevalue("smollm")
        return
    if request.param == "simulated":
        yield synthetic_parts[0]
        return
    if request.param == "llamacpp":
        import importlib.util

        if importlib.util.find_spec("xllamacpp") is None:
            pytest.skip("xllamacpp is not installed")
        backend = build_llm(LLMConfig(backend="llamacpp", model="smollm2", max_new_tokens=32))
        yield backend
        backend.close()
        return
    yield build_llm(LLMConfig(backend="scripted", model="tests.scripted:script"))


def _requests():
    from promptevo.llms.templates import template
    from promptevo.optimise.critic import CritiqueExample, Examples

    fields = [
        ("generator", {"instruction": "Add the light and the colours.", "prompt": "a waterfall"}),
        ("gradient", {"instruction": "Add the light.", "n": 2, "examples": Examples([
            CritiqueExample("a fox", "a fox, flat", 1.0, "a fox, golden hour light, detailed", 2.0)])}),
        ("modifier", {"instruction": "Add the light.", "improvement": "Name the colours."}),
    ]
    return [Request(role, template(role).messages(**f), f) for role, f in fields]


def test_llm_backend_contract(any_llm):
    requests = _requests()
    out = any_llm.complete(requests, seed=3)
    assert len(out) == len(requests)
    for c in out:
        assert isinstance(c.text, str) and isinstance(c.model, str) and c.model and c.attempts >= 1
        assert c.ok, c.error
    assert any_llm.complete([], seed=3) == []
    assert isinstance(any_llm.model_name, str)


# -- evaluators -----------------------------------------------------------------------------------

EVALUATORS = ["local", "cached"]


@pytest.fixture(params=EVALUATORS)
def any_evaluator(request, evaluator, tmp_path):
    if request.param == "local":
        yield evaluator
        return
    from promptevo.evaluation.evaluator import CachedEvaluator
    from promptevo.storage.store import Store

    with Store(tmp_path / "cache.db") as store:
        yield CachedEvaluator(store, evaluator)


def test_evaluator_contract(any_evaluator):
    from promptevo.evaluation.evaluator import Job

    ev = any_evaluator
    v = ev.search_variant
    jobs = [Job(p, i, p, v) for i, p in enumerate(PROMPTS)] + [Job(PROMPTS[0], 0, "a river", v), Job(PROMPTS[0], 0, PROMPTS[0], v)]
    out = ev.evaluate(jobs)
    assert [e.job for e in out] == jobs  # one per job, in order
    assert all(set(e.scores) == set(ev.reward_names) and all(math.isfinite(x) for x in e.scores.values()) for e in out)
    assert out[-1].scores == out[0].scores  # a repeated job: the same evaluation
    assert out[3].scores != out[0].scores  # the same image against another target
    again = ev.evaluate(jobs[:2])
    for a, b in zip(again, out[:2]):
        assert a.scores == pytest.approx(b.scores, abs=1e-4)
    assert ev.evaluate([]) == []
    assert ev.final_variant.render.hash and ev.text_window(v) > 0 and ev.token_count("a fox", v) > 0
    assert set(ev.reward_versions) == set(ev.reward_names)
