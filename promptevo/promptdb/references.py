"""Reference prompts for the gradient: the k nearest prompts in a prompt database, found exactly
as `promptevo db similar` finds them (the paper's "professional prompts" from Lexica)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from promptevo.embed import DEFAULT_EMBEDDER, Embedder
from promptevo.errors import UserError
from promptevo.promptdb.collection import PromptDB
from promptevo.storage.store import Store


def check_reference_db(path: str | Path) -> str:
    """The database as an absolute path (a resumed run finds it from any folder), or a UserError."""
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise UserError(f"reference database {path} does not exist (build one with `promptevo db import`)")
    with Store(p, readonly=True) as store:
        n = PromptDB(store).count()
    if not n:
        raise UserError(f"reference database {path} holds no prompts (import some with `promptevo db import`)")
    return str(p)


class ReferencePrompts:
    def __init__(self, path: str | Path, k: int = 3, *, embedder: Embedder | None = None,
                 store: Store | None = None, embedder_name: str = DEFAULT_EMBEDDER):
        self.path, self.k = Path(path), k
        self._store = store
        self._owns_store = store is None
        self._embedder = embedder
        self._embedder_name = embedder_name
        self._cache: dict[str, list[dict[str, Any]]] = {}

    @property
    def db(self) -> PromptDB:
        if self._store is None:
            self._store = Store(self.path)
        return PromptDB(self._store)

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = Embedder(self._embedder_name)
        return self._embedder

    def set_k(self, k: int) -> None:
        """Another number of neighbours (an experiment's arms may differ); forgets cached answers."""
        if k != self.k:
            self.k, self._cache = k, {}

    def nearest(self, text: str) -> list[dict[str, Any]]:
        """The k nearest reference prompts (id, text, similarity), excluding the text itself."""
        if text not in self._cache:
            found = self.db.similar(self.embedder, text, self.k + 1)
            self._cache[text] = [r for r in found if r["text"] != text][: self.k]
        return self._cache[text]

    def close(self) -> None:
        if self._owns_store and self._store is not None:
            self._store.close()
            self._store = None
