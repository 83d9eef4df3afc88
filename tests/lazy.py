"""Heavy libraries imported on first use, so collecting the tests imports no torch."""

import importlib


class LazyModule:
    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr):
        return getattr(importlib.import_module(self._name), attr)


torch = LazyModule("torch")
