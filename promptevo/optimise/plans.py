"""Round plans as typed records: fixed before any of a round's work, stored as JSON with the round
(the same JSON as when they were dicts: fields in order, unset optional fields left out), and read
back on resume, so a resumed round does exactly what it planned."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T", bound="Plan")


@dataclass(frozen=True)
class Plan:
    prompts: list[str]  # prompt ids
    seeds: list[list[int]]  # seeds per prompt

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_json(cls: type[T], text: str) -> T:
        data = json.loads(text)
        return cls(**{f.name: data.get(f.name) for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class SearchPlan(Plan):
    arms: list[int]  # instruction ids
    pairs: list[list[int]] | None = None  # with render variants: [instruction id, variant id]


@dataclass(frozen=True)
class SelectionPlan(Plan):
    arms: list[int]  # candidate instruction ids
    pairs: list[list[int]] | None = None  # with render variants: each candidate with its best variant


@dataclass(frozen=True)
class EvaluationPlan(Plan):
    best: int  # the run's answer
    initial: int  # the first seed instruction
    best_variant: int | None = None  # with render variants: the answer's variant
    routes: dict[str, list[int]] | None = None  # with render variants: prompt id -> [instruction, variant] by routing
