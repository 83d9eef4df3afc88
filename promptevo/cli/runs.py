"""Commands on stored runs: `runs list|show|resume|feedback|export|report` and `apply`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Column, Table

from promptevo.cli.common import (
    DbOpt,
    GuardOpt,
    JsonOpt,
    MaxCostOpt,
    MaxImagesOpt,
    MaxLLMCallsOpt,
    MaxModelsOpt,
    ObjectiveOpt,
    PriceOpt,
    RayActorsOpt,
    RayAddressOpt,
    WorkersOpt,
    err,
    id_column,
    new_app,
    out,
    print_json,
)
from promptevo.cli.optimize import _fmt, _load_models, _print_summary, _run_loop, limits_from, verdict_line
from promptevo.config import Profile, profile_from_dict
from promptevo.errors import UserError
from promptevo.llms.backends import close_llm
from promptevo.promptdb.prompt_io import check_prompts
from promptevo.storage.store import Store

runs_app = new_app("Inspect, continue, export and report optimisation runs.")


@runs_app.command("list")
def runs_list(db: DbOpt = Path("promptevo.db"), as_json: JsonOpt = False):
    """List runs, newest first: status (running means a live process owns it), search rounds
    done of those planned, and the current stage."""
    from promptevo.storage.lease import status_of
    from promptevo.storage.repository import RunRepository

    with Store(db, readonly=True) as store:
        rows = [{**r, "status": status_of(r)} for r in RunRepository(store).runs()]
    if as_json:
        print_json(rows)
        return
    table = Table(id_column("run", max((len(r["id"]) for r in rows), default=3)), "created", "status", "profile",
                  "rounds done", "stage", Column("best instruction", overflow="fold"))
    for r in rows:
        table.add_row(r["id"], r["created_at"][:19], r["status"], r["profile"], f"{r['rounds_done']}/{r['rounds']}",
                      r["stage"] or "-", escape((r["best"] or "-")[:70]))
    out.print(table)


@runs_app.command("show")
def runs_show(
    run_id: str,
    db: DbOpt = Path("promptevo.db"),
    objective: ObjectiveOpt = None,
    guard: GuardOpt = None,
    as_json: JsonOpt = False,
):
    """A run's instructions with their statistics and its held-out comparison. With --objective
    (and --guard) the finished run is re-ranked from its stored scores, without rendering."""
    from promptevo.human import HUMAN
    from promptevo.optimise.summary import summarize
    from promptevo.registry import build_objective, reward_name
    from promptevo.rewards.objective import parse_guards, parse_weights, weighted_spec
    from promptevo.storage.repository import RunRepository

    with Store(db, readonly=True) as store:
        repo = RunRepository(store)
        chosen = None
        if objective is not None or guard:
            stored = _stored_profile(store, run_id)
            names = {c.kind: reward_name(c) for c in stored.rewards}
            if repo.human_values(run_id) is not None:
                names[HUMAN] = HUMAN
            weights, guards = parse_weights(f"{stored.scorer.kind}=1" if objective is None else objective), parse_guards(guard or [])
            missing = [k for k in list(weights) + list(guards) if k not in names]
            if HUMAN in missing:
                raise UserError(f"run {run_id} has no judgements yet: judge its images in `promptevo serve --db {db}`")
            if missing:
                raise UserError(f"run {run_id} has no scores for {', '.join(missing)}; it stored {', '.join(names)}")
            chosen = build_objective(weighted_spec(weights, guards, names))
        summary = summarize(repo, run_id, chosen)
    if as_json:
        print_json(summary)
        return
    table = Table("id", "origin", "parent", "round", "retired", "pulls", "mean gain", "instruction", title="instructions")
    for i in summary["instructions"]:
        table.add_row(str(i["id"]), i["origin"], str(i["parent_id"] or "-"), str(i["created_round"]),
                      str(i["retired_round"] or "-"), str(i["pulls"]), _fmt(i["mean_reward"]), escape(i["text"][:80]))
    out.print(table)
    _print_summary(summary, False)


def _stored_profile(store: Store, run_id: str) -> Profile:
    from promptevo.storage.repository import RunRepository

    return profile_from_dict(RunRepository(store).run_config(run_id)["profile"])


@runs_app.command("resume")
def runs_resume(
    run_id: str,
    db: DbOpt = Path("promptevo.db"),
    wait: Annotated[bool, typer.Option("--wait", help="If another process is working on the run, wait for it to stop, then continue.")] = False,
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
    """Continue a run that was stopped or killed with the models it was made with (any
    registered kind, experiment runs included); finished work is kept, nothing is repeated.
    A finished run just prints its summary."""
    from promptevo.optimise.summary import summarize
    from promptevo.storage.lease import check_free
    from promptevo.storage.repository import RunRepository

    with Store(db, create=False) as store:
        repo = RunRepository(store)
        if repo.require_run(run_id)["status"] == "finished":
            _print_summary(summarize(repo, run_id), as_json)  # nothing to do: no model loads
            return
        if not wait:
            check_free(repo, run_id)  # refuse before minutes of model loading
        limits = limits_from(max_images, max_llm_calls, max_cost, price)
        if limits.any() or limits.prices:  # raised (or lowered) limits: the stages they allow run
            from promptevo.optimise.budget import set_limits

            set_limits(repo, run_id, limits)
        profile = _stored_profile(store, run_id)
        _run_loop(store, run_id, profile, as_json, _load_models(profile, workers, ray_address, ray_actors, max_models), wait=wait)


@runs_app.command("feedback")
def runs_feedback(
    run_id: str,
    text: Annotated[str, typer.Argument(help="What you think of the images so far, e.g. 'too dark' or 'drifting off the subject'.")],
    db: DbOpt = Path("promptevo.db"),
):
    """Give the objective agent feedback in words; it reads it at its next decision (a run made
    with --goal), and it is stored with the run."""
    from promptevo.llms.parsing import clean_text
    from promptevo.storage.repository import RunRepository

    cleaned = clean_text(text, 2000)
    if not cleaned:
        raise UserError("feedback is empty")
    with Store(db, create=False) as store:
        repo = RunRepository(store)
        config = repo.run_config(run_id)
        repo.event(run_id, "feedback", {"text": cleaned, "source": "runs feedback"})
    if not config["optimize"].get("goal"):
        err.print(f"stored; note that run {run_id} has no --goal, so no agent reads it")
    else:
        err.print("stored; the objective agent reads it at its next decision")


@runs_app.command("export")
def runs_export(run_id: str, db: DbOpt = Path("promptevo.db"), output: Annotated[Path | None, typer.Option("--output", "-o", help="File (default: stdout).")] = None):
    """Everything about a run as one JSON document: config, instructions, gradients, rewrites,
    trials with scores and image paths, and LLM calls."""
    from promptevo.reports.export import export_run

    with Store(db, readonly=True) as store:
        data = export_run(store, run_id)
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
    if output:
        output.write_text(text + "\n", encoding="utf-8")
        err.print(f"wrote {output}")
    else:
        typer.echo(text)


@runs_app.command("report")
def runs_report(run_id: str, db: DbOpt = Path("promptevo.db"), output: Annotated[Path | None, typer.Option("--output", "-o", help="HTML file (default: RUN.html).")] = None):
    """Write one self-contained HTML page: lineage, score curves, image grids, held-out table."""
    from promptevo.reports.html import write_report

    with Store(db, readonly=True) as store:
        report = write_report(store, run_id, output or Path(f"{run_id}.html"))
    if report.missing:
        err.print(f"[yellow]warning:[/] {report.missing} of {report.images} image files are missing from {store.artifacts} "
                  "(shown as placeholders); copy the database together with its -artifacts folder")
    err.print(f"wrote {report.path}")
    typer.echo(str(report.path))


def apply(
    run_id: str,
    prompts: Annotated[list[str], typer.Argument(help="New naive prompts.")],
    db: DbOpt = Path("promptevo.db"),
    seed: Annotated[int, typer.Option(help="Sampling seed (local models).")] = 0,
    as_json: JsonOpt = False,
):
    """Rewrite new prompts with a run's best instruction (and the run's own LLM). A run with
    render variants routes each prompt by its group: its instruction, and the variant to render
    it with."""
    from promptevo.optimise.generator import rewrite
    from promptevo.optimise.summary import summarize
    from promptevo.registry import build_llm
    from promptevo.storage.repository import RunRepository

    prompts = check_prompts(prompts)
    with Store(db, readonly=True) as store:
        summary = summarize(RunRepository(store), run_id)
        prof = _stored_profile(store, run_id)
    best = summary["best_instruction"]
    if best is None:
        raise UserError(f"run {run_id} has no scored instruction yet; resume it first")
    provisional = summary["status"] != "finished"
    if provisional:
        err.print(f"[yellow]run {run_id} is not finished:[/] instruction #{best['id']} is provisional (its best so far); "
                  f"`promptevo runs resume {run_id} --db {db}` finishes it", soft_wrap=True)
    verdict = summary.get("heldout_verdict")
    if verdict and verdict["verdict"] != "better":
        err.print(verdict_line(verdict), soft_wrap=True)
    with Store(db, readonly=True) as store:
        repo = RunRepository(store)
        routes = repo.routes(run_id)
        variants = {v["id"]: v for v in repo.variants(run_id)}
        texts = {i["id"]: i["text"] for i in repo.instructions(run_id)}
    chosen: list[tuple[int, dict[str, Any] | None]] = [(best["id"], None)] * len(prompts)
    if routes:  # each prompt by its nearest group of the run's routing table
        import numpy as np

        from promptevo.embed import shared_embedder
        from promptevo.optimise.routing import assign

        with err.status("routing prompts"):
            groups = assign(shared_embedder().encode(prompts), np.array([r["centroid"] for r in routes]))
        chosen = [(routes[int(g)]["instruction_id"], routes[int(g)]) for g in groups]
    with err.status("loading LLM"):
        llm = build_llm(prof.llm)
    rows: list[dict[str, Any] | None] = [None] * len(prompts)
    try:
        rewrites = {iid: rewrite(llm, texts[iid], [prompts[k] for k, (i, _) in enumerate(chosen) if i == iid], seed=seed)
                    for iid in dict.fromkeys(i for i, _ in chosen)}  # one batch per instruction
    finally:
        close_llm(llm)
    for iid, done in rewrites.items():
        idx = [k for k, (i, _) in enumerate(chosen) if i == iid]
        for k, r in zip(idx, done):
            route = chosen[k][1]
            row: dict[str, Any] = {"prompt": r.prompt, "rewrite": r.text, "instruction_id": iid, "provisional": provisional,
                                   "heldout_verdict": verdict["verdict"] if verdict else None,
                                   "recommended": r.text if not verdict or verdict["use"] != "naive" else r.prompt}
            rows[k] = row
            if route is not None:
                v = variants[route["variant_id"]]
                row.update(group=route["group"], variant=v["name"],
                               render={key: val for key, val in v["spec"].items() if key != "name"})
    if as_json:
        print_json(rows)
    else:
        title = "routed by the run's routing table" if routes else f"instruction #{best['id']}"
        table = Table("prompt", "rewrite", *(("instruction", "variant") if routes else ()), title=title)
        for shown in rows:
            assert shown is not None
            table.add_row(escape(shown["prompt"]), escape(shown["rewrite"]),
                          *((f"#{shown['instruction_id']}", escape(shown["variant"])) if routes else ()))
        out.print(table)


def register(app: typer.Typer) -> None:
    app.command()(apply)
    app.add_typer(runs_app, name="runs")
