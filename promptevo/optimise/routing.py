"""Per-prompt routing: prompts grouped by meaning, and per group what did best on its prompts:
"prompts like these -> this variant with this instruction".

Groups are k-means clusters of the optimisation prompts' sentence embeddings (all-MiniLM-L6-v2,
the prompt database's embedder), so a new prompt is routed by its nearest centroid, by
`promptevo apply` as by the held-out evaluation. `route_table` picks per group the choice (the
optimiser passes variants, pooled over every instruction) with the best mean gain on the group's
prompts, shrunk toward that choice's mean over every prompt (a group sees few images, and one
measured on two of them should not beat one measured on twenty by luck); choices need `min_n`
gains in the group to compete, and a group with none keeps the fallback.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

SHRINK = 2.0  # pseudo-observations of the arm's overall mean added to its group mean


def kmeans(vectors: np.ndarray, k: int, seed: int, iters: int = 50) -> np.ndarray:
    """Centroids (unit length: the embeddings are) of k clusters, k-means++ start, deterministic."""
    rng = np.random.default_rng([seed, 0xC1])
    n = len(vectors)
    k = max(1, min(k, n))
    centroids = [vectors[int(rng.integers(n))]]
    while len(centroids) < k:
        d = np.min([np.sum((vectors - c) ** 2, axis=1) for c in centroids], axis=0)
        if d.sum() <= 0:
            break
        centroids.append(vectors[int(rng.choice(n, p=d / d.sum()))])
    c = np.array(centroids)
    for _ in range(iters):
        labels = assign(vectors, c)
        new = np.array([vectors[labels == j].mean(axis=0) if np.any(labels == j) else c[j] for j in range(len(c))])
        new /= np.maximum(np.linalg.norm(new, axis=1, keepdims=True), 1e-12)
        if np.allclose(new, c):
            break
        c = new
    return c


def assign(vectors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Each vector's nearest centroid (cosine: all are unit length)."""
    return np.argmax(np.asarray(vectors) @ np.asarray(centroids).T, axis=1)


def group_count(n_prompts: int, wanted: int) -> int:
    """Groups for n prompts: as asked, but at least three prompts a group."""
    return max(1, min(wanted, n_prompts // 3))


def route_table(gains: Sequence[tuple[int, str, float]], prompt_group: dict[str, int], groups: int,
                fallback: int, min_n: int = 2) -> list[dict[str, Any]]:
    """Per group: the choice to use (as `arm_id`), its shrunk mean gain there and the gains it
    rests on. `gains`: (choice id, prompt id, gain) for every paired trial of the optimisation prompts."""
    overall: dict[int, list[float]] = {}
    by_group: dict[tuple[int, int], list[float]] = {}
    for arm, pid, g in gains:
        overall.setdefault(arm, []).append(g)
        if pid in prompt_group:
            by_group.setdefault((prompt_group[pid], arm), []).append(g)
    table: list[dict[str, Any]] = []
    for grp in range(groups):
        scored = []
        for (gg, arm), values in by_group.items():
            if gg == grp and len(values) >= min_n:
                prior = float(np.mean(overall[arm]))
                scored.append(((sum(values) + SHRINK * prior) / (len(values) + SHRINK), len(values), -arm, arm))
        if scored:
            value, n, _, arm = max(scored)
            table.append({"group": grp, "arm_id": arm, "gain": value, "n": n})
        else:
            table.append({"group": grp, "arm_id": fallback, "gain": None, "n": 0})
    return table
