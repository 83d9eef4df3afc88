"""Ablation experiments: every arm of a TOML config, repeated with different seeds, each run in
its own database; then a results table (mean, 95% CI, paired difference to the reference arm)
and plots. Finished runs are skipped on a rerun, unfinished ones resumed.

Config (experiments/*.toml):

    name = "selector"
    models = "synthetic"            # the SYNTHETIC benchmark, or a profile: tiny, gpu, paper
    prompts = "../../shared/data/seed-paper/naive_prompts.txt"   # relative to the config file
    prompt_limit = 24
    repeats = 5
    reference_arm = "ucb"
    reference_source = "../../shared/data/seed-paper/lexica_prompts.jsonl"  # for reference_db = true
    [optimize]                      # OptimizeConfig fields shared by every arm
    rounds = 4
    [arms.ucb]
    selector = "ucb"
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from promptevo.errors import UserError
from promptevo.optimise.run_config import OptimizeConfig
from promptevo.optimise.summary import heldout_by_reward, heldout_table, round_rewards
from promptevo.stats import mean_ci
from promptevo.storage.repository import RunRepository
from promptevo.storage.store import Store

_OPT_FIELDS = {f.name for f in fields(OptimizeConfig)} | {"seed_recipes"}


@dataclass
class ExperimentConfig:
    path: Path
    name: str
    description: str
    models: str
    prompts: Path
    prompt_limit: int | None
    repeats: int
    seed: int
    reference_arm: str
    reference_source: Path | None
    optimize: dict[str, Any]
    arms: dict[str, dict[str, Any]] = field(default_factory=dict)
    rewards: tuple[str, ...] = ()  # reward kinds scored beside the profile's own, in every arm

    def arm_config(self, arm: str, repeat: int, reference_db: Path | None, names: dict[str, str] | None = None) -> OptimizeConfig:
        """One run's settings. `objective = "hps=1,clip=0.5"` and `guard = ["clip"]` name reward
        kinds; `names` maps each kind the profile scores to its stored name."""
        merged = {**self.optimize, **self.arms[arm]}
        objective, guard = merged.pop("objective", None), merged.pop("guard", None)
        if objective or guard or merged.get("goal"):
            from promptevo.rewards.objective import (
                parse_guards,
                parse_weights,
                weighted_objective,
            )

            names = names or {}
            text = objective or next(iter(names), "hps")
            missing = [k for k in [*parse_weights(text), *parse_guards(guard or [])] if k not in names]
            if missing:
                raise UserError(f"arm {arm!r} names {', '.join(missing)}, which the experiment does not score; "
                                f"add them to `rewards = [...]`")
            merged["objective"] = weighted_objective(text, guard or [], scored=names)[1]
        if merged.pop("reference_db", False):
            if reference_db is None:
                raise UserError(f"arm {arm!r} sets reference_db but the config has no reference_source")
            merged["reference_db"] = str(reference_db)
        if "seed_recipes" in merged:
            from promptevo.optimise.recipes import resolve

            merged["recipes"] = resolve(merged.pop("seed_recipes"), reference_db=bool(merged.get("reference_db")))
        merged["seed"] = self.seed + 1000 * repeat
        for key in ("initial_instructions", "baselines"):
            if key in merged:
                merged[key] = tuple(merged[key])
        if merged.get("variants"):
            from promptevo.optimise.variants import check_spec, named

            merged["variants"] = tuple(named([check_spec(dict(v), f"{self.path} arm {arm!r}") for v in merged["variants"]]))
        config = OptimizeConfig(**merged)
        config.validate()
        return config


def load_config(path: Path) -> ExperimentConfig:
    from promptevo.config import read_toml

    raw = read_toml(path, "experiment config")
    base = path.parent
    try:
        arms = raw["arms"]
        cfg = ExperimentConfig(
            path=path, name=str(raw.get("name") or path.stem), description=str(raw.get("description", "")),
            models=str(raw.get("models", "synthetic")), prompts=(base / raw["prompts"]).resolve(),
            prompt_limit=raw.get("prompt_limit"), repeats=int(raw.get("repeats", 3)), seed=int(raw.get("seed", 0)),
            reference_arm=str(raw.get("reference_arm") or next(iter(arms))),
            reference_source=(base / raw["reference_source"]).resolve() if raw.get("reference_source") else None,
            optimize=dict(raw.get("optimize", {})), arms={k: dict(v) for k, v in arms.items()},
            rewards=tuple(raw.get("rewards", ())),
        )
    except (KeyError, StopIteration) as exc:
        raise UserError(f"{path}: missing {exc} (an experiment needs prompts and at least one [arms.NAME])") from None
    unknown = [k for part in [cfg.optimize, *cfg.arms.values()] for k in part if k not in _OPT_FIELDS | {"reference_db", "guard"}]
    if unknown:
        raise UserError(f"{path}: unknown setting {unknown[0]!r}; settings are OptimizeConfig fields: {', '.join(sorted(_OPT_FIELDS))}")
    if cfg.reference_arm not in cfg.arms:
        raise UserError(f"{path}: reference_arm {cfg.reference_arm!r} is not one of the arms")
    if cfg.repeats < 2:
        raise UserError(f"{path}: repeats must be >= 2 for confidence intervals")
    return cfg


def experiment_profile(models: str):
    """The profile an experiment's runs are made with: the SYNTHETIC benchmark or a named one."""
    if models == "synthetic":
        from promptevo.lab.synthetic import synthetic_profile

        return synthetic_profile()
    from promptevo.config import get_profile

    return get_profile(models)


