"""Render variants as candidates: what the user gives (`--variant steps=2,guidance=5`, or a TOML
file of `[[variant]]` tables), how a variant becomes a render config, and the statistics of
variants and of (instruction, variant) arms that the optimiser's selectors read.

A variant's spec overrides the profile's render settings (model, steps, guidance, scheduler,
size) and may carry its own retouch plan. Naive prompts always render with the profile's own
settings, so an arm's gain is what its instruction and its variant add together over the
prompt as the user would have rendered it; its cost is the variant's measured seconds per
image, and `cost_weight` turns each second into objective units lost.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from promptevo.config import TINY, RenderConfig, read_toml
from promptevo.errors import UserError
from promptevo.evaluation.evaluator import Variant
from promptevo.optimise import bandit

KEYS = {"name": str, "model": str, "steps": int, "guidance": float, "scheduler": str, "width": int, "height": int,
        "retouch": str}
SEARCHES = ("factored", "joint")


def parse_variant(text: str) -> dict[str, Any]:
    """`steps=2,guidance=5,size=512x512` -> a spec (values typed, the size split)."""
    spec: dict[str, Any] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or not value.strip():
            raise UserError(f"--variant {text!r}: write KEY=VALUE pairs separated by commas, e.g. steps=2,guidance=5")
        if key == "size":
            w, _, h = value.lower().partition("x")
            spec.update(width=w, height=h)
        else:
            spec[key] = value.strip()
    return check_spec(spec, f"--variant {text!r}")


def check_spec(spec: dict[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in spec.items():
        kind = KEYS.get(key)
        if kind is None:
            raise UserError(f"{where}: unknown setting {key!r}; a variant sets {', '.join(k for k in KEYS)} (or size=WxH)")
        try:
            out[key] = kind(value)
        except (TypeError, ValueError):
            raise UserError(f"{where}: {key} must be {'a whole number' if kind is int else 'a number' if kind is float else 'text'} "
                            f"(got {value!r})") from None
    checks = [("steps", lambda v: v >= 1, "at least 1"), ("guidance", lambda v: v >= 0 and math.isfinite(v), "a number >= 0"),
              ("width", lambda v: v >= 8 and v % 8 == 0, "a multiple of 8"), ("height", lambda v: v >= 8 and v % 8 == 0, "a multiple of 8")]
    for key, ok, what in checks:
        if key in out and not ok(out[key]):
            raise UserError(f"{where}: {key} must be {what} (got {out[key]})")
    if "retouch" in out:
        from promptevo.retouch.plan import load_plan

        path = Path(out["retouch"])
        if not path.is_file():
            raise UserError(f"{where}: retouch plan {path} does not exist")
        out["retouch"] = load_plan(path).to_list()
    return out


def load_variants(path: Path) -> list[dict[str, Any]]:
    """`[[variant]]` tables of a TOML file, each a spec."""
    tables = read_toml(path, "variants file").get("variant")
    if not isinstance(tables, list) or not tables:
        raise UserError(f"{path}: no [[variant]] tables")
    base = path.parent
    specs = []
    for i, table in enumerate(tables):
        table = dict(table)
        if "retouch" in table and not Path(table["retouch"]).is_absolute():
            table["retouch"] = str(base / table["retouch"])
        specs.append(check_spec(table, f"{path} variant {i + 1}"))
    return specs


def name_of(spec: dict[str, Any]) -> str:
    if spec.get("name"):
        return str(spec["name"])
    parts = [f"{k}={v}" for k, v in spec.items() if k not in ("name", "retouch")]
    if "retouch" in spec:
        parts.append("retouch=" + "+".join(s["op"] for s in spec["retouch"]))
    return ",".join(parts) or "profile"


def named(specs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Specs with their names set, refusing two variants of one name."""
    out = [{**s, "name": name_of(s)} for s in specs]
    names = [s["name"] for s in out]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise UserError(f"two variants are named {dup!r}; give each its own name=")
    return out


