"""`promptevo bench`: promptevo's batched, cached, overlapped path against the naive path the
seed paper's code took (one image per pipeline call, each PNG written and read back, the HPS
checkpoint reloaded for every score), measured in one process on the same models and prompts.

Whole rounds run the real optimiser with a scripted LLM (instant, deterministic), so the round
time is model time plus promptevo's own overhead, which the benchmark reports separately.
"""

from __future__ import annotations

import dataclasses
import io
import json
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from promptevo.registry import RewardModel

SUBJECTS = ["a waterfall", "a samurai", "a lighthouse", "a fox", "an old library", "a city street", "a castle",
            "a desert", "a submarine", "a tiger", "a mountain lake", "a robot"]
STYLES = ["at dawn", "in the rain", "oil painting", "studio photo", "neon light", "watercolor", "in winter", "8k"]

# Dense peak TFLOP/s for the dtypes a renderer uses (vendor figures, SXM parts).
PEAK_TFLOPS = {"H200": {"bfloat16": 989, "float16": 989, "float32": 67},
               "H100": {"bfloat16": 989, "float16": 989, "float32": 67},
               "A100": {"bfloat16": 312, "float16": 312, "float32": 19.5}}


def bench_prompts(n: int) -> list[str]:
    return [f"{SUBJECTS[i % len(SUBJECTS)]}, {STYLES[(i // len(SUBJECTS)) % len(STYLES)]} #{i}" for i in range(n)]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


class Timed:
    """Wraps a model object; accumulates the seconds spent in one method."""

    def __init__(self, inner: Any, method: str, device: str = "cpu"):
        self._inner, self._method, self._device = inner, method, device
        self.seconds = 0.0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name == "full_decoder":  # the final-evaluation view of a renderer: timed as well
            def full_decoder():
                view = attr()
                if view is self._inner:
                    return self
                timed = Timed(view, self._method, self._device)
                timed._parent = self
                return timed

            return full_decoder
        if name != self._method:
            return attr

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                _sync(self._device)
                owner = getattr(self, "_parent", None) or self
                owner.seconds += time.perf_counter() - t0

        return timed


class ReloadingScorer(RewardModel):
    """The naive scoring path: per image, write the PNG, read it back, load the HPS checkpoint
    again and score that one image (what calling `hpsv2.score` per image does)."""

    def __init__(self, config, loader: Callable[[Any], Any]):
        self.config, self._loader = config, loader
        self.loads = 0

    @property
    def name(self) -> str:
        from promptevo.registry import reward_name

        return reward_name(self.config)

    @property
    def version(self) -> str:
        return self.config.version

    def clear_cache(self) -> None:
        pass

    def score(self, images, prompts: Sequence[str]) -> list[float]:
        from PIL import Image

        from promptevo.images import png_bytes, to_uint8

        values = []
        with tempfile.TemporaryDirectory() as tmp:
            for i, (image, prompt) in enumerate(zip(to_uint8(images), prompts)):
                path = Path(tmp) / f"{i}.png"
                path.write_bytes(png_bytes(image))
                scorer = self._loader(self.config)
                self.loads += 1
                with Image.open(path) as im:
                    values += scorer.score([im.convert("RGB")], [prompt])
                del scorer
        return values


def scripted_reply(request) -> str:
    """An instant deterministic LLM for timing rounds, by role: the rewrite appends words to the
    prompt. Registered as the scripted LLM "promptevo.lab.bench:scripted_reply"."""
    if request.role == "generator":
        return f"{request.fields['prompt']}, highly detailed, soft light"
    if request.role == "gradient":
        return "Inference 1: flat.\nImprovement 1: Name a light source."
    return "<instruction>Rewrite the prompt with a named light source and a colour palette.</instruction>"


def scripted_llm():
    from promptevo.config import LLMConfig
    from promptevo.registry import build_llm

    return build_llm(LLMConfig(backend="scripted", model="promptevo.lab.bench:scripted_reply"))


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def flops_per_image(fn: Callable[[], Any], n: int) -> float | None:
    """FLOPs of one call of `fn` (which handles n images), by torch's FLOP counter."""
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        return None
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops() / n


