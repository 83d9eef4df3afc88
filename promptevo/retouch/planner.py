"""Retouching as an agent: measure the image, let an LLM plan the operations (which problems,
which tools, in which order, why), then refine the plan's values against a no-reference
objective with optuna, under an identity guard (SSIM to the input at or above a threshold).

Modes: `planner` (the plan as written), `search` (no LLM: optuna over a fixed set of operations),
`planner+search` (the plan's operations, its values as the first trial), `detect` (no LLM:
detection before action, `retouch.detect`: only the operations that treat a degradation detected
with confidence, their values refined by the search; nothing detected, the image unchanged). A
reply that is not a valid plan falls back to the search alone and says so in the outcome.
Whatever the mode, the result never breaks the guards: a plan whose result loses SSIM to the
input below the threshold, or scores below the untouched image on the objective itself, is
replaced by no operation, and recorded.

The same code serves one photograph (`promptevo retouch`) and a set of renders that share one
plan (`optimize --retouch auto`): a trial applies one set of values to every image of the set.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from promptevo.errors import UserError
from promptevo.retouch.ops import OPS, apply_steps
from promptevo.retouch.plan import (
    Plan,
    PlanError,
    Step,
    ops_table,
    parse_reply,
    sort_by_stage,
)
from promptevo.rewards.measures import describe, ssim_batch

MODES = ("planner", "search", "planner+search", "detect")
DEFAULT_OBJECTIVE = "brisque=1,piqe=1,exposure=1,contrast=1,colourfulness=1,noise=1"
SEARCH_OPS = ("white_balance", "denoise", "sharpen", "exposure", "contrast", "shadows", "saturation", "tint")
GUARD_PENALTY = 1e3


@dataclass(frozen=True)
class RetouchSettings:
    mode: str = "planner+search"
    trials: int = 24  # objective evaluations per image (or per shared set), the plan's own included
    batch: int = 8  # trials evaluated together
    min_ssim: float = 0.6  # identity guard: SSIM of the result to the input
    edit_cost: float = 1.0  # objective units a search pays per operation moved across its whole range
    seed: int = 0
    vision: bool = False  # send the image to the LLM too (an OpenAI-compatible vision model)

    def validate(self) -> None:
        if self.mode not in MODES:
            raise UserError(f"--mode is one of {', '.join(MODES)} (got {self.mode!r})")
        if self.trials < 1 or self.batch < 1:
            raise UserError("--trials and the batch must be >= 1")
        if not self.edit_cost >= 0:
            raise UserError(f"the edit cost must be >= 0 (got {self.edit_cost})")
        if not 0 <= self.min_ssim <= 1:
            raise UserError(f"--min-ssim is between 0 and 1 (got {self.min_ssim})")


@dataclass
class Outcome:
    plan: Plan
    source: str  # planner, search, planner+search, detect, fallback-search (malformed plan), nothing detected,
    # guard (SSIM guard broken: none), objective guard (scored below the untouched image: none)
    planner: dict[str, Any]  # status (ok, malformed, failed, skipped), error, reply
    objective_before: float
    objective_after: float
    ssim_to_input: float
    trials: int
    measures_before: dict[str, float] = field(default_factory=dict)
    measures_after: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"plan": self.plan.to_list(), "source": self.source, "planner": self.planner,
                "objective_before": self.objective_before, "objective_after": self.objective_after,
                "ssim_to_input": self.ssim_to_input, "trials": self.trials,
                "measures_before": self.measures_before, "measures_after": self.measures_after}


# -- the objective -------------------------------------------------------------------------------


class RetouchObjective:
    """A weighted objective over image rewards, evaluated on a batch: value per image."""

    def __init__(self, rewards: Sequence[Any], objective: Any):
        self.rewards, self.objective = list(rewards), objective

    @classmethod
    def from_weights(cls, text: str, *, device: str = "cpu", tiny: bool = True) -> RetouchObjective:
        """The objective's rewards on the profile's kind of model: the toy stand-ins on a tiny
        profile, the real weights (or a line saying which are missing) on any other."""
        from promptevo.registry import build_reward, reward_info
        from promptevo.rewards.objective import (
            WeightedObjective,
            parse_weights,
            weighted_objective,
        )

        for kind in parse_weights(text):
            if reward_info(kind).reads_text:
                raise UserError(f"{kind} reads texts; a retouch objective scores images only")
        configs, spec = weighted_objective(text, tiny=tiny, device=device)
        objective = WeightedObjective(**{k: v for k, v in spec.items() if k != "kind"})
        return cls([build_reward(c) for c in configs.values()], objective)

    def spec(self) -> dict[str, Any]:
        return self.objective.spec()

    def scores(self, images, targets: Sequence[str] | None = None) -> list[dict[str, float]]:
        targets = list(targets) if targets is not None else [""] * len(images)
        per_reward = {r.name: r.score(images, targets) for r in self.rewards}
        return [{n: v[i] for n, v in per_reward.items()} for i in range(len(images))]

    def values(self, images, targets: Sequence[str] | None = None) -> list[float]:
        return [self.objective.score(s) for s in self.scores(images, targets)]


# -- the planner ---------------------------------------------------------------------------------

EXAMPLE = json.dumps([{"op": "denoise", "value": 0.5, "reason": "noise sigma 0.03 is high"},
                      {"op": "exposure", "value": 0.8, "reason": "median luminance 0.22 is dark"}])


def _operations_text() -> str:
    return "\n".join(f"- {o['op']} ({o['stage']}, {o['low']:g}..{o['high']:g}): {o['doc']}" for o in ops_table()
                     if not o["op"].startswith(("hue_", "saturation_", "luminance_")) or o["op"].endswith("_red")) + \
        "\n- hue_BAND, saturation_BAND, luminance_BAND (colour-specific, -1..1) for BAND in red, orange, yellow, " \
        "green, aqua, blue, purple, magenta"


def _register_schema() -> None:
    """The planner's structured reply: {"plan": [{op, value, reason}, ...]}, the operation one of
    OPS (a grammar-constrained server cannot invent one); an empty plan is a right answer. Value
    ranges and stage order stay with the plan's own validation, which names the wrong step."""
    from promptevo.llms import schemas

    step = schemas.obj(op={"enum": sorted(OPS)}, value={"type": "number"}, reason={"type": "string", "minLength": 1, "maxLength": 120})
    def salvage(reply: str) -> str:  # the finished steps; a plan cut before its first step stays as it is
        steps = schemas.finished_objects(reply)
        return json.dumps(steps) if steps else reply

    schemas.register("retouch_planner", schemas.obj(plan={"type": "array", "maxItems": 8, "items": step}),
                     lambda d: json.dumps(d["plan"]), min_tokens=320, salvage=salvage)


