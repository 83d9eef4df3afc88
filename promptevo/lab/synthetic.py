"""The SYNTHETIC benchmark: offline stand-ins for the renderer, the scorer and the LLM, so that
ablations can be run on 2 CPU cores and still say something about the optimiser.

- SyntheticRenderer "renders" a prompt as a tiny image that carries the prompt's sentence
  embedding (all-MiniLM-L6-v2) and a seeded noise value in its pixels; it goes through the same
  PNG/cache path as a real image.
- SyntheticScorer reads them back and scores with hidden, deterministic preferences:
  10 x similarity to a hidden target description + 5 x similarity to the naive prompt
  (fidelity) + seeded noise (sd 0.5). Units are "synthetic points", not HPS.
- SimulatedLLM is a deterministic imitation of the three LLM roles: the generator appends an
  instruction's keywords to the prompt; the gradient reads only the texts and scores it is shown,
  takes the embedding direction in which the better prompts differ from the low ones, and names
  shown words that point along it (to add) and low-prompt words that point against it (to drop);
  the modifier applies that edit to the instruction. With no critique (the ablation) it makes a
  blind edit of the same size: three words in from a fixed vocabulary, three of its own out.

What it can show: whether the loop turns score differences into better instructions (credit
assignment, selection, the value of the critique and of reference prompts) with honest
uncertainty. What it cannot show: anything about image quality, real LLMs or HPS.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from promptevo.config import LLMConfig, RenderConfig, ScorerConfig
from promptevo.embed import Embedder, shared_embedder
from promptevo.hashing import sha256_hex
from promptevo.llms.templates import NO_GRADIENT_IMPROVEMENT
from promptevo.optimise.hints import keywords
from promptevo.registry import (
    Completion,
    RewardModel,
    register_llm,
    register_renderer,
    register_reward,
)

SYNTHETIC = "synthetic"
HIDDEN_TARGET = ("a cinematic photograph at golden hour, dramatic volumetric light, rich warm colours, "
                 "highly detailed, sharp focus, epic composition")
TARGET_WEIGHT, FIDELITY_WEIGHT, NOISE_SD = 10.0, 5.0, 0.5
_SHAPE = (3, 8, 17)  # 384 embedding values (16 columns) + one column of noise

VOCABULARY = ("misty neon pastel gritty minimal baroque noir vintage surreal glossy rustic foggy icy "
              "geometric muted lush stormy serene chaotic ornate candid grainy dreamy crisp moody").split()


def synthetic_render_config() -> RenderConfig:
    return RenderConfig(model=SYNTHETIC, steps=0, guidance=0.0, width=_SHAPE[2], height=_SHAPE[1], device="cpu",
                        max_batch=256, kind="synthetic")


def synthetic_scorer_config() -> ScorerConfig:
    return ScorerConfig(version=SYNTHETIC, arch="all-MiniLM-L6-v2", device="cpu", kind="synthetic")




# Render variants of the SYNTHETIC benchmark (`steps` names one): a hidden bonus per subject
# category, added to the image's noise value (so the scorer reads it as points), and a cost in
# seconds per image per step. No single variant is best for every category: a router can beat
# the best single variant only by telling the categories apart.
CATEGORIES = {
    "nature": "a natural landscape or place: mountains, water, forest, desert, sky, a valley or an island",
    "creature": "a living creature: an animal, a bird, a fish or a person",
    "made": "a made thing: a building, a machine, a vehicle, a tool or food",
}
VARIANT_BONUS = {
    1: {"nature": 0.0, "creature": 0.0, "made": 0.0},
    2: {"nature": 1.5, "creature": -1.0, "made": 0.0},
    3: {"nature": -1.0, "creature": 1.5, "made": 0.5},
}
SECONDS_PER_STEP = 0.001


class SyntheticRenderer:
    def __init__(self, embedder: Embedder):
        self.embedder = embedder
        self.config = synthetic_render_config()
        self.pipeline_calls = 0
        self.batch_limit = self.config.max_batch
        self._anchors = embedder.encode(list(CATEGORIES.values()))
        self._category: dict[str, str] = {}

    def with_settings(self, config: RenderConfig) -> SyntheticRenderer:
        """The renderer drawing another variant: its steps pick the hidden bonus table and cost."""
        if config.steps not in VARIANT_BONUS and config.steps != 0:
            raise ValueError(f"the synthetic renderer has variants steps=1, 2 or 3 (got {config.steps})")
        import copy

        view = copy.copy(self)
        view.config = config
        return view

    def category(self, texts: Sequence[str]) -> list[str]:
        """Each text's hidden category: its subject's (the text before the first comma, where the
        simulated generator keeps the user's prompt) nearest anchor description."""
        subjects = [t.split(",")[0].strip() for t in texts]
        missing = [t for t in dict.fromkeys(subjects) if t not in self._category]
        if missing:
            names = list(CATEGORIES)
            for t, j in zip(missing, np.argmax(self.embedder.encode(missing) @ self._anchors.T, axis=1)):
                self._category[t] = names[int(j)]
        return [self._category[t] for t in subjects]

    def token_count(self, text: str) -> int:
        return len(text.split()) + 2

    def full_decoder(self) -> SyntheticRenderer:
        return self

    def render(self, prompts: Sequence[str], seeds: Sequence[int]):
        import torch

        from promptevo.registry import RenderBatch

        if len(prompts) != len(seeds):
            raise ValueError("one seed per prompt")
        self.pipeline_calls += 1
        vectors = self.embedder.encode(list(prompts))
        images = np.zeros((len(prompts), *_SHAPE), dtype=np.float32)
        bonus = VARIANT_BONUS.get(self.config.steps)
        categories = self.category(list(prompts)) if bonus else []
        if self.config.steps:
            import time

            time.sleep(SECONDS_PER_STEP * self.config.steps * len(prompts))  # the variant's cost, measurable
        for i, (v, seed) in enumerate(zip(vectors, seeds)):
            flat = np.clip((v[:384] + 1) / 2, 0, 1)
            images[i, :, :, :16] = flat.reshape(3, 8, 16)
            noise = np.random.default_rng([int(seed), int(sha256_hex(prompts[i], 8), 16)]).normal(0, NOISE_SD)
            if bonus:
                noise += bonus[categories[i]]
            images[i, :, :, 16] = np.clip(0.5 + noise / 8, 0, 1)
        return RenderBatch(images=torch.from_numpy(images), batch_sizes=[len(prompts)] * len(prompts))


class SyntheticScorer(RewardModel):
    def __init__(self, embedder: Embedder, target: str = HIDDEN_TARGET):
        self.embedder = embedder
        self.config = synthetic_scorer_config()
        self._target = embedder.encode([target])[0]
        self._naive: dict[str, np.ndarray] = {}
        self.image_forwards = 0

    name = "synthetic-v1"
    version = SYNTHETIC

    def clear_cache(self) -> None:
        self._naive.clear()

    def _read(self, images, prompts: Sequence[str]):
        """Per image: its content vector (unit length), its seeded noise, and the naive prompt's
        vector, read from the pixels as a PNG would hold them."""
        from promptevo.images import image_batch

        pixels = image_batch(images, prompts).detach().float().cpu().numpy()
        pixels = np.round(np.clip(pixels, 0, 1) * 255) / 255
        naive = cached_vectors(self._naive, self.embedder, list(prompts))
        for img, v_naive in zip(pixels, naive):
            v = img[:, :, :16].reshape(-1) * 2 - 1
            yield v / (np.linalg.norm(v) or 1.0), (float(img[:, :, 16].mean()) - 0.5) * 8, v_naive

    def score(self, images, prompts: Sequence[str]) -> list[float]:
        self.image_forwards += 1
        return [float(TARGET_WEIGHT * v @ self._target + FIDELITY_WEIGHT * v @ v_naive + noise)
                for v, noise, v_naive in self._read(images, prompts)]

    def noise_free(self, texts: Sequence[str], prompts: Sequence[str]) -> np.ndarray:
        """What `score` gives on average over seeds (before the image's 8-bit rounding). For
        diagnostics after a run only: the optimiser never sees it."""
        v, naive = self.embedder.encode(list(texts)), cached_vectors(self._naive, self.embedder, list(prompts))
        return TARGET_WEIGHT * v @ self._target + FIDELITY_WEIGHT * np.sum(v * naive, axis=1)


class SyntheticFidelity(SyntheticScorer):
    """The SYNTHETIC benchmark's second hidden dimension: 10 x similarity of the image's content
    to the user's prompt, without the preference or the noise, so that a run that wins the
    preference by leaving the subject is seen doing so."""

    name = "synthetic-fidelity-v1"
    version = "v1"

    def score(self, images, prompts: Sequence[str]) -> list[float]:
        return [float(10.0 * v @ v_naive) for v, _, v_naive in self._read(images, prompts)]


def cached_vectors(cache: dict[str, np.ndarray], embedder: Embedder, texts: list[str]) -> np.ndarray:
    """Embeddings of `texts` in order; only those not yet in `cache` go to the model."""
    missing = [t for t in dict.fromkeys(texts) if t not in cache]
    cache.update(zip(missing, embedder.encode(missing)))
    return np.stack([cache[t] for t in texts])


class SimulatedLLM:
    """Deterministic word-level imitation of the generator, gradient and modifier roles."""

    model_name = "simulated-word-llm"

    def __init__(self, embedder: Embedder | None = None):
        self.config = LLMConfig(backend="simulated", model=self.model_name)
        self.embedder = embedder  # loaded on first critique when not given
        self._vectors: dict[str, np.ndarray] = {}
        self.calls = 0

    def complete(self, requests, *, temperature=None, seed=None) -> list[Completion]:
        self.calls += len(requests)
        # Each conversation's own seed: two identical requests in one batch (the ablation asks for
        # two blind edits of the same instruction) must still get different answers.
        return [Completion(text=self._reply(r, f"{seed}/{i}"), model=self.model_name, attempts=1)
                for i, r in enumerate(requests)]

    def _critique(self, shown) -> str:
        """What an LLM reading the examples might conclude, imitated with sentence embeddings: the
        direction in which the better prompts differ from the low ones (weighted by the score gap;
        professional prompts count as better when no better prompt is shown), then the words from
        the better and professional prompts that point furthest along it (to add) and the
        low prompts' words that point furthest against it (to drop). It sees only what the prompt
        shows: texts and scores as printed (two decimals), never the scorer's hidden target."""
        examples = []  # (low text, [(better text, score gap)], [professional texts])
        subject = set()
        for e in shown:
            subject |= set(keywords(e.naive, 40))
            low_score = round(e.low_score, 2)
            better = [] if e.better is None else [(e.better, max(round(e.better_score, 2) - low_score, 0.0))]
            if e.low:
                examples.append((e.low, better, [r for r in e.references if r]))
        if not examples:
            return "Inference 1: no examples.\nImprovement 1: Keep the instruction."
        encode, steps = self._encode, []
        for low, better, professional in examples:
            v_low = encode([low])[0]
            steps += [gap * (encode([text])[0] - v_low) for text, gap in better]
            if not better and professional:  # a weaker hint: they describe other scenes
                steps.append((encode(professional).mean(0) - v_low) * 0.1)
        direction = np.sum(steps, axis=0) if steps else np.zeros(1)
        if not np.any(direction):
            return "Inference 1: no difference found.\nImprovement 1: Keep the instruction."
        direction /= np.linalg.norm(direction)
        low_words = list(dict.fromkeys(w for low, _, _ in examples for w in keywords(low, 40) if w not in subject))
        candidates = list(dict.fromkeys(
            w for _, better, professional in examples for text in [t for t, _ in better] + professional
            for w in keywords(text, 40) if w not in subject and w not in low_words))
        if not candidates:
            return "Inference 1: no new words.\nImprovement 1: Keep the instruction."
        along = encode(candidates) @ direction
        ranked = [candidates[i] for i in np.argsort(-along, kind="stable") if along[i] > 0]
        against = encode(low_words) @ direction if low_words else np.zeros(0)
        drop = [low_words[i] for i in np.argsort(against, kind="stable")[:3] if against[i] < 0]
        dropping = f" and drop the words {', '.join(drop)}" if drop else ""
        items = [ranked[:3], ranked[3:6]]
        return "\n".join(
            f"Inference {i}: the better prompts lean towards {', '.join(add)}.\n"
            f"Improvement {i}: Add the words {', '.join(add)}{dropping}."
            for i, add in enumerate((a for a in items if a), 1)) or "Inference 1: nothing.\nImprovement 1: Keep the instruction."

    def _weights(self, fields) -> str:
        """The objective agent, imitated: the preference always counts; the fidelity reward counts
        when the goal or the feedback asks for faithfulness, and more once it has been falling."""
        import json

        names = [r["reward"] for r in fields["rewards"]]
        asked = (str(fields["goal"]) + " " + " ".join(map(str, fields["feedback"]))).lower()
        faithful = any(w in asked for w in ("faithful", "fidelity", "subject", "drift", "off-topic"))
        last = dict(fields["trajectory"][-1]) if fields["trajectory"] else {}
        weights = {}
        for name in names:
            if "fidelity" not in name:
                weights[name] = 1.0
            elif faithful:
                falling = float(last.get(name, "0")) < 0
                weights[name] = 1.0 if falling else 0.5
            else:
                weights[name] = 0.0
        reason = "keep the subject: fidelity counts" if faithful else "preference only"
        return json.dumps({"weights": weights, "reason": reason})

    def _encode(self, texts: list[str]) -> np.ndarray:
        """Sentence embeddings, cached: the critique embeds the same words many times."""
        if self.embedder is None:
            self.embedder = Embedder()
        return cached_vectors(self._vectors, self.embedder, texts)

    def _reply(self, request, seed: str = "") -> str:
        fields = request.fields
        if request.role == "generator":
            words = keywords(str(fields["instruction"]), limit=10)
            prompt = str(fields["prompt"]).strip()
            return prompt + (", " + ", ".join(words) if words else "")
        if request.role == "gradient":
            return self._critique(fields["examples"])
        if request.role == "objective_agent":
            return self._weights(fields)
        if request.role == "retouch_planner":
            from promptevo.retouch.planner import RulePlanner

            return RulePlanner().complete([request])[0].text
        if request.role == "merge":
            return self._merge(fields["first"].text, fields["second"].text)
        base_text = str(fields["instruction"]).strip()
        lines = str(fields["improvement"]).strip().splitlines()
        improvement = lines[0] if lines else ""
        add = re.search(r"Add the words (.*?)(?: and drop the words|\.?$)", improvement)
        drop = re.search(r"drop the words (.*?)\.?$", improvement)
        added = keywords(add.group(1), 6) if add else []
        dropped = keywords(drop.group(1), 6) if drop else []
        if improvement == NO_GRADIENT_IMPROVEMENT:  # the ablation: a blind edit of the same size
            rng = np.random.default_rng(int(sha256_hex(f"{seed}|{base_text}", 8), 16))
            added = list(rng.choice(VOCABULARY, size=3, replace=False))
            current = keywords(base_text, 10)
            dropped = list(rng.choice(current, size=min(3, len(current)), replace=False)) if current else []
        hints = fields.get("hints")
        if hints:  # the history-aware updater also asks for the words that scored and drops the others
            own = keywords(base_text, 40)
            added += [w.word for w in hints.helped if w.word not in own and w.word not in added][:2]
            dropped += [w.word for w in hints.hurt if w.word in own and w.word not in dropped][:2]
        for word in dropped:
            base_text = re.sub(rf"\b{re.escape(word)}\b,? ?", "", base_text, flags=re.I)
        # The newest words first, so the generator's keyword window keeps what the critique added.
        # Nothing to apply ("Keep the instruction."): the same instruction, which the loop rejects.
        adding = f"Add {', '.join(added)}. " if added else ""
        return f"<instruction>{adding}{base_text.strip()}</instruction>"

    @staticmethod
    def _merge(first: str, second: str) -> str:
        """Both instructions' strengths, imitated: the second's own words (up to four) ahead of
        the first, so that the generator's keyword window holds words of both."""
        own = set(keywords(first, 40))
        extra = [w for w in keywords(second, 40) if w not in own][:4]
        return f"<instruction>{'Add ' + ', '.join(extra) + '. ' if extra else ''}{first.strip()}</instruction>"


def noise_free_runs(out_dir, models=None) -> list[dict]:
    """For every finished run of a SYNTHETIC experiment (its `runs/ARM-rN.db` files): the
    noise-free held-out gain of the best seed instruction, of the best instruction the run
    created, of the one it chose, and the mean of its new instructions. It tells "found nothing
    better" apart from "found it but chose a lucky one", which the measured table cannot."""
    from pathlib import Path

    from promptevo.optimise.generator import rewrite
    from promptevo.storage.repository import RunRepository
    from promptevo.storage.store import Store

    llm, renderer, scorer = models or synthetic_models()
    out = []
    for db in sorted(Path(out_dir, "runs").glob("*-r*.db")):
        arm, _, repeat = db.stem.rpartition("-r")
        with Store(db, readonly=True) as store:
            repo = RunRepository(store)
            run = repo.first_run()
            assert run is not None, f"{db} holds no run"
            prompts = [p["text"] for p in repo.prompts(run["id"], "heldout")]
            rows = [i for i in repo.instructions(run["id"]) if i["origin"] != "baseline"]
        if not prompts or not run["best_instruction_id"]:
            continue  # unfinished run
        texts = [g.text for row in rows for g in rewrite(  # all instructions in one batch
            llm, row["text"], prompts, token_count=renderer.token_count, window=renderer.config.text_window)]
        values = scorer.noise_free(texts + prompts, prompts * (len(rows) + 1)).reshape(len(rows) + 1, len(prompts))
        gain = {row["id"]: float(np.mean(v - values[-1])) for row, v in zip(rows, values)}
        seeds = [gain[r["id"]] for r in rows if r["origin"] == "seed"]
        new = [gain[r["id"]] for r in rows if r["origin"] != "seed"]
        out.append({"arm": arm, "repeat": int(repeat), "best_seed": max(seeds),
                    "best_found": max(new) if new else float("nan"), "chosen": gain[run["best_instruction_id"]],
                    "new_mean": float(np.mean(new)) if new else float("nan")})
    return sorted(out, key=lambda r: (r["arm"], r["repeat"]))


def synthetic_models(embedder: Embedder | None = None):
    """(llm, renderer, scorer) for the synthetic benchmark, sharing one embedder."""
    embedder = embedder or shared_embedder()
    return SimulatedLLM(embedder), SyntheticRenderer(embedder), SyntheticScorer(embedder)


def synthetic_profile():
    from promptevo.config import Profile

    return Profile(name=SYNTHETIC, description="SYNTHETIC benchmark: simulated LLM, embedding 'renderer', hidden-preference scorer",
                   llm=SimulatedLLM().config, render=synthetic_render_config(), scorer=synthetic_scorer_config())


@register_renderer("synthetic")
def build_renderer(config: RenderConfig) -> SyntheticRenderer:
    return SyntheticRenderer(shared_embedder())


@register_reward("synthetic", name=lambda c: "synthetic-v1",
                 measures="SYNTHETIC benchmark only: hidden-target preference (plus some fidelity and seeded noise)",
                 scale_note="synthetic points", needs="nothing (offline stand-in)", version="synthetic",
                 arch="all-MiniLM-L6-v2", modules=("sentence_transformers",))
def build_reward(config: ScorerConfig) -> SyntheticScorer:
    return SyntheticScorer(shared_embedder())


@register_reward("synthetic-fidelity", name=lambda c: "synthetic-fidelity-v1",
                 measures="SYNTHETIC benchmark only: how close the image stays to the user's prompt, measured apart "
                          "from the preference", scale_note="10 x cosine", needs="nothing (offline stand-in)",
                 version="v1", arch="all-MiniLM-L6-v2", modules=("sentence_transformers",), reads_text=True)
def build_fidelity(config: ScorerConfig) -> SyntheticFidelity:
    return SyntheticFidelity(shared_embedder())


@register_llm("simulated")
def build_llm(config: LLMConfig) -> SimulatedLLM:
    return SimulatedLLM(shared_embedder())


__all__ = ["SYNTHETIC", "HIDDEN_TARGET", "SimulatedLLM", "SyntheticRenderer", "SyntheticScorer", "synthetic_models",
           "synthetic_profile"]
