"""`promptevo optimize`: a run from the command line, its live progress and its summary (which
`runs resume` and `runs show` print too)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group as RichGroup
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from promptevo.cli.common import (
    AttentionSlicingOpt,
    ChannelsLastOpt,
    CompileOpt,
    CpuOffloadOpt,
    DbOpt,
    DeviceOpt,
    GuardOpt,
    HPSCheckpointOpt,
    JsonOpt,
    LLMBaseURLOpt,
    LLMModelOpt,
    LLMStructuredOpt,
    MaxCostOpt,
    MaxImagesOpt,
    MaxLLMCallsOpt,
    MaxModelsOpt,
    MaxSequenceOpt,
    ObjectiveOpt,
    PriceOpt,
    ProfileOpt,
    RayActorsOpt,
    RayAddressOpt,
    RenderModelOpt,
    SizeOpt,
    TinyVaeOpt,
    WorkersOpt,
    build_profile,
    err,
    out,
    print_json,
)
from promptevo.config import Profile
from promptevo.errors import UserError
from promptevo.optimise import budget
from promptevo.optimise.budget import BudgetReached, Limits
from promptevo.promptdb.prompt_io import check_prompts
from promptevo.storage.store import Store


def _fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None or v != v else f"{v:+.{digits}f}"


def _timing(p) -> str:
    """Where the last round's time went and what is left."""
    if not p.round_s:
        return ""
    left = f"; about {p.eta_s:.0f} s of search rounds and {p.llm_calls_left} LLM calls left" if p.eta_s is not None else ""
    return (f"round took {p.round_s:.1f} s (LLM {p.llm_s:.1f} s, render and score {p.eval_s:.1f} s, "
            f"LLM {100 * p.llm_s / p.round_s:.0f}%){left}")


def _best_line(p) -> str:
    best = p.best
    if not best:
        return "best so far: -"
    mean = f"mean gain {_fmt(best['mean'])}, {best['pulls']} pulls" if best["pulls"] else "not yet compared"
    return f"best so far: #{best['id']} ({mean})"


def _progress_view(p) -> RichGroup:
    table = Table("id", "pulls", "mean gain", "95% CI", "instruction", title=f"round {p.round}/{p.rounds}: {p.stage}")
    for a in p.arms:
        ci = "-" if a["pulls"] < 2 else f"[{a['ci_low']:+.2f}, {a['ci_high']:+.2f}]"
        table.add_row(str(a["id"]), str(a["pulls"]), _fmt(a["mean"]), ci, escape(a["text"][:90]))
    lines = [_best_line(p)] + ([_timing(p)] if p.round_s else [])
    return RichGroup(table, Text("\n".join(lines)))






def _load_models(profile: Profile, workers: str = "local", ray_address: str | None = None, ray_actors: int | None = None,
                 max_models: int = 2):
    from promptevo import interrupts
    from promptevo.evaluation.components import Components, build_components
    from promptevo.registry import build_llm

    if workers not in ("local", "ray"):
        raise UserError(f"--workers is local or ray (got {workers!r})")
    with err.status("loading models (renderer, rewards, LLM)" if workers == "local" else "starting Ray workers and the LLM"):
        if workers == "ray":
            from promptevo.evaluation.evaluator import EvaluatorSpec
            from promptevo.evaluation.ray_workers import RayEvaluator

            evaluator = RayEvaluator(EvaluatorSpec(render=profile.render, rewards=profile.rewards, max_models=max_models),
                                     address=ray_address, actors=ray_actors)
            components = Components(llm=build_llm(profile.llm), evaluator=evaluator)
        else:
            components = build_components(profile, max_models=max_models)
    interrupts.check()  # a Ctrl-C during loading that a library swallowed stops here, before any work
    return components