_register_schema()


def planner_fields(measures: Mapping[str, float]) -> dict[str, Any]:
    """The planner template's fields; `stats` carries the numbers for stand-ins that do not read."""
    return {"measures": "\n".join(f"{k}: {v:g}" for k, v in measures.items()), "operations": _operations_text(),
            "example": EXAMPLE, "stats": dict(measures)}


def plan_with(llm, measures: Sequence[Mapping[str, float]], images=None, *, seed: int = 0, store=None,
              run_id: str | None = None) -> list[tuple[Plan | None, dict[str, Any]]]:
    """One plan per image (or None) with what happened: ok, malformed (the error), failed (the
    request's error). Every request goes in one batch; `images` attach the pictures (vision)."""
    from promptevo.llms.backends import LLMUnavailable
    from promptevo.llms.calls import ask

    try:
        calls = ask(llm, "retouch_planner", [planner_fields(m) for m in measures], role="retouch_planner",
                    store=store, run_id=run_id, seed=seed, temperature=0.0, images=images)
    except LLMUnavailable as exc:
        return [(None, {"status": "failed", "error": str(exc)})] * len(measures)
    out: list[tuple[Plan | None, dict[str, Any]]] = []
    for call in calls:
        meta = {"llm_call_id": call.call_id} if call.call_id is not None else {}
        if not call.completion.ok:
            out.append((None, {"status": "failed", "error": call.completion.error, **meta}))
            continue
        try:
            out.append((parse_reply(call.completion.text), {"status": "ok", "reply": call.completion.text, **meta}))
        except PlanError as exc:
            out.append((None, {"status": "malformed", "error": str(exc), "reply": call.completion.text[:2000], **meta}))
    if store is not None:
        store.set_parses([(c.call_id, "ok" if meta["status"] == "ok" else "fallback") for c, (_, meta) in zip(calls, out)])
    return out