def run_bench(renderer, scorer, *, profile, loader: Callable[[Any], Any], images: int = 24, naive_images: int = 6,
              rounds: int = 2, round_batch: int = 4, progress: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    import torch

    from promptevo.evaluation.evaluator import LocalEvaluator
    from promptevo.optimise.optimizer import Optimizer
    from promptevo.optimise.run_config import OptimizeConfig, create_run
    from promptevo.storage.store import Store

    device = renderer.config.device
    prompts, seeds = bench_prompts(images), list(range(images))
    result: dict[str, Any] = {"images": images, "naive_images": naive_images}

    progress("warm-up")
    warm = renderer.render(prompts[:2], seeds[:2])
    scorer.score(warm.images, prompts[:2])
    _sync(device)

    progress("rendering, batched")
    renderer.batch_limit = renderer.config.max_batch
    t0 = time.perf_counter()
    batch = renderer.render(prompts, seeds)
    _sync(device)
    result["render_batched"] = {"images_per_s": _rate(images, time.perf_counter() - t0), "batch": max(batch.batch_sizes)}

    progress("rendering, one image per pipeline call")
    renderer.batch_limit = 1
    t0 = time.perf_counter()
    for p, s in zip(prompts[:naive_images], seeds[:naive_images]):
        renderer.render([p], [s])
    _sync(device)
    result["render_per_image"] = {"images_per_s": _rate(naive_images, time.perf_counter() - t0), "batch": 1}
    renderer.batch_limit = renderer.config.max_batch

    progress("scoring, batched from tensors")
    scorer.clear_cache()
    t0 = time.perf_counter()
    scorer.score(batch.images, prompts)
    _sync(device)
    result["score_batched"] = {"images_per_s": _rate(images, time.perf_counter() - t0)}

    progress("scoring, per image with PNG round trip and checkpoint reload")
    naive_scorer = ReloadingScorer(scorer.config, loader)
    t0 = time.perf_counter()
    naive_scorer.score(batch.images[:naive_images], prompts[:naive_images])
    result["score_reload_per_image"] = {"images_per_s": _rate(naive_images, time.perf_counter() - t0)}

    flops_r = flops_per_image(lambda: renderer.render(prompts[:2], seeds[:2]), 2)
    flops_s = flops_per_image(lambda: (scorer.clear_cache(), scorer.score(batch.images[:2], prompts[:2])), 2)
    result["flops_per_image"] = {"render": flops_r, "score": flops_s}

    def whole_rounds(label: str, render_obj, score_obj, overlap: bool) -> dict[str, Any]:
        progress(f"whole rounds, {label}")
        timed_r, timed_s = Timed(render_obj, "render", device), Timed(score_obj, "score", device)
        llm = Timed(scripted_llm(), "complete")
        with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "bench.db") as store:
            config = OptimizeConfig(rounds=rounds, batch_size=round_batch, heldout_fraction=0.25, eval_seeds=1)
            run_id = create_run(store, profile, config, bench_prompts(round_batch * 2))
            opt = Optimizer(store, run_id, llm=llm, evaluator=LocalEvaluator(timed_r, [cast(Any, timed_s)]), overlap=overlap)
            t0 = time.perf_counter()
            opt.run_all()
            _sync(device)
            wall = time.perf_counter() - t0
            made = store.images_count()
        model = timed_r.seconds + timed_s.seconds + llm.seconds
        return {"images": made, "seconds": wall, "images_per_s": _rate(made, wall),
                "render_s": timed_r.seconds, "score_s": timed_s.seconds, "llm_s": llm.seconds,
                "overhead_fraction": max(0.0, wall - model) / wall}

    result["round"] = whole_rounds("promptevo", renderer, scorer, overlap=True)

    class OnePerCall:  # the naive renderer: the same pipeline, one image per call
        def __init__(self, inner):
            self.inner, self.config = inner, inner.config
            self.batch_limit = 1

        def full_decoder(self):
            return self

        def render(self, ps, ss):
            self.inner.batch_limit = 1
            try:
                return self.inner.render(ps, ss)
            finally:
                self.inner.batch_limit = self.inner.config.max_batch

        def token_count(self, text):
            return self.inner.token_count(text)

    result["round_naive"] = whole_rounds("naive", OnePerCall(renderer), ReloadingScorer(scorer.config, loader), overlap=False)

    result["ratios"] = {
        "render_batched_vs_per_image": result["render_batched"]["images_per_s"] / result["render_per_image"]["images_per_s"],
        "score_batched_vs_reload": result["score_batched"]["images_per_s"] / result["score_reload_per_image"]["images_per_s"],
        "round_vs_naive_round": result["round"]["images_per_s"] / result["round_naive"]["images_per_s"],
    }
    peak = None
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(0)
        peak = next((cast(dict, v).get(renderer.config.dtype) for k, v in PEAK_TFLOPS.items() if k in name), None)
    result["tflops"] = {
        "render": (flops_r or 0) * result["render_batched"]["images_per_s"] / 1e12,
        "score": (flops_s or 0) * result["score_batched"]["images_per_s"] / 1e12,
        "device_peak": peak,
    }
    return result


def environment(renderer, scorer) -> dict[str, Any]:
    import torch

    device = renderer.config.device
    return {
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "render_config": renderer.config.to_dict(),
        "scorer_config": dataclasses.asdict(scorer.config),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def save_results(data: dict[str, Any], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    device = "cuda" if data["environment"]["device"].startswith("cuda") else "cpu"
    path = folder / f"{data['profile']}-{device}.json"
    buf = io.StringIO()
    json.dump(data, buf, indent=2, sort_keys=True, default=str)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(buf.getvalue() + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