def _run_loop(store: Store, run_id: str, profile: Profile, as_json: bool, models=None, wait: bool = False) -> None:
    from promptevo.cli.common import working_on
    from promptevo.optimise.optimizer import Optimizer
    from promptevo.storage.lease import RunBusy

    working_on(run_id, store.path)
    components = models or _load_models(profile)

    def log_line(p) -> None:  # stderr is a file or pipe: one line per finished round
        if p.stage == "round finished":
            err.print(f"round {p.round}/{p.rounds} finished; {_best_line(p)}; {_timing(p)}", soft_wrap=True)
        elif p.stage == "held-out evaluation":  # the selection pass has chosen: that is the answer now
            err.print(f"selection pass finished; the run's answer: {_best_line(p).removeprefix('best so far: ')}", soft_wrap=True)

    with Live(console=err, refresh_per_second=4, transient=not err.is_terminal) as live:
        show = (lambda p: live.update(_progress_view(p))) if err.is_terminal else log_line
        opt = Optimizer(store, run_id, llm=components.llm, evaluator=components.evaluator, on_progress=show)
        try:
            summary = opt.run_all(wait=wait)
        except RunBusy:
            raise
        except BudgetReached as exc:  # a clean stop: the summary so far, and how to go on
            from promptevo.optimise.summary import summarize

            err.print(escape(f"run {run_id} stopped at its budget: {exc}. Raise the limit and continue with "
                             f"`promptevo runs resume {run_id} --db {store.path} --max-images N` (or --max-llm-calls, "
                             "--max-cost)"), soft_wrap=True)
            summary = summarize(opt.repo, run_id)
        except UserError as exc:  # the LLM server failed or refused: say how to continue
            opt.repo.event(run_id, "stopped", {"reason": type(exc).__name__, "message": str(exc)})
            raise UserError(f"{exc}\nrun {run_id} stopped; continue with `promptevo runs resume {run_id} --db {store.path}`") from None
        finally:
            from promptevo.llms.backends import close_llm

            close_llm(components.llm)
    _print_summary(summary, as_json)


def _print_summary(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(summary)
        return
    from promptevo.optimise.summary import decision_rows

    for rnd, what, weights, why in decision_rows(summary):
        out.print(escape(f"round {rnd}: objective agent: {what} {weights}" + (f" ({why})" if why else "")))
    by_reward = summary.get("heldout_by_reward") or {}
    if len(by_reward) > 1:
        table = Table("arm", *by_reward, title="held-out gain vs naive, per reward (95% CI)")
        arms = [row["arm"] for row in next(iter(by_reward.values())) if row["arm"] != "naive"]
        for arm in arms:
            cells = []
            for rows in by_reward.values():
                d = next((r["diff_vs_naive"] for r in rows if r["arm"] == arm), None)
                cells.append(f"{_fmt(d['mean'])} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}]" if d else "-")
            table.add_row(arm, *cells)
        out.print(table)
    best = summary["best_instruction"]
    out.print(f"[bold]run[/] {summary['run_id']} ({summary['status']})")
    if best:
        chosen = (f"gain {_fmt(best['selection_gain'])} on the selection pass, " if best.get("selection_gain") is not None else "")
        retired = f"; retired in round {best['retired_round']}, no longer searched" if best.get("retired_round") else ""
        out.print(f"[bold]best instruction[/] #{best['id']} ({chosen}mean gain {_fmt(best['mean_reward'])} over {best['pulls']} search rounds{retired}):")
        out.print(f"  {escape(best['text'])}")
    if summary.get("budget"):
        out.print(escape(budget.describe(summary["budget"])))
    if summary.get("versus_recipes"):
        d = summary["versus_recipes"]
        out.print(f"answer minus the best seed recipe ({escape(d['recipe'])}) on held-out prompts: {_fmt(d['mean'])} "
                  f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] over {d['n']} (prompt, seed) pairs")
    if summary.get("retouch"):
        steps = summary["retouch"]["plan"]
        out.print(f"[bold]retouch plan[/] ({summary['retouch'].get('source', 'given')}, every image, the naive prompt's too):"
                  + ("" if steps else " no operation"))
        for s in steps:
            out.print(escape(f"  {s['op']} {s['value']:+g}" + (f": {s['reason']}" if s.get("reason") else "")))
    if summary.get("variants"):
        _print_variants(summary["variants"])
    for c in summary.get("vision_critiques") or []:
        tokens = (c.get("prompt_tokens") or 0) + (c.get("completion_tokens") or 0)
        out.print(escape(f"round {c['round']}: the critic saw {len(c['images'])} images of #{c['instruction_id']} ({tokens} tokens): "
                         f"shows: {c['shows'] or '-'}; misses: {c['misses'] or '-'}"), soft_wrap=True)
    if summary.get("parse_rates"):
        table = Table("role", "replies", "as asked", "repaired", "fallback", "usable",
                      title="LLM replies per role: in the form asked, repaired by the tolerant parser, or unusable (fallback used)")
        for r in summary["parse_rates"]:
            table.add_row(escape(r["role"]), str(r["calls"]), str(r["ok"]), str(r["repaired"]), str(r["fallback"]),
                          f"{100 * r['parsed']:.0f}%")
        out.print(table)
    if summary.get("judged"):
        _print_judged(summary["judged"])
    if summary["heldout"]:
        from promptevo.rewards.objective import describe

        measured = describe(summary.get("heldout_objective") or summary["objective"])
        table = Table("arm", "instruction", "mean objective", "95% CI", "gain vs naive", "95% CI of gain",
                      title=f"held-out prompts, fresh seeds; objective measured on each image: {escape(measured)}")
        for row in summary["heldout"]:
            d = row["diff_vs_naive"]
            table.add_row(
                row["arm"], str(row["instruction_id"] or "-"), f"{row['score_mean']:.3f}",
                f"[{row['score_ci_low']:.2f}, {row['score_ci_high']:.2f}]",
                _fmt(d["mean"]) if d else "-", f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]" if d else "-",
            )
        out.print(table)
    verdict = summary.get("heldout_verdict")
    if verdict:
        out.print(verdict_line(verdict))


