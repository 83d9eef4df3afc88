"""The SYNTHETIC benchmark: offline stand-ins for the renderer, the scorer and the LLM, so that
ablations can be run on 2 CPU cores and still say something about the optimiser.

- SyntheticRenderer "renders" a prompt as a tiny image that carries the prompt's sentence
  embedding (all-MiniLM-L6-v2) and a seeded noise value in its pixels; it goes through the same
  PNG/cache path as a real image.
- SyntheticScorer reads them back and scores with hidden, deterministic preferences:
  10 x similarity to a hidden target description + 5 x similarity to the naive prompt
  (fidelity) + seeded noise (sd 0.5). Units are "synthetic points", not HPS.
- SimulatedLLM is a word-level, deterministic imitation of the three LLM roles: the generator
  appends an instruction's keywords to the prompt; the gradient lists words that the better and
  the professional prompts use and the low ones lack; the modifier appends those words to the
  instruction. With no critique (the ablation) it appends words drawn at random from a fixed
  vocabulary.

What it can show: whether the loop turns score differences into better instructions (credit
assignment, selection, the value of the critique and of reference prompts) with honest
uncertainty. What it cannot show: anything about image quality, real LLMs or HPS.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

from promptevo.config import LLMConfig, RenderConfig, ScorerConfig
from promptevo.embed import Embedder
from promptevo.hashing import sha256_hex
from promptevo.llm import Completion

SYNTHETIC = "synthetic"
HIDDEN_TARGET = ("a cinematic photograph at golden hour, dramatic volumetric light, rich warm colours, "
                 "highly detailed, sharp focus, epic composition")
TARGET_WEIGHT, FIDELITY_WEIGHT, NOISE_SD = 10.0, 5.0, 0.5
_SHAPE = (3, 8, 17)  # 384 embedding values (16 columns) + one column of noise

STOPWORDS = set("""a an the and or of to in on at by for with from into as is are be it its this that your you
prompt prompts short image keep subject rewrite turn add adds name names describe description words
make makes one change changes instruction instructions could better way than more also use using their them
only which what when then there these those each every very""".split())
VOCABULARY = ("misty neon pastel gritty minimal baroque noir vintage surreal glossy rustic foggy icy "
              "geometric muted lush stormy serene chaotic ornate candid grainy dreamy crisp moody").split()


def synthetic_render_config() -> RenderConfig:
    return RenderConfig(model=SYNTHETIC, steps=0, guidance=0.0, width=_SHAPE[2], height=_SHAPE[1], device="cpu", max_batch=256)


def synthetic_scorer_config() -> ScorerConfig:
    return ScorerConfig(version=SYNTHETIC, arch="all-MiniLM-L6-v2", device="cpu")


class SyntheticRenderer:
    def __init__(self, embedder: Embedder):
        self.embedder = embedder
        self.config = synthetic_render_config()
        self.pipeline_calls = 0
        self.batch_limit = self.config.max_batch

    def token_count(self, text: str) -> int:
        return len(text.split()) + 2

    def render(self, prompts: Sequence[str], seeds: Sequence[int]):
        import torch

        from promptevo.render import RenderBatch

        self.pipeline_calls += 1
        vectors = self.embedder.encode(list(prompts))
        images = np.zeros((len(prompts), *_SHAPE), dtype=np.float32)
        for i, (v, seed) in enumerate(zip(vectors, seeds)):
            flat = np.clip((v[:384] + 1) / 2, 0, 1)
            images[i, :, :, :16] = flat.reshape(3, 8, 16)
            noise = np.random.default_rng([int(seed), int(sha256_hex(prompts[i], 8), 16)]).normal(0, NOISE_SD)
            images[i, :, :, 16] = np.clip(0.5 + noise / 8, 0, 1)
        return RenderBatch(images=torch.from_numpy(images), batch_sizes=[len(prompts)] * len(prompts))


class SyntheticScorer:
    def __init__(self, embedder: Embedder, target: str = HIDDEN_TARGET):
        self.embedder = embedder
        self.config = synthetic_scorer_config()
        self._target = embedder.encode([target])[0]
        self._naive: dict[str, np.ndarray] = {}
        self.image_forwards = 0

    @property
    def name(self) -> str:
        return "synthetic-v1"

    def score(self, images, prompts: Sequence[str]) -> list[float]:
        import torch

        if not torch.is_tensor(images):
            from promptevo.score import pil_to_tensor

            images = pil_to_tensor(images)
        self.image_forwards += 1
        pixels = images.detach().float().cpu().numpy()
        pixels = np.round(np.clip(pixels, 0, 1) * 255) / 255  # what a PNG would hold
        missing = [p for p in dict.fromkeys(prompts) if p not in self._naive]
        for p, v in zip(missing, self.embedder.encode(missing)):
            self._naive[p] = v
        out = []
        for img, prompt in zip(pixels, prompts):
            v = img[:, :, :16].reshape(-1) * 2 - 1
            v = v / (np.linalg.norm(v) or 1.0)
            noise = (float(img[:, :, 16].mean()) - 0.5) * 8
            out.append(float(TARGET_WEIGHT * v @ self._target + FIDELITY_WEIGHT * v @ self._naive[prompt] + noise))
        return out


def keywords(text: str, limit: int = 12) -> list[str]:
    words = [w.lower() for w in re.findall(r"[A-Za-z][A-Za-z-]+", text)]
    return list(dict.fromkeys(w for w in words if w not in STOPWORDS and len(w) > 2))[:limit]


class SimulatedLLM:
    """Deterministic word-level imitation of the generator, gradient and modifier roles."""

    model_name = "simulated-word-llm"

    def __init__(self):
        self.config = LLMConfig(backend="simulated", model=self.model_name)
        self.calls = 0

    def complete(self, conversations, *, temperature=None, seed=None) -> list[Completion]:
        self.calls += len(conversations)
        return [Completion(text=self._reply(m), model=self.model_name, attempts=1) for m in conversations]

    def _reply(self, messages) -> str:
        system, user = messages[0]["content"], messages[-1]["content"]
        if "You write prompts" in system:
            lines = system.splitlines()
            instruction = " ".join(line for line in lines[1:] if not line.startswith("Reply with"))
            prompt = user.rsplit("Prompt:", 1)[-1].strip()
            words = keywords(instruction, limit=10)
            return prompt + (", " + ", ".join(words) if words else "")
        if "You review" in system:
            low, good, subject = set(), Counter(), set()
            for block in user.split("Short prompt:")[1:]:  # one example per short prompt
                lines = block.splitlines()
                subject |= set(keywords(lines[0], 40))
                words = set()
                for line in lines[1:]:
                    body = line.split(":", 1)[-1]
                    if line.startswith("Low-scoring prompt"):
                        low |= set(keywords(body, 40))
                    elif line.startswith(("Better prompt", "Professional prompt")):
                        words |= set(keywords(body, 40))
                good.update(words)
            # words that better or professional prompts for different subjects share and the low
            # ones lack: a pattern across subjects, not one subject's vocabulary
            ranked = sorted(good, key=lambda w: -good[w])  # stable: ties keep first appearance
            new = [w for w in ranked if good[w] >= 2 and w not in low and w not in subject][:6]
            if not new:
                return "Inference 1: no difference found.\nImprovement 1: Keep the instruction."
            return (f"Inference 1: the better prompts use words the low ones lack.\n"
                    f"Improvement 1: Add the words {', '.join(new[:3])}.\n"
                    f"Inference 2: the better prompts are richer.\n"
                    f"Improvement 2: Add the words {', '.join(new[3:] or new[:2])}.")
        base = re.search(r"<instruction>\n?(.*?)\n?</instruction>", user, re.S)
        base_text = base.group(1).strip() if base else ""
        improvement = user.split("Improvement to make:", 1)[-1].strip().splitlines()[0] if "Improvement to make:" in user else ""
        added = keywords(improvement.removeprefix("Add the words"), 6)
        if not added or "could make the images better" in improvement:  # no critique: random words
            rng = np.random.default_rng(int(sha256_hex(base_text + improvement + str(self.calls), 8), 16))
            added = list(rng.choice(VOCABULARY, size=3, replace=False))
        # The newest words first, so the generator's keyword window keeps what the critique added.
        return f"<instruction>Add {', '.join(added)}. {base_text}</instruction>"


def synthetic_models(embedder: Embedder | None = None):
    """(llm, renderer, scorer) for the synthetic benchmark, sharing one embedder."""
    embedder = embedder or Embedder()
    return SimulatedLLM(), SyntheticRenderer(embedder), SyntheticScorer(embedder)


def synthetic_profile():
    from promptevo.config import Profile

    return Profile(name=SYNTHETIC, description="SYNTHETIC benchmark: simulated LLM, embedding 'renderer', hidden-preference scorer",
                   llm=SimulatedLLM().config, render=synthetic_render_config(), scorer=synthetic_scorer_config())


__all__ = ["SYNTHETIC", "HIDDEN_TARGET", "SimulatedLLM", "SyntheticRenderer", "SyntheticScorer", "synthetic_models",
           "synthetic_profile"]
