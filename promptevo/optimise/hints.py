"""What a run's history says to the updater: reward-aware hints (RATTPO, arXiv 2506.16853) and
the best and worst instructions so far (OPT2I, arXiv 2403.17804).

A hint is a word that the rewrites added to the user's prompt, with its effect on the gain over
the naive prompt: its coefficient in a ridge regression of the gains (each prompt's own level
taken out: some subjects gain more from any rewrite) on every added word at once. Words seen in
too few images are left out; the ranking is by effect over its standard error, so a word seen
twice with a lucky seed does not lead. Read-only: computed from stored trials through the run's
objective.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from promptevo.rewards.objective import Objective, paired_gains
from promptevo.storage.repository import RunRepository

STOPWORDS = set("""a an the and or of to in on at by for with from into as is are be it its this that your you
prompt prompts short image keep subject rewrite turn add adds name names describe description words
make makes one change changes instruction instructions could better way than more also use using their them
only which what when then there these those each every very he she his her him they them their we our
who whose where while under over through out all about after before between both down up off some such
not can will would should has have had was were been being so too just like near behind around across
along against within without upon per made make full small big""".split())


def keywords(text: str, limit: int = 12) -> list[str]:
    """The content words of `text`, lower-cased, first occurrence order, at most `limit`."""
    words = [w.lower() for w in re.findall(r"[A-Za-z][A-Za-z-]+", text)]
    return list(dict.fromkeys(w for w in words if w not in STOPWORDS and len(w) > 2))[:limit]


@dataclass(frozen=True)
class WordEffect:
    word: str
    effect: float  # its ridge coefficient: gain with the word, the other words held fixed
    images: int  # images whose rewrite has it
    z: float  # effect over its standard error

    def text(self) -> str:
        return f"{self.word} ({self.effect:+.2f} over {self.images} images)"


class Hints(tuple):
    """(helped, hurt) word effects as a template field: structured for code, text in the prompt."""

    @property
    def helped(self) -> tuple[WordEffect, ...]:
        return self[0]

    @property
    def hurt(self) -> tuple[WordEffect, ...]:
        return self[1]

    def __format__(self, spec: str) -> str:
        if not self.helped and not self.hurt:
            return "(not enough scored images yet)"
        lines = []
        if self.helped:
            lines.append("Words in rewrites that scored higher: " + ", ".join(w.text() for w in self.helped))
        if self.hurt:
            lines.append("Words in rewrites that scored lower: " + ", ".join(w.text() for w in self.hurt))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.__format__("")


def word_effects(texts: Sequence[str], naive: Sequence[str], prompt_ids: Sequence[str], gains: Sequence[float],
                 *, min_images: int = 3, ridge: float = 2.0) -> list[WordEffect]:
    """Every word the rewrites added (not in the naive prompt) seen in at least `min_images`
    images and missing from at least as many, with its effect; highest z first.

    Words come in bundles (an instruction adds all of its words to every rewrite), so a word's
    effect is its coefficient in a ridge regression of the per-prompt-centred gains on every
    word at once: words that always travel together share the credit instead of each taking
    all of it, and the shrinkage (`ridge`, in images) keeps rare words small."""
    gains = np.asarray(gains, dtype=float)  # type: ignore[assignment]
    if len(gains) < 2 * min_images:
        return []
    level: dict[str, list[float]] = {}
    for pid, g in zip(prompt_ids, gains):
        level.setdefault(pid, []).append(g)
    y = gains - np.array([np.mean(level[pid]) for pid in prompt_ids])
    added = [set(keywords(t, 60)) - set(keywords(n, 60)) for t, n in zip(texts, naive)]
    count = {w: sum(w in a for a in added) for w in set().union(*added)}
    vocab = [w for w in sorted(count) if min_images <= count[w] <= len(added) - min_images]
    if not vocab:
        return []
    x = np.array([[w in a for w in vocab] for a in added], dtype=float)
    x -= x.mean(axis=0)
    inv = np.linalg.inv(x.T @ x + ridge * np.eye(len(vocab)))
    coef = inv @ x.T @ y
    resid = y - x @ coef
    sigma2 = float(resid @ resid) / max(len(y) - 1, 1) or 1e-9
    se = np.sqrt(np.maximum(np.diag(inv @ x.T @ x @ inv) * sigma2, 1e-18))
    out = [WordEffect(w, float(c), count[w], float(c / e)) for w, c, e in zip(vocab, coef, se)]
    return sorted(out, key=lambda w: (-w.z, w.word))


def run_hints(repo: RunRepository, run_id: str, objective: Objective, *, also_round: int | None = None,
              limit: int = 5, min_z: float = 1.0) -> Hints:
    """The run's hints from its search rounds so far: up to `limit` words that helped and that
    hurt, each with |z| >= `min_z`."""
    gains = paired_gains(repo.trials(run_id, phase="search", finished=True, also_round=also_round), objective)
    naive = repo.prompt_texts(sorted({g.trial.prompt_id for g in gains}))
    effects = word_effects([g.trial.rendered for g in gains], [naive[g.trial.prompt_id] for g in gains],
                           [g.trial.prompt_id for g in gains], [g.gain for g in gains])
    helped = tuple(w for w in effects if w.z >= min_z and w.effect > 0)[:limit]
    hurt = tuple(w for w in reversed(effects) if w.z <= -min_z and w.effect < 0)[:limit]
    return Hints((helped, hurt))


@dataclass(frozen=True)
class Ranked:
    text: str
    mean: float  # mean search-round gain
    pulls: int


class History(tuple):
    """(best, worst) instructions so far with their scores, as a template field."""

    def __format__(self, spec: str) -> str:
        best, worst = self
        lines = [f"Best so far: (gain {r.mean:+.2f} over {r.pulls} rounds) {r.text}" for r in best]
        lines += [f"Worst so far: (gain {r.mean:+.2f} over {r.pulls} rounds) {r.text}" for r in worst]
        return "\n".join(lines) or "(no scored instructions yet)"

    def __str__(self) -> str:
        return self.__format__("")


def run_history(repo: RunRepository, run_id: str, stats, k: int = 2) -> History:
    """The `k` best and `k` worst pulled instructions by mean search gain (retired ones included)."""
    pulled = sorted((s for s in stats if s.pulls), key=lambda s: (-s.mean, s.arm))
    texts = {i["id"]: i["text"] for i in repo.instructions(run_id)}
    rank = [Ranked(texts[s.arm], s.mean, s.pulls) for s in pulled]
    return History((tuple(rank[:k]), tuple(rank[k:][-k:][::-1])))