def verdict_line(v: dict[str, Any]) -> str:
    """What the held-out test says of the answer, plainly (`optimize`, `runs show`, `apply`)."""
    ci = f"gain {_fmt(v['gain'])} [{v['ci_low']:+.3f}, {v['ci_high']:+.3f}]"
    if v["verdict"] == "worse":
        instead = "use your prompts as they are (the naive prompt)" if v["use"] == "naive" else f"the {v['use']} baseline beat them: use it"
        return f"[bold yellow]warning:[/] on held-out prompts the answer is WORSE than your plain prompts ({ci}); {instead}"
    if v["verdict"] == "unclear":
        return f"on held-out prompts the answer is not clearly better than your plain prompts ({ci}: the interval includes 0)"
    return f"on held-out prompts the answer beats your plain prompts ({ci})"


def _print_judged(j: dict[str, Any]) -> None:
    """The judgement-based reward, apart from the held-out evidence."""
    phases = ", ".join(f"{n} on {phase} images" for phase, n in j["images_judged_by_phase"].items()) or "none yet"
    table = Table("arm", f"{j['reward']} value", "judgements",
                  title=f"{j['reward']} reward from judgements (an arm's value, not held-out evidence): "
                        f"{j['judgements']} judgements by {escape(', '.join(j['judges']) or '-')}; {phases}")
    for a in j["arms"]:
        table.add_row(escape(str(a["arm"])), f"{a['value']:+.3f}", str(a["judgements"]))
    out.print(table)


def _print_variants(v: dict[str, Any]) -> None:
    weight = f", cost weight {v['cost_weight']:g} per s/image" if v["cost_weight"] else ""
    table = Table("id", "variant", "status", "pulls", "mean gain", "95% CI", "s/image", "gain per GPU-s",
                  title=f"render variants ({v['search']} search{weight}; gains before cost)")
    for r in v["variants"]:
        ci = "-" if r["ci_low"] is None else f"[{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]"
        status = r["status"] if not r["error"] else f"failed: {r['error'][:60]}"
        table.add_row(str(r["id"]), escape(r["name"]), escape(status), str(r["pulls"]), _fmt(r["mean_gain"]), ci,
                      "-" if r["seconds_per_image"] is None else f"{r['seconds_per_image']:.3f}", _fmt(r["gain_per_gpu_s"], 2))
    out.print(table)
    if v["routing"]:
        table = Table("group", "prompts like", "instruction", "variant", "gain there", "gains", title="routing table")
        for r in v["routing"]:
            table.add_row(str(r["group"]), escape("; ".join(r["examples"])), f"#{r['instruction_id']}", escape(r["variant"]),
                          _fmt(r["gain"]), str(r["n"]))
        out.print(table)
    d = v.get("routed_vs_best")
    if d:
        out.print(f"held-out: routed minus the best single arm ({escape(v['best_variant'] or '-')}) "
                  f"{_fmt(d['mean'])} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] over {d['n']} (prompt, seed) pairs")




def limits_from(max_images: int | None, max_llm_calls: int | None, max_cost: float | None, price: list[str] | None) -> Limits:
    from promptevo.optimise.budget import parse_price

    limits = Limits(max_images, max_llm_calls, max_cost, dict(parse_price(p) for p in price or []))
    limits.validate()
    return limits