def rule_plan(m: Mapping[str, float]) -> list[dict[str, Any]]:
    """A retoucher's rules of thumb on the measured statistics: the SYNTHETIC planner the offline
    simulated LLM answers with (no language model reads anything here)."""
    steps: list[dict[str, Any]] = []

    def add(op: str, value: float, reason: str) -> None:
        info = OPS[op]
        steps.append({"op": op, "value": round(min(max(value, info.low), info.high), 3), "reason": reason})

    cast = max(abs(m["cast_green_magenta"]), abs(m["cast_blue_yellow"]))
    if cast > 10:
        add("white_balance", min(1.0, cast / 25), f"Lab colour cast {cast:.1f} away from neutral")
    if m["noise_sigma"] > 0.015:
        add("denoise", (m["noise_sigma"] - 0.005) / 0.04, f"noise sigma {m['noise_sigma']:.3f} above 0.01")
        add("sharpen", 0.4, "edges softened by the noise reduction; after it, so the noise is not sharpened too")
    if m["blockiness"] > 1.3:
        add("deblock", min(1.0, m["blockiness"] - 1), f"block edges {m['blockiness']:.2f}x the other steps")
    if m["sharpness"] < 6 and m["noise_sigma"] <= 0.015:
        add("deblur", (6 - m["sharpness"]) / 3, f"Laplacian variance {m['sharpness']:.1f} is low: soft or blurred")
    median = max(m["luminance_median"], 1e-3)
    ev = 2.2 * math.log2(0.45 / median) if not 0.30 <= median <= 0.60 else 0.0
    if ev:
        add("exposure", ev, f"median luminance {median:.2f} is outside 0.30-0.60")
    if m["rms_contrast"] < 0.15 and abs(ev) <= 1.5:
        add("contrast", math.log2(0.22 / max(m["rms_contrast"], 1e-3)), f"RMS contrast {m['rms_contrast']:.2f} is flat")
    if m["colourfulness"] < 0.25 and cast <= 10:
        add("saturation", (0.40 - m["colourfulness"]) / 0.40, f"colourfulness {m['colourfulness']:.2f} is dull")
    return steps


class RulePlanner:
    """An LLM stand-in that answers the planner with `rule_plan` (`--planner rules`)."""

    model_name = "rules"

    def complete(self, requests, *, temperature=None, seed=None):
        from promptevo.registry import Completion

        return [Completion(json.dumps(rule_plan(r.fields["stats"])), self.model_name) for r in requests]


# -- the search ------------------------------------------------------------------------------------


