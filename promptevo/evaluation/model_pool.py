"""The model pool: render variants' pipelines, loaded when first asked for, shared between
variants of the same model, and bounded in memory.

A variant is a render config. Variants that differ only in call settings (steps, guidance,
size, scheduler, decoder) are views of one loaded pipeline (`with_settings`), so they cost no
memory; variants of different models each load their own. At most `max_models` models stay
loaded: loading one more releases the least recently used (its views go with it and are made
again, with the reload, when asked for). A model that fails to load is remembered with its
error, so every later request for it fails at once with the same message instead of loading
again; the evaluator turns that into failed jobs and the optimiser retires the variant.
"""

from __future__ import annotations

import gc
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from promptevo.config import RenderConfig
from promptevo.registry import renderer_with_settings


class VariantUnavailable(Exception):
    """A render variant whose model could not be loaded (or drawn): why, in words."""


def load_key(config: RenderConfig) -> tuple:
    """What must be loaded to draw `config`: the model and how it sits in memory. The call
    settings (steps, guidance, size, scheduler, decoder, batch size) are not part of it."""
    return (config.kind, config.model, config.dtype, config.device, config.channels_last, config.compile)


class ModelPool:
    def __init__(self, build: Callable[[RenderConfig], Any], max_models: int = 2):
        if max_models < 1:
            raise ValueError("the pool holds at least one model")
        self.build, self.max_models = build, max_models
        self._models: OrderedDict[tuple, tuple[Any, RenderConfig]] = OrderedDict()  # load key -> (renderer, the config
        # it was asked for: a renderer's own config is resolved, e.g. device "auto" -> "cuda"), least recent first
        self._views: dict[str, tuple[tuple, Any]] = {}  # config hash -> (load key, renderer drawing that config)
        self._failed: dict[tuple, str] = {}
        self._lock = threading.RLock()
        self.loads = 0  # models loaded (reloads included), for tests and the bench
        self.peak = 0  # most models loaded at once

    def add(self, renderer: Any, config: RenderConfig) -> None:
        """A renderer built elsewhere from `config` (the profile's own), held like a loaded model."""
        with self._lock:
            self._hold(load_key(config), renderer, config)
            self._views[config.hash] = (load_key(config), renderer)

    def get(self, config: RenderConfig) -> Any:
        with self._lock:
            key = load_key(config)
            if config.hash in self._views:
                self._models.move_to_end(key)
                return self._views[config.hash][1]
            if key in self._failed:
                raise VariantUnavailable(self._failed[key])
            held = self._models.get(key)
            if held is None:
                try:
                    held = (self.build(config), config)
                except Exception as exc:  # noqa: BLE001 - any load failure retires the variant, not the run
                    self._failed[key] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
                    raise VariantUnavailable(self._failed[key]) from None
                self.loads += 1
                self._hold(key, *held)
            self._models.move_to_end(key)
            base, asked = held
            if asked.hash == config.hash:
                view = base
            elif (view := renderer_with_settings(base, config)) is None:
                raise VariantUnavailable(f"the {config.kind} renderer draws one setting only; it cannot draw {config.identity()}")
            self._views[config.hash] = (key, view)
            return view

    def loaded(self) -> list[tuple]:
        """Load keys of the models in memory, least recently used first."""
        with self._lock:
            return list(self._models)

    def failed(self) -> dict[tuple, str]:
        with self._lock:
            return dict(self._failed)

    def _hold(self, key: tuple, renderer: Any, config: RenderConfig) -> None:
        self._models[key] = (renderer, config)
        self._models.move_to_end(key)
        while len(self._models) > self.max_models:
            old, _ = self._models.popitem(last=False)
            self._views = {h: kv for h, kv in self._views.items() if kv[0] != old}
            self._release()
        self.peak = max(self.peak, len(self._models))

    @staticmethod
    def _release() -> None:
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