def render_of(base: RenderConfig, spec: dict[str, Any]) -> RenderConfig:
    """The base render config with the spec's settings. A model other than the tiny one is drawn
    by diffusers, whatever drew the base; a model of the table (`render_models`) starts from its
    own steps, guidance, size, dtype and tiny autoencoder, which the spec's settings override."""
    from promptevo.render_models import known

    changes: dict[str, Any] = {}
    entry = known(spec["model"]) if "model" in spec and spec["model"] != base.model else None
    if entry is not None:
        changes.update(steps=entry.steps, guidance=entry.guidance, width=entry.size, height=entry.size, dtype=entry.dtype,
                       max_sequence_length=None)
        if base.tiny_vae:  # a search decoder for this model's latents, not the base model's
            changes["tiny_vae"] = entry.tiny_vae
    changes.update({k: spec[k] for k in ("model", "steps", "guidance", "scheduler", "width", "height") if k in spec})
    if "model" in changes and base.kind == "tiny" and changes["model"] != TINY:
        changes["kind"] = "diffusers"
    return dataclasses.replace(base, **changes)


def variant_of(base: Variant, spec: dict[str, Any]) -> Variant:
    """A variant's render form from the run's base form (search or final): its settings, and its
    own retouch plan in place of the run's, if it has one."""
    post_ops = base.post_ops
    if spec.get("retouch") is not None:
        from promptevo.retouch.plan import validate

        post_ops = validate(spec["retouch"]).post_ops()
    return Variant(render_of(base.render, spec), post_ops)


# -- statistics ---------------------------------------------------------------------------------


def variant_ids(rows: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Image variant hash (search or final form) -> variant id."""
    out: dict[str, int] = {}
    for r in rows:
        for h in (r["search_hash"], r["final_hash"]):
            if h:
                out.setdefault(h, r["id"])
    return out


def cost_of(row: dict[str, Any], weight: float) -> float:
    """What a variant's cost takes off each of its gains: weight x measured seconds per image."""
    s = row.get("seconds_per_image")
    return weight * s if weight and s else 0.0


def _stats(gains, key, ids: Sequence, costs: dict) -> list[bandit.ArmStats]:
    stats = {i: bandit.ArmStats(arm=i) for i in ids}
    by_round: dict[tuple[Any, int], list[float]] = {}
    for g, k in ((g, key(g)) for g in gains):
        if k in stats:
            value = g.gain - costs.get(k, 0.0)
            by_round.setdefault((k, g.trial.round), []).append(value)
            stats[k].per_prompt.setdefault(g.trial.prompt_id, []).append(value)
    for (k, _), values in sorted(by_round.items(), key=lambda kv: kv[0][1]):
        stats[k].rewards.append(float(np.mean(values)))
    return [stats[i] for i in ids]


def variant_stats(gains, vids: dict[str, int], rows: Sequence[dict[str, Any]], weight: float = 0.0) -> list[bandit.ArmStats]:
    """Per variant (over every instruction it drew for): its cost-adjusted mean gain per round."""
    costs = {r["id"]: cost_of(r, weight) for r in rows}
    return _stats([g for g in gains if g.trial.instruction_id is not None], lambda g: vids.get(g.trial.variant_hash),
                  [r["id"] for r in rows], costs)


def pair_stats(gains, vids: dict[str, int], arms: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]],
               weight: float = 0.0) -> list[bandit.ArmStats]:
    """Per (instruction, variant) arm (ArmStats.arm is the arm id)."""
    arm_of = {(a["instruction_id"], a["variant_id"]): a["id"] for a in arms}
    by_variant = {r["id"]: cost_of(r, weight) for r in rows}
    costs = {a["id"]: by_variant[a["variant_id"]] for a in arms if a["variant_id"] in by_variant}
    return _stats(gains, lambda g: arm_of.get((g.trial.instruction_id, vids.get(g.trial.variant_hash))),
                  [a["id"] for a in arms], costs)