def search(images, score_fn: Callable[[Any, list[int]], Sequence[float]], settings: RetouchSettings,
           start: Plan | None = None, directed: bool = False) -> tuple[Plan, dict[str, Any]]:
    """Optuna's TPE over the values of `start`'s operations (or SEARCH_OPS), every image of the
    set getting the same values. Trials go in batches; the first is `start`'s values (or no
    operation), so the result is never worse on the objective than where it started. Each trial
    pays `edit_cost` per operation moved across its whole range, so among equal scores the
    smaller edit wins (the objective is blind to much of what a photograph should keep). A trial
    whose mean SSIM to the inputs is below the guard is penalised. `directed`: each value stays
    between neutral and the range's end on the start value's side (a detected degradation is
    corrected, never made worse)."""
    import optuna
    import torch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    plan = start if start is not None and start.steps else Plan(tuple(Step(op, OPS[op].neutral) for op in SEARCH_OPS))
    ops = plan.ops()
    def bounds(step: Step) -> tuple[float, float]:
        info = OPS[step.op]
        if not directed:
            return info.low, info.high
        return (info.neutral, info.high) if step.value >= info.neutral else (info.low, info.neutral)

    dists = {s.op: optuna.distributions.FloatDistribution(*bounds(s)) for s in plan.steps}
    sampler = optuna.samplers.TPESampler(seed=settings.seed, n_startup_trials=min(8, settings.trials), multivariate=True)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.enqueue_trial({s.op: s.value for s in plan.steps})
    k = len(images)
    done = 0
    while done < settings.trials:
        trials = [study.ask(dict(dists)) for _ in range(min(settings.batch, settings.trials - done))]
        values = {op: torch.tensor([t.params[op] for t in trials], dtype=images.dtype).repeat_interleave(k)
                  for op in ops}
        batch = apply_steps(images.repeat(len(trials), 1, 1, 1), [(op, values[op].to(images.device)) for op in ops])
        members = list(range(k)) * len(trials)
        objective = torch.tensor(list(score_fn(batch, members)), dtype=torch.float64).reshape(len(trials), k).mean(1)
        guard = ssim_batch(batch, images.repeat(len(trials), 1, 1, 1)).double().reshape(len(trials), k).mean(1)
        for t, o, g in zip(trials, objective.tolist(), guard.tolist()):
            cost = settings.edit_cost * sum(abs(t.params[op] - OPS[op].neutral) / (OPS[op].high - OPS[op].low) for op in ops)
            t.set_user_attr("ssim", g)
            study.tell(t, o - cost - (GUARD_PENALTY if g < settings.min_ssim else 0.0))
        done += len(trials)
    best = study.best_trial
    found = plan.with_values([best.params[op] for op in ops])
    kept = Plan(tuple(s for s in found.steps if abs(s.value - OPS[s.op].neutral) > 1e-3))  # drop no-ops
    return kept, {"trials": done, "best_value": best.value, "best_ssim": best.user_attrs["ssim"]}


def _search_reason(plan: Plan, planned: bool) -> Plan:
    why = "value refined by the search" if planned else "chosen by the search (no plan)"
    return Plan(tuple(Step(s.op, s.value, f"{s.reason}; {why}" if s.reason else why) for s in plan.steps))


def _mean(measures: Sequence[Mapping[str, float]]) -> dict[str, float]:
    return {key: round(sum(m[key] for m in measures) / len(measures), 4) for key in measures[0]}


def complete_plan(images, planned: tuple[Plan | None, dict[str, Any]], score_fn, settings: RetouchSettings) -> tuple[Any, Outcome]:
    """From the planner's answer to the retouched set: the mode's plan or search, then the guard."""
    import torch

    plan_in, planner = planned
    if plan_in is not None:
        plan_in = sort_by_stage(plan_in.steps)
    trials = 0
    members = list(range(len(images)))
    before_v = float(torch.tensor(list(score_fn(images, members)), dtype=torch.float64).mean())
    if settings.mode == "detect" and (plan_in is None or not plan_in.steps):  # nothing to act on: untouched
        stats = _mean(describe(images))
        return images, Outcome(Plan(), "nothing detected", planner, before_v, before_v, 1.0, 0, stats, stats)
    if settings.mode == "planner" and plan_in is not None:
        plan, source = plan_in, "planner"
    else:
        found, info = search(images, score_fn, settings, start=plan_in, directed=settings.mode == "detect")
        source = settings.mode if plan_in is not None or settings.mode == "search" else "fallback-search"
        plan, trials = _search_reason(found, plan_in is not None), info["trials"]
    after = apply_steps(images, plan.pairs()) if plan.steps else images
    guard = float(ssim_batch(after, images).mean()) if plan.steps else 1.0
    if guard < settings.min_ssim:
        planner = {**planner, "guard": f"SSIM to the input {guard:.3f} is below {settings.min_ssim:g}: not applied"}
        plan, source, after, guard = Plan(), "guard", images, 1.0
    after_v = float(torch.tensor(list(score_fn(after, members)), dtype=torch.float64).mean()) if plan.steps else before_v
    if after_v < before_v:  # never apply what the objective itself scores below the untouched image
        planner = {**planner, "objective_guard": f"objective {after_v:.4g} after is below {before_v:.4g} before: not applied"}
        plan, source, after, guard, after_v = Plan(), "objective guard", images, 1.0, before_v
    outcome = Outcome(plan, source, planner, before_v, after_v, guard, trials, _mean(describe(images)), _mean(describe(after)))
    return after, outcome


