"""Optimisation commands: optimize, runs, apply."""


def register(app) -> None:
    pass
