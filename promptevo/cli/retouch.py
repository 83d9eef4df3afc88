"""`promptevo retouch`: explainable retouching of photographs (or renders) by a planner and a
search, each result a PNG with a JSON sidecar that says what was done and why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from promptevo.cli.common import (
    DeviceOpt,
    JsonOpt,
    LLMBaseURLOpt,
    LLMModelOpt,
    LLMStructuredOpt,
    ProfileOpt,
    build_profile,
    err,
    out,
    print_json,
    progress_bar,
)
from promptevo.config import TINY
from promptevo.errors import UserError


def retouch(
    images: Annotated[list[Path] | None, typer.Argument(help="Image files (PNG, JPEG, TIFF, ...).", show_default=False)] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Folder for the retouched PNGs and their JSON sidecars.")] = None,
    plan: Annotated[Path | None, typer.Option(help="Replay this plan (JSON list of {op, value, reason}) on every image: no LLM, no search.")] = None,
    mode: Annotated[str, typer.Option(help="planner (the plan as written), search (optuna only, no LLM), planner+search, detect (no LLM: act only on degradations detected with confidence, values refined by the search; a good photograph comes out unchanged; the default, the only arm that beat doing nothing on the retouch benchmark).")] = "detect",
    planner: Annotated[str, typer.Option(help="llm (the profile's LLM, or --llm-model/--llm-base-url) or rules (rules of thumb, no LLM).")] = "llm",
    objective: Annotated[str, typer.Option(help="No-reference objective the search maximises: KIND=WEIGHT,... (see `promptevo rewards`).")] = "brisque=1,piqe=1,exposure=1,contrast=1,colourfulness=1,noise=1",
    trials: Annotated[int, typer.Option(help="Objective evaluations per image in the search.")] = 24,
    min_ssim: Annotated[float, typer.Option(help="Identity guard: the result's SSIM to the input must be at least this.")] = 0.6,
    seed: Annotated[int, typer.Option(help="Seed of the search and the LLM.")] = 0,
    vision: Annotated[bool, typer.Option("--vision", help="Send the image to the LLM too (an OpenAI-compatible vision model).")] = False,
    max_side: Annotated[int, typer.Option(help="Refuse images with a side longer than this.")] = 8192,
    list_ops: Annotated[bool, typer.Option("--list-ops", help="List the operations, their stages and value ranges, and exit.")] = False,
    profile: ProfileOpt = "tiny",
    llm_model: LLMModelOpt = None,
    llm_base_url: LLMBaseURLOpt = None,
    llm_structured: LLMStructuredOpt = None,
    device: DeviceOpt = None,
    as_json: JsonOpt = False,
):
    """Retouch photographs. By default (--mode detect) each degradation (noise, blur, exposure,
    low contrast, desaturation, colour cast) gets a confidence from measured statistics and only
    those detected are treated, their values refined by optuna; a good photograph comes out
    unchanged. With --mode planner+search an LLM reads the statistics and plans operations with
    exact values and reasons. Either way nothing is applied that loses SSIM >= --min-ssim to the
    input or scores below the untouched image on the objective, and the sidecar says what was
    found, done and why. A file that cannot be read gets one line and the batch goes on."""
    from promptevo.retouch.plan import ops_table

    if list_ops:
        rows = ops_table()
        if as_json:
            print_json(rows)
            return
        table = Table("op", "stage", "range", "what the value does")
        for r in rows:
            table.add_row(r["op"], r["stage"], f"{r['low']:g}..{r['high']:g}", r["doc"])
        out.print(table)
        return
    if not images:
        raise UserError("give one or more image files (or --list-ops)")
    if out_dir is None:
        raise UserError("--out DIR is needed: where the retouched images and their sidecars go")
    if planner not in ("llm", "rules"):
        raise UserError(f"--planner is llm or rules (got {planner!r})")
    if max_side < 16:
        raise UserError("--max-side must be at least 16")
    from promptevo.images import ImageRejected, load_rgb, save_png
    from promptevo.retouch.plan import load_plan
    from promptevo.retouch.planner import (
        RetouchObjective,
        RetouchSettings,
        RulePlanner,
        retouch_images,
    )

    settings = RetouchSettings(mode=mode, trials=trials, min_ssim=min_ssim, seed=seed, vision=vision)
    settings.validate()
    replay = load_plan(plan) if plan else None
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file, not a folder")
    prof = build_profile(profile, device=device, llm_model=llm_model, llm_base_url=llm_base_url, llm_structured=llm_structured)
    if vision and prof.llm.backend != "openai":
        raise UserError("--vision needs an OpenAI-compatible vision model (--llm-base-url or --profile gpu)")
    with err.status("loading the objective"):
        scorer = RetouchObjective.from_weights(objective, device=prof.render.device if device is None else device,
                                               tiny=prof.scorer.version == TINY)
    loaded, rows = [], []
    for i, path in enumerate(images):
        try:
            image, note = load_rgb(path, max_side=max_side)
        except ImageRejected as exc:
            err.print(f"[yellow]skipped[/] {escape(str(path))}: {escape(str(exc))}", soft_wrap=True)
            rows.append({"input": str(path), "error": str(exc)})
            continue
        loaded.append((i, path, image, note))
    llm = None
    if replay is None and mode not in ("search", "detect"):
        if planner == "rules":
            llm = RulePlanner()
        else:
            from promptevo.registry import build_llm

            with err.status(f"loading the LLM ({prof.llm.model})"):
                llm = build_llm(prof.llm)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = _replay(replay, loaded, scorer) if replay is not None else None
    with progress_bar("retouching") as update:
        update(0, len(loaded))
        if results is None:
            from promptevo.llms.backends import close_llm

            try:
                results = retouch_images([im for _, _, im, _ in loaded], llm, scorer, settings,
                                         on_done=lambda k, *_: update(k + 1, len(loaded)))
            finally:
                close_llm(llm)
        for (i, path, image, note), (after, outcome) in zip(loaded, results):
            name = f"retouched-{i:04d}"
            save_png(after, out_dir / f"{name}.png")
            sidecar = {"input": str(path), "output": f"{name}.png", "width": int(image.shape[-1]), "height": int(image.shape[-2]),
                       "converted": note, "mode": "replay" if replay is not None else mode,
                       "planner_model": getattr(llm, "model_name", None), "objective": scorer.spec(),
                       "min_ssim": min_ssim, "seed": seed, **outcome.to_dict()}
            (out_dir / f"{name}.json").write_text(json.dumps(sidecar, indent=2, ensure_ascii=False), encoding="utf-8")
            rows.append({"input": str(path), "output": str(out_dir / f"{name}.png"), "source": outcome.source,
                         "steps": len(outcome.plan.steps), "objective_before": outcome.objective_before,
                         "objective_after": outcome.objective_after, "ssim_to_input": outcome.ssim_to_input,
                         "plan": " -> ".join(f"{s.op} {s.value:+g}" for s in outcome.plan.steps) or "(none)"})
    if as_json:
        print_json(rows)
    else:
        table = Table("input", "plan", "source", "objective", "SSIM to input")
        for r in rows:
            if "error" in r:
                table.add_row(escape(r["input"]), f"[yellow]skipped: {escape(r['error'])}[/]", "", "", "")
            else:
                table.add_row(escape(r["input"]), escape(r["plan"]), r["source"],
                              f"{r['objective_before']:.2f} -> {r['objective_after']:.2f}", f"{r['ssim_to_input']:.3f}")
        out.print(table)
    done = sum("error" not in r for r in rows)
    err.print(f"{done} retouched, {len(rows) - done} skipped; images and plans in {escape(str(out_dir))}")
    if done == 0:
        raise typer.Exit(2)


def _replay(plan, loaded, scorer):
    """The plan applied as given (no guard: the user chose it); SSIM and objective reported."""
    from promptevo.retouch.ops import apply_steps
    from promptevo.retouch.planner import Outcome
    from promptevo.rewards.measures import describe, ssim_batch

    results = []
    for _, _, image, _ in loaded:
        x = image[None]
        after = apply_steps(x, plan.pairs())
        before_v, after_v = scorer.values(x)[0], scorer.values(after)[0]
        outcome = Outcome(plan, "replay", {"status": "skipped"}, before_v, after_v, float(ssim_batch(after, x)[0]), 0,
                          describe(x)[0], describe(after)[0])
        results.append((after[0], outcome))
    return results


def register(app: typer.Typer) -> None:
    app.command()(retouch)