def detection_plan(stats: Mapping[str, float]) -> tuple[Plan, dict[str, Any]]:
    """The detect mode's plan: one step per degradation detected with confidence, its value from
    the statistic; every finding (acted on or not) goes to the sidecar."""
    from promptevo.retouch.detect import acted, detect

    findings = detect(stats)
    steps = [Step(f.op, round(min(max(f.value, OPS[f.op].low), OPS[f.op].high), 3),
                  f"{f.degradation} detected (confidence {f.confidence:.2f}): {f.evidence}") for f in acted(findings)]
    meta = {"status": "ok" if steps else "nothing detected", "detected": [f.to_dict() for f in findings], "statistics": dict(stats)}
    return sort_by_stage(steps), meta


def _planned(llm, measures, images, settings: RetouchSettings, **log) -> list[tuple[Plan | None, dict[str, Any]]]:
    if settings.mode == "detect":
        from promptevo.retouch.detect import statistics

        return [detection_plan(statistics(im[None])[0]) for im in images]  # one image at a time: sizes differ
    if settings.mode == "search":
        return [(None, {"status": "skipped"})] * len(measures)
    if llm is None:
        raise UserError(f"--mode {settings.mode} needs an LLM")
    return plan_with(llm, measures, images if settings.vision else None, seed=settings.seed, **log)


def retouch_set(images, llm, score_fn: Callable[[Any, list[int]], Sequence[float]],
                settings: RetouchSettings, **log) -> tuple[Any, Outcome]:
    """One plan for a set of images ([K, 3, H, W], one size), planned from their mean statistics
    and refined on all of them (`score_fn(batch, members)`: the objective of each image, where
    `members[i]` says which of the set batch[i] is). Objective and SSIM are means over the set.
    `log`: store and run_id, to log the planner's call with the run's."""
    settings.validate()
    planned: tuple[Plan | None, dict[str, Any]]
    if settings.mode == "detect":
        from promptevo.retouch.detect import statistics

        planned = detection_plan(_mean(statistics(images)))
    else:
        planned = _planned(llm, [_mean(describe(images))], images[:1], settings, **log)[0]
    return complete_plan(images, planned, score_fn, settings)


def retouch_images(images: Sequence[Any], llm, objective: RetouchObjective, settings: RetouchSettings,
                   on_done: Callable[[int, Any, Outcome], None] | None = None) -> list[tuple[Any, Outcome]]:
    """Each image ([3, H, W]) its own plan; the LLM plans every image in one batch first."""
    settings.validate()
    plans = _planned(llm, [describe(im[None].float())[0] for im in images], list(images), settings)
    results = []
    for i, image in enumerate(images):
        after, outcome = complete_plan(image[None].float(), plans[i], lambda batch, members: objective.values(batch), settings)
        results.append((after[0], outcome))
        if on_done:
            on_done(i, *results[-1])
    return results