def _retouch_option(value: str | None):
    if value is None or value == "auto":
        return value
    from promptevo.retouch.plan import load_plan

    if not Path(value).is_file():
        raise UserError(f"--retouch is auto or a plan file; {value} is neither")
    return {"plan": load_plan(Path(value)).to_list()}


def _variant_options(given: list[str] | None, path: Path | None, prof: Profile) -> tuple[dict, ...]:
    """Candidate variants from --variant and --variants, named and checked against the profile
    (a turbo model's limits, say) before any model loads."""
    from promptevo.optimise.variants import (
        load_variants,
        named,
        parse_variant,
        render_of,
    )

    specs = [parse_variant(v) for v in given or []] + (load_variants(path) if path else [])
    if len(specs) == 1:
        err.print("note: one variant is searched like the profile's own settings: give two or more to choose between")
    specs = named(specs)
    for s in specs:
        render_of(prof.render, s)  # raises on settings the model cannot take
    return tuple(specs)


def _with_objective(prof: Profile, objective: str | None, guard) -> tuple[Profile, dict]:
    """The profile with every reward the objective and guards name, and the objective's spec."""
    from promptevo.config import TINY
    from promptevo.registry import reward_name
    from promptevo.rewards.objective import weighted_objective

    configs, spec = weighted_objective(f"{prof.scorer.kind}=1" if objective is None else objective, guard or (),
                                       scored={prof.scorer.kind: reward_name(prof.scorer)},
                                       tiny=prof.scorer.version == TINY, device=prof.scorer.device)
    return dataclasses.replace(prof, extra_rewards=tuple(configs.values())), spec


