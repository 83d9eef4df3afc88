"""Retouch plans: an ordered list of {op, value, reason}, explainable and replayable.

A plan is validated before anything runs (unknown operation, value out of its range, an
operation twice, stages out of their fixed order) with errors that name the step. Its pixels
are defined by the (op, value) pairs alone, so the reasons do not enter the variant's hash:
`post_ops()` is what a `Variant` carries, and retouched images are cached like renders.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptevo.errors import UserError
from promptevo.evaluation.evaluator import PostOp
from promptevo.llms.parsing import clean_text
from promptevo.retouch.ops import OPS, STAGES

MAX_STEPS = 16
MAX_REASON = 300


class PlanError(UserError):
    """A plan that cannot run: what is wrong, naming the step."""


@dataclass(frozen=True)
class Step:
    op: str
    value: float
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "value": self.value, "reason": self.reason}


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...] = ()

    def post_ops(self) -> tuple[PostOp, ...]:
        return tuple(PostOp(s.op, s.value) for s in self.steps)

    def pairs(self) -> list[tuple[str, float]]:
        return [(s.op, s.value) for s in self.steps]

    def to_list(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self.steps]

    def with_values(self, values: Sequence[float], reason: str | None = None) -> Plan:
        """The same operations with other values (a search's result); reasons kept unless given."""
        return Plan(tuple(Step(s.op, round(float(v), 4), s.reason if reason is None else reason)
                          for s, v in zip(self.steps, values, strict=True)))

    def ops(self) -> tuple[str, ...]:
        return tuple(s.op for s in self.steps)


def validate(items: Any, *, where: str = "plan") -> Plan:
    """A plan from its JSON form (a list of steps, or {"plan": [...]}) or a PlanError."""
    if isinstance(items, dict) and "plan" in items:
        items = items["plan"]
    if not isinstance(items, list):
        raise PlanError(f"{where}: a plan is a JSON list of {{op, value, reason}} steps")
    if len(items) > MAX_STEPS:
        raise PlanError(f"{where}: {len(items)} steps; at most {MAX_STEPS}")
    steps, seen, stage_at = [], set(), 0
    for i, item in enumerate(items, 1):
        if not isinstance(item, dict) or "op" not in item:
            raise PlanError(f"{where} step {i}: needs an \"op\" and a \"value\"")
        op = str(item["op"]).strip()
        if op not in OPS:
            close = [n for n in OPS if n.split("_")[0] == op.split("_")[0]][:4]
            hint = f" (did you mean {', '.join(close)}?)" if close else " (`promptevo retouch --list-ops`)"
            raise PlanError(f"{where} step {i}: unknown operation {op!r}{hint}")
        info = OPS[op]
        try:
            value = float(item.get("value", info.neutral))
        except (TypeError, ValueError):
            raise PlanError(f"{where} step {i} ({op}): value {item.get('value')!r} is not a number") from None
        if not math.isfinite(value) or not info.low <= value <= info.high:
            raise PlanError(f"{where} step {i} ({op}): value {value:g} is outside [{info.low:g}, {info.high:g}]")
        if op in seen:
            raise PlanError(f"{where} step {i}: {op} appears twice; give one value")
        stage = STAGES.index(info.stage)
        if stage < stage_at:
            raise PlanError(f"{where} step {i} ({op}): {info.stage} comes before {STAGES[stage_at]}; "
                            f"stages run in the order {', '.join(STAGES)}")
        seen.add(op)
        stage_at = stage
        steps.append(Step(op, value, clean_text(str(item.get("reason", "")), MAX_REASON)))  # printable text only
    return Plan(tuple(steps))


def load_plan(path: Path) -> Plan:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"cannot read plan {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UserError(f"{path} is not JSON: {exc}") from None
    return validate(data, where=str(path))


def parse_reply(text: str) -> Plan:
    """The plan in an LLM's reply: the first JSON list or {"plan": ...} object in it; failing
    that, the step objects ({"op": ...}) it wrote one after another, each distinct one once."""
    decoder, steps, at = json.JSONDecoder(), [], 0
    for match in re.finditer(r"[\[{]", text):
        if match.start() < at:
            continue
        try:
            data, end = decoder.raw_decode(text[match.start():])
        except ValueError:
            continue
        if isinstance(data, list) or (isinstance(data, dict) and "plan" in data):
            return validate(data, where="the planner's plan")
        if isinstance(data, dict) and "op" in data and data not in steps:
            steps.append(data)
        at = match.start() + end
    if steps:
        return validate(steps, where="the planner's plan")
    raise PlanError("the planner's reply has no JSON plan")


def sort_by_stage(steps: Iterable[Step]) -> Plan:
    """Steps in stage order, keeping each stage's own order (for plans assembled from parts)."""
    return Plan(tuple(sorted(steps, key=lambda s: STAGES.index(OPS[s.op].stage))))


def ops_table() -> list[dict[str, Any]]:
    return [{"op": o.name, "stage": o.stage, "low": o.low, "high": o.high, "neutral": o.neutral, "doc": o.doc}
            for o in OPS.values()]