def _reference_db(cfg: ExperimentConfig, out: Path, embedder) -> Path | None:
    if cfg.reference_source is None:
        return None
    from promptevo.promptdb.collection import PromptDB

    path = out / "reference.db"
    with Store(path) as store:
        pdb = PromptDB(store)
        if cfg.reference_source.is_dir():
            pdb.import_collection(cfg.reference_source)
        else:
            pdb.import_file(cfg.reference_source, source=cfg.reference_source.name)
        if embedder is not None:
            pdb.ensure_embeddings(embedder)
    return path


def run_experiment(path: Path, *, out: Path | None = None, repeats: int | None = None,
                   progress: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    from promptevo.optimise.optimizer import Optimizer
    from promptevo.optimise.run_config import create_run
    from promptevo.promptdb.prompt_io import read_prompts
    from promptevo.promptdb.references import ReferencePrompts

    cfg = load_config(path)
    if repeats is not None:
        if repeats < 2:
            raise UserError("--repeats must be >= 2 for confidence intervals")
        cfg.repeats = repeats
    out = out or path.parent / "results" / cfg.name
    (out / "runs").mkdir(parents=True, exist_ok=True)
    prompts = read_prompts(cfg.prompts)[: cfg.prompt_limit]
    progress("loading models")
    from promptevo.evaluation.components import build_components

    profile = experiment_profile(cfg.models)
    if cfg.rewards:
        import dataclasses

        from promptevo.config import TINY
        from promptevo.registry import reward_info

        tiny = profile.scorer.version == TINY
        profile = dataclasses.replace(profile, extra_rewards=tuple(
            reward_info(k).config(tiny=tiny, device=profile.scorer.device) for k in cfg.rewards))
    from promptevo.registry import reward_name

    names = {c.kind: reward_name(c) for c in profile.rewards}
    components = build_components(profile)
    embedder = None
    if cfg.models == "synthetic":
        from promptevo.lab.synthetic import shared_embedder

        embedder = shared_embedder()
    reference_db = _reference_db(cfg, out, embedder)
    refs = ReferencePrompts(reference_db, embedder=embedder) if reference_db else None
    done = skipped = 0
    for arm in cfg.arms:
        for rep in range(cfg.repeats):
            config = cfg.arm_config(arm, rep, reference_db, names)
            db = out / "runs" / f"{arm}-r{rep}.db"
            with Store(db) as store:
                run = RunRepository(store).first_run()
                if run and run["status"] == "finished":
                    skipped += 1
                    continue
                run_id = run["id"] if run else create_run(store, profile, config, prompts)
                progress(f"{arm} repeat {rep + 1}/{cfg.repeats}")
                if refs is not None:
                    refs.set_k(config.reference_k)
                Optimizer(store, run_id, llm=components.llm, evaluator=components.evaluator,
                          references=refs if config.reference_db else None).run_all()
                done += 1
    results = summarise(cfg, out)
    results.update(runs_done=done, runs_skipped=skipped)
    write_results(cfg, out, results)
    return results


def _run_metrics(db: Path) -> dict[str, Any]:
    with Store(db, readonly=True) as store:
        repo = RunRepository(store)
        run = repo.first_run()
        assert run is not None, f"{db} holds no run"
        rounds = repo.run_config(run["id"])["optimize"]["rounds"]
        table = {row["arm"]: row for row in heldout_table(repo, run["id"])}
        rewards = round_rewards(repo, run["id"])
        by_reward = {name: {row["arm"]: row for row in rows} for name, rows in heldout_by_reward(repo, run["id"]).items()}
        budget = repo.budget(run["id"])
    gains = {arm: row["diff_vs_naive"]["mean"] for arm, row in table.items() if row["diff_vs_naive"]}
    # best arm's mean gain over naive after each round (statistics from finished rounds only)
    curve: list[Any] = []
    per_arm: dict[str, Any] = {}
    for r in range(1, rounds + 1):
        for row in rewards:
            if row["round"] == r:
                per_arm.setdefault(row["arm"], []).append(row["reward"])
        curve.append(max((sum(v) / len(v) for v in per_arm.values()), default=float("nan")))
    reward_gains = {name: rows["best"]["diff_vs_naive"]["mean"] for name, rows in by_reward.items()
                    if rows.get("best", {}).get("diff_vs_naive")}
    return {"gains": gains, "curve": curve, "reward_gains": reward_gains, "budget": budget}


def _routing_rows(metrics: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per arm whose runs routed prompts: the routed held-out gain, the best single arm's, and
    routed minus best paired within each run (the same prompts and seeds), CI over repeats."""
    rows = []
    for arm, ms in metrics.items():
        pairs = [(m["gains"]["routed"], m["gains"]["best"]) for m in ms if "routed" in m["gains"] and "best" in m["gains"]]
        if len(pairs) < 2:
            continue
        routed, best = mean_ci([a for a, _ in pairs]), mean_ci([b for _, b in pairs])
        d = mean_ci([a - b for a, b in pairs])
        rows.append({"arm": arm, "runs": len(pairs), "routed": routed.mean, "routed_low": routed.low, "routed_high": routed.high,
                     "best": best.mean, "best_low": best.low, "best_high": best.high,
                     "diff": d.mean, "diff_low": d.low, "diff_high": d.high, "diff_excludes_zero": d.excludes_zero()})
    return rows


def _recipe_rows(metrics: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per arm: its answer minus the fixed style suffix, and minus the best of its own seed
    recipes on held-out prompts (the recipe that did best there: the stricter comparison), both
    paired within each run, intervals over repeats."""
    rows = []
    for arm, ms in metrics.items():
        for against, pick in (("suffix baseline", lambda g: g.get("suffix")),
                              ("best seed recipe", lambda g: max((v for k, v in g.items() if k.startswith("recipe:")), default=None))):
            pairs = [(m["gains"]["best"], pick(m["gains"])) for m in ms if "best" in m["gains"] and pick(m["gains"]) is not None]
            if len(pairs) < 2:
                continue
            d = mean_ci([a - b for a, b in pairs])
            rows.append({"arm": arm, "against": against, "runs": len(pairs), "diff": d.mean, "diff_low": d.low,
                         "diff_high": d.high, "diff_excludes_zero": d.excludes_zero()})
    return rows


def summarise(cfg: ExperimentConfig, out: Path) -> dict[str, Any]:
    metrics: dict[str, list[dict[str, Any]]] = {}
    for arm in cfg.arms:
        for rep in range(cfg.repeats):
            db = out / "runs" / f"{arm}-r{rep}.db"
            if db.exists():
                metrics.setdefault(arm, []).append(_run_metrics(db))
    ref = [m["gains"].get("best", float("nan")) for m in metrics.get(cfg.reference_arm, [])]
    rows = []
    for arm, ms in metrics.items():
        best = [m["gains"].get("best", float("nan")) for m in ms]
        ci = mean_ci(best)
        row = {"arm": arm, "runs": len(ms), "heldout_gain": ci.mean, "ci_low": ci.low, "ci_high": ci.high,
               "budget": {k: sum(m["budget"][k] for m in ms) / len(ms) for k in ms[0]["budget"]}}  # mean per run
        if arm != cfg.reference_arm and len(ref) == len(best):
            d = mean_ci([a - b for a, b in zip(best, ref)])  # paired by repeat: same seed, prompts and split
            row.update(diff_vs_reference=d.mean, diff_ci_low=d.low, diff_ci_high=d.high, diff_excludes_zero=d.excludes_zero())
        rows.append(row)
    baselines = []
    for name in ("initial", "refine", "suffix", "reference"):
        values = [m["gains"][name] for m in metrics.get(cfg.reference_arm, []) if name in m["gains"]]
        if len(values) >= 2:
            ci = mean_ci(values)
            diff = mean_ci([a - b for a, b in zip(values, ref)]) if len(values) == len(ref) else None
            baselines.append({"arm": f"baseline: {name}", "runs": len(values), "heldout_gain": ci.mean, "ci_low": ci.low,
                              "ci_high": ci.high, **({"diff_vs_reference": diff.mean, "diff_ci_low": diff.low, "diff_ci_high": diff.high,
                                                      "diff_excludes_zero": diff.excludes_zero()} if diff else {})})
    curves: dict[str, Any] = {}
    for arm, ms in metrics.items():
        n = min(len(m["curve"]) for m in ms)
        curves[arm] = []
        for r in range(n):
            vals = [m["curve"][r] for m in ms if math.isfinite(m["curve"][r])]
            ci = mean_ci(vals)
            curves[arm].append((r + 1, ci.mean, ci.low, ci.high))
    per_reward = []  # every reward the runs scored: the best instruction's held-out gain on it
    names = list(dict.fromkeys(n for ms in metrics.values() for m in ms for n in m.get("reward_gains", {})))
    for name in names if len(names) > 1 else []:
        ref_r = [m["reward_gains"].get(name, float("nan")) for m in metrics.get(cfg.reference_arm, [])]
        for arm, ms in metrics.items():
            vals = [m["reward_gains"].get(name, float("nan")) for m in ms]
            ci = mean_ci(vals)
            row = {"reward": name, "arm": arm, "runs": len(vals), "heldout_gain": ci.mean, "ci_low": ci.low, "ci_high": ci.high}
            if arm != cfg.reference_arm and len(vals) == len(ref_r):
                d = mean_ci([a - b for a, b in zip(vals, ref_r)])
                row.update(diff_vs_reference=d.mean, diff_ci_low=d.low, diff_ci_high=d.high, diff_excludes_zero=d.excludes_zero())
            per_reward.append(row)
    return {"name": cfg.name, "models": cfg.models, "repeats": cfg.repeats, "reference_arm": cfg.reference_arm,
            "rows": rows + baselines, "curves": curves, "synthetic": cfg.models == "synthetic", "per_reward": per_reward,
            "routing": _routing_rows(metrics), "recipes": _recipe_rows(metrics)}


def _f(v: Any) -> str:
    return "" if v is None else f"{v:+.3f}" if isinstance(v, float) else str(v)


def write_results(cfg: ExperimentConfig, out: Path, results: dict[str, Any]) -> None:
    from promptevo.reports.plots import band_plot, interval_plot

    unit = "synthetic points (SYNTHETIC benchmark, not HPS)" if results["synthetic"] else "HPS x100"
    cols = ["arm", "runs", "heldout_gain", "ci_low", "ci_high", "diff_vs_reference", "diff_ci_low", "diff_ci_high", "diff_excludes_zero"]
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(results["rows"])
    lines = [f"# {cfg.name}", "", cfg.description, "",
             f"Models: **{cfg.models}**{' (SYNTHETIC benchmark: simulated LLM, hidden-preference scorer)' if results['synthetic'] else ''}. "
             f"{cfg.repeats} repeats per arm (seeds {cfg.seed} + 1000 x repeat). Metric: held-out gain of the best "
             f"instruction over the naive prompt, paired on (prompt, seed), in {unit}. Intervals are 95% Student t "
             f"over repeats; the difference to `{cfg.reference_arm}` is paired by repeat.", "",
             "| arm | runs | held-out gain | 95% CI | diff vs " + cfg.reference_arm + " | 95% CI of diff |", "|---|---:|---:|---|---:|---|"]
    for r in results["rows"]:
        diff = "" if "diff_vs_reference" not in r else f"{r['diff_vs_reference']:+.3f}"
        dci = "" if "diff_vs_reference" not in r else f"[{r['diff_ci_low']:+.3f}, {r['diff_ci_high']:+.3f}]" + (" *" if r["diff_excludes_zero"] else "")
        lines.append(f"| {r['arm']} | {r['runs']} | {r['heldout_gain']:+.3f} | [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] | {diff} | {dci} |")
    if results.get("per_reward"):
        lines += ["", "Every reward the runs scored, on the held-out prompts: the best instruction's gain over the naive "
                  f"prompt in that reward's own units, and the paired difference to `{cfg.reference_arm}`.", "",
                  "| reward | arm | runs | held-out gain | 95% CI | diff vs " + cfg.reference_arm + " | 95% CI of diff |",
                  "|---|---|---:|---:|---|---:|---|"]
        for r in results["per_reward"]:
            diff = "" if "diff_vs_reference" not in r else f"{r['diff_vs_reference']:+.3f}"
            dci = "" if "diff_vs_reference" not in r else f"[{r['diff_ci_low']:+.3f}, {r['diff_ci_high']:+.3f}]" + (" *" if r["diff_excludes_zero"] else "")
            lines.append(f"| {r['reward']} | {r['arm']} | {r['runs']} | {r['heldout_gain']:+.3f} | [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] | {diff} | {dci} |")
    if results.get("routing"):
        lines += ["", "Routing: each held-out prompt drawn with its group's (instruction, variant) from the run's routing "
                  "table, against the best single arm on the same prompts and seeds; the difference is paired within "
                  "each run, the interval is over repeats.", "",
                  "| arm | runs | routed gain | 95% CI | best single arm | 95% CI | routed - best | 95% CI |",
                  "|---|---:|---:|---|---:|---|---:|---|"]
        for r in results["routing"]:
            lines.append(f"| {r['arm']} | {r['runs']} | {r['routed']:+.3f} | [{r['routed_low']:+.3f}, {r['routed_high']:+.3f}] | "
                         f"{r['best']:+.3f} | [{r['best_low']:+.3f}, {r['best_high']:+.3f}] | {r['diff']:+.3f} | "
                         f"[{r['diff_low']:+.3f}, {r['diff_high']:+.3f}]{' *' if r['diff_excludes_zero'] else ''} |")
    if results.get("recipes"):
        lines += ["", "Each arm's answer against the fixed style suffix and against the best of the run's own seed recipes "
                  "on held-out prompts, paired within each run; intervals over repeats.", "",
                  "| arm | against | runs | answer minus it | 95% CI |", "|---|---|---:|---:|---|"]
        for r in results["recipes"]:
            lines.append(f"| {r['arm']} | {r['against']} | {r['runs']} | {r['diff']:+.3f} | "
                         f"[{r['diff_low']:+.3f}, {r['diff_high']:+.3f}]{' *' if r['diff_excludes_zero'] else ''} |")
    budgets = [r for r in results["rows"] if "budget" in r]
    if budgets:
        lines += ["", "Budget per run (mean over repeats): images the optimiser scored to decide (search rounds and "
                  "selection pass), all images scored (the held-out evaluation and the baselines included), LLM calls, "
                  "tokens, wall seconds in rounds. `budget.svg` plots held-out gain against search images.", "",
                  "| arm | search images | all images | LLM calls | tokens | wall s |", "|---|---:|---:|---:|---:|---:|"]
        for r in budgets:
            b = r["budget"]
            lines.append(f"| {r['arm']} | {b['search_images']:.0f} | {b['images']:.0f} | "
                         f"{b['llm_calls']:.0f} | {b['prompt_tokens'] + b['completion_tokens']:.0f} | {b['wall_s']:.1f} |")
    lines += ["", "`*`: the interval excludes zero. Plots: `heldout.svg`, `curves.svg`; runs: `runs/ARM-rN.db`.", ""]
    (out / "results.md").write_text("\n".join(lines), encoding="utf-8")
    (out / "heldout.svg").write_text(interval_plot(
        [{"name": r["arm"], "mean": r["heldout_gain"], "low": r["ci_low"], "high": r["ci_high"]} for r in results["rows"]],
        f"{cfg.name}: held-out gain over naive, 95% CI", unit), encoding="utf-8")
    (out / "curves.svg").write_text(band_plot(results["curves"], f"{cfg.name}: best arm's mean gain by round (95% band)",
                                              f"round ({unit})"), encoding="utf-8")
    if budgets:
        from promptevo.reports.plots import scatter_plot

        floor = min(r["ci_low"] for r in budgets)  # baselines far below every arm would squash the plot
        (out / "budget.svg").write_text(scatter_plot(
            [(r["budget"]["search_images"], r["heldout_gain"], r["arm"], r["ci_low"], r["ci_high"])
             for r in budgets], "images scored by the optimiser (search rounds + selection pass)",
            f"held-out gain ({unit.split(' (')[0]})", width=760, height=380, legend=True,
            hlines=[(r["heldout_gain"], r["arm"]) for r in results["rows"]
                    if "budget" not in r and r["heldout_gain"] >= floor - 1.0]), encoding="utf-8")
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