def optimize(
    prompts: Annotated[list[str] | None, typer.Argument(help="Naive prompts (or use --prompts FILE).")] = None,
    prompts_file: Annotated[Path | None, typer.Option("--prompts", help="txt (one per line), JSON(L), CSV/TSV or Parquet with a prompt, text or caption column (any case).")] = None,
    encoding: Annotated[str, typer.Option(help="Text encoding of the --prompts file, e.g. latin-1.")] = "utf-8",
    db: DbOpt = Path("promptevo.db"),
    rounds: Annotated[int, typer.Option(min=0, help="Search rounds.")] = 3,
    batch_size: Annotated[int, typer.Option(min=1, help="Naive prompts sampled per round (with a Pareto set: the set instead).")] = 3,
    seeds_per_prompt: Annotated[int, typer.Option(min=1, help="Images per (prompt, arm) per round.")] = 1,
    population: Annotated[int, typer.Option(min=1, help="Instructions kept alive (paper: 3).")] = 3,
    arms_per_round: Annotated[int, typer.Option(min=1, help="Instructions evaluated per round.")] = 2,
    optimizer: Annotated[str, typer.Option(help="loop: the seed paper's (fresh prompts each round, UCB, a selection pass); pareto: GEPA-style (every candidate on the same --pareto-set prompts and seeds, Pareto selector, no selection pass; naive images made once).")] = "loop",
    strategy: Annotated[str | None, typer.Option(help="A registered optimiser strategy (how rounds draw prompts and arms and make new instructions): loop, pareto-set, or one a plugin registers. Default: pareto-set with a Pareto set, else loop.")] = None,
    selector: Annotated[str | None, typer.Option(help="ucb, greedy, epsilon-greedy, random, round-robin or pareto (default: ucb; pareto with --optimizer pareto).")] = None,
    ucb_c: Annotated[float, typer.Option(help="UCB exploration constant.")] = 1.0,
    epsilon: Annotated[float, typer.Option(help="Exploration rate of epsilon-greedy.")] = 0.2,
    new_per_gradient: Annotated[int, typer.Option(min=0, help="New instructions per gradient.")] = 2,
    gradient: Annotated[bool, typer.Option(help="Use the textual gradient (--no-gradient: ablation).")] = True,
    parent: Annotated[str, typer.Option(help="Which of the round's instructions the critic edits: weakest (the paper's) or best.")] = "weakest",
    history: Annotated[bool, typer.Option(help="The updater also sees the best and worst instructions so far and which words scored (reward-aware hints).")] = False,
    merge: Annotated[bool, typer.Option(help="Each round, also merge the two instructions that lead the Pareto front into a new one.")] = False,
    pareto_set: Annotated[int | None, typer.Option(min=0, help="Score every candidate on the same N optimisation prompts and seeds (default 8 with --optimizer pareto, else 0: fresh prompts each round).")] = None,
    reference_db: Annotated[Path | None, typer.Option(help="Prompt database (`promptevo db`); its nearest prompts to each weak example guide the gradient.")] = None,
    reference_k: Annotated[int, typer.Option(min=1, help="Reference prompts per example.")] = 3,
    baseline: Annotated[list[str] | None, typer.Option(help="Also evaluate on held-out prompts: refine (a plain 'Refine this prompt.' instruction), suffix (a fixed style suffix), reference (nearest --reference-db prompt). Repeatable.")] = None,
    heldout_fraction: Annotated[float, typer.Option(help="Share of prompts held out for the final comparison.")] = 0.34,
    eval_seeds: Annotated[int, typer.Option(min=1, help="Fresh seeds per held-out prompt.")] = 2,
    instruction: Annotated[list[str] | None, typer.Option(help="Initial instruction(s); default: three built-in ones.")] = None,
    seed_recipes: Annotated[str | None, typer.Option(help="Known recipes added to the first population, comma-separated: suffix (a fixed style suffix, no LLM), refine ('Refine this prompt.'), reference (the nearest --reference-db prompt's style). Each is compared with the answer on held-out prompts.")] = None,
    recipe_file: Annotated[Path | None, typer.Option(help="More recipes, one per line: an instruction, or a template where {prompt} is the user's prompt (applied without the LLM).")] = None,
    critic_vision: Annotated[bool, typer.Option(help="The critic also sees the weak arm's worst and best images of the round (a vision model behind --llm-base-url).")] = False,
    seed: Annotated[int, typer.Option(help="Seed for prompt sampling, image seeds and the split.")] = 0,
    objective: ObjectiveOpt = None,
    guard: GuardOpt = None,
    goal: Annotated[str | None, typer.Option(help="Your objective in words, e.g. 'photorealistic, faithful to the prompt, not oversaturated': an LLM agent sets the rewards' weights from it, the trajectory and your feedback.")] = None,
    agent_every: Annotated[int, typer.Option(help="Search rounds between the agent's weight decisions.")] = 2,
    feedback_file: Annotated[Path | None, typer.Option(help="A text file the agent reads at each decision: write feedback into it while the run goes (or use `runs feedback`).")] = None,
    retouch: Annotated[str | None, typer.Option(help="Retouch every render after it is made: 'auto' (the LLM plans from the first naive renders, optuna refines the values against the objective) or a plan file (`promptevo retouch --plan`). The naive prompt's images get the same plan.")] = None,
    profile: ProfileOpt = "tiny",
    device: DeviceOpt = None,
    llm_model: LLMModelOpt = None,
    llm_base_url: LLMBaseURLOpt = None,
    llm_structured: LLMStructuredOpt = None,
    render_model: RenderModelOpt = None,
    hps_checkpoint: HPSCheckpointOpt = None,
    channels_last: ChannelsLastOpt = False,
    compile_: CompileOpt = False,
    tiny_vae: TinyVaeOpt = None,
    size: SizeOpt = None,
    max_sequence_length: MaxSequenceOpt = None,
    cpu_offload: CpuOffloadOpt = False,
    attention_slicing: AttentionSlicingOpt = False,
    variant: Annotated[list[str] | None, typer.Option(help="A candidate render variant, e.g. steps=2 or model=PATH,steps=4,guidance=5,scheduler=EulerDiscreteScheduler,size=512x512,retouch=PLAN.json,name=fast. Repeatable: instruction and variant are then optimised together and prompts routed by group.")] = None,
    variants_file: Annotated[Path | None, typer.Option("--variants", help="A TOML file of [[variant]] tables (the same settings as --variant).")] = None,
    variant_search: Annotated[str, typer.Option(help="How pairs are searched: factored (a selector for instructions, another for variants) or joint (one selector over every pair).")] = "factored",
    route_groups: Annotated[int, typer.Option(min=1, help="Prompt groups (clusters of sentence embeddings) of the routing table.")] = 3,
    cost_weight: Annotated[float, typer.Option(help="Objective units lost per second a variant takes per image (measured as the run goes).")] = 0.0,
    max_models: MaxModelsOpt = 2,
    workers: WorkersOpt = "local",
    ray_address: RayAddressOpt = None,
    ray_actors: RayActorsOpt = None,
    max_images: MaxImagesOpt = None,
    max_llm_calls: MaxLLMCallsOpt = None,
    max_cost: MaxCostOpt = None,
    price: PriceOpt = None,
    as_json: JsonOpt = False,
):
    """Evolve the rewriting instruction on your prompts and compare it on held-out prompts;
    with --variant, the render settings as well, routed per prompt group."""
    from promptevo.llms.templates import SEED_INSTRUCTIONS
    from promptevo.optimise.run_config import OptimizeConfig, create_run

    given = list(prompts or [])
    if prompts_file:
        from promptevo.promptdb.prompt_io import read_prompt_column

        read, column = read_prompt_column(prompts_file, encoding=encoding)
        given += read
        if column:
            err.print(f"{len(read)} prompts from column {column!r} of {prompts_file}")
    if not given:
        raise UserError("give prompts as arguments or with --prompts FILE")
    given = check_prompts(given)
    if optimizer not in ("loop", "pareto"):
        raise UserError(f"--optimizer is loop or pareto (got {optimizer!r})")
    pareto = optimizer == "pareto"
    config = OptimizeConfig(
        rounds=rounds, batch_size=batch_size, seeds_per_prompt=seeds_per_prompt, population=population,
        arms_per_round=arms_per_round, selector=selector or ("pareto" if pareto else "ucb"), ucb_c=ucb_c, epsilon=epsilon,
        new_per_gradient=new_per_gradient, gradient=gradient, heldout_fraction=heldout_fraction,
        parent=parent, history=history, merge=merge,
        pareto_set=(8 if pareto else 0) if pareto_set is None else pareto_set, select_prompts=0 if pareto else 8,
        strategy=strategy,
        reference_db=str(reference_db) if reference_db else None, reference_k=reference_k,
        baselines=tuple(baseline or ()),
        eval_seeds=eval_seeds, seed=seed, initial_instructions=tuple(instruction) if instruction else SEED_INSTRUCTIONS,
    )
    prof = build_profile(profile, device=device, llm_model=llm_model, llm_base_url=llm_base_url, llm_structured=llm_structured,
                         render_model=render_model, hps_checkpoint=hps_checkpoint,
                         channels_last=channels_last, compile=compile_, tiny_vae=tiny_vae, size=size,
                         max_sequence_length=max_sequence_length, cpu_offload=cpu_offload, attention_slicing=attention_slicing)
    if goal and not objective:  # the agent weighs what the repository has installed
        from promptevo.registry import reward_info

        objective = ",".join(f"{k}=1" for k in (prof.scorer.kind, "clip", "aesthetic", "fidelity")
                             if reward_info(k).installed())
    if objective is not None or guard:
        prof, spec = _with_objective(prof, objective, guard or [])
        config = dataclasses.replace(config, objective=spec)
    config = dataclasses.replace(config, goal=goal, agent_every=agent_every,
                                 feedback_file=str(feedback_file.resolve()) if feedback_file else None,
                                 retouch=_retouch_option(retouch), variants=_variant_options(variant, variants_file, prof),
                                 variant_search=variant_search, route_groups=route_groups, cost_weight=cost_weight)
    if seed_recipes or recipe_file:
        from promptevo.optimise.recipes import resolve

        names = [n.strip() for n in (seed_recipes or "").split(",") if n.strip()]
        config = dataclasses.replace(config, recipes=resolve(names, recipe_file, reference_db=bool(config.reference_db)))
    config = dataclasses.replace(config, critic_vision=critic_vision)
    config.validate()
    limits = limits_from(max_images, max_llm_calls, max_cost, price)
    from promptevo.optimise.budget import first_round_warning

    warning = first_round_warning(config, limits)
    if warning:
        err.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True)
    if db.exists():  # a damaged or read-only database fails here, before minutes of model loading
        Store(db).close()
    else:
        Store.check_can_create(db)
    if config.reference_db:
        from promptevo.promptdb.references import check_reference_db

        check_reference_db(config.reference_db)
    models = _load_models(prof, workers, ray_address, ray_actors, max_models)  # missing weights fail here, before the database is touched
    Store.make_folder(db)
    with Store(db) as store:
        run_id = create_run(store, prof, config, given)
        if limits.any() or limits.prices:
            from promptevo.optimise.budget import set_limits
            from promptevo.storage.repository import RunRepository

            set_limits(RunRepository(store), run_id, limits)
        err.print(f"run [bold]{run_id}[/] in {db} (resume with `promptevo runs resume {run_id} --db {db}`)")
        _run_loop(store, run_id, prof, as_json, models)


def register(app: typer.Typer) -> None:
    app.command()(optimize)
