"""The `promptevo` command. Stage commands (render, score, rewrite) run one model each; the
optimisation commands live in cli.optimize and cli.runs."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Column, Table

from promptevo.cli.common import (
    ChannelsLastOpt,
    CompileOpt,
    DeviceOpt,
    HPSCheckpointOpt,
    JsonOpt,
    LLMBaseURLOpt,
    LLMModelOpt,
    ObjectiveOpt,
    ProfileOpt,
    RenderModelOpt,
    TinyVaeOpt,
    build_profile,
    err,
    new_app,
    out,
    print_json,
)
from promptevo.config import PROFILES
from promptevo.errors import UserError
from promptevo.promptdb.prompt_io import check_prompts

app = new_app(
    "Evolve the instructions an LLM uses to rewrite text-to-image prompts, scored by HPS v2.\n\n"
    "Start with `promptevo optimize --profile tiny` (offline, toy models) or see "
    "`promptevo profiles`."
)


@app.command()
def profiles(as_json: JsonOpt = False):
    """List the model profiles and what each needs."""
    from promptevo.registry import reward_name
    if as_json:
        print_json({n: {**p.to_dict(), "description": p.description, "needs": list(p.needs)} for n, p in PROFILES.items()})
        return
    table = Table("profile", "LLM", "renderer", "scorer", "needs")
    for p in PROFILES.values():
        table.add_row(
            p.name,
            f"{p.llm.backend}: {p.llm.model}",
            f"{p.render.model} ({p.render.steps} steps, {p.render.width}x{p.render.height})",
            ", ".join(reward_name(r) for r in p.rewards),
            "\n".join(p.needs),
        )
    out.print(table)


@app.command()
def rewards(as_json: JsonOpt = False):
    """The reward repository: what each reward measures, its scale, what it needs, and whether
    it is installed here. Use the kinds in `optimize --objective` and `--guard`."""
    from promptevo.registry import reward_infos

    rows = [{"kind": r.kind, "measures": r.measures, "scale": r.scale_note, "unit": r.scale,
             "higher_is_better": r.higher_is_better, "needs": r.needs, "installed": r.installed()}
            for r in reward_infos().values()]
    if as_json:
        print_json(rows)
        return
    table = Table("reward", "measures", "scale", "objective unit", "needs", "installed")
    for r in rows:
        table.add_row(str(r["kind"]), str(r["measures"]), str(r["scale"]) + ("" if r["higher_is_better"] else " (lower is better)"),
                      f"{r['unit']:g}", str(r["needs"]), "yes" if r["installed"] else "no")
    out.print(table)


@app.command()
def alignment(
    prompts: Annotated[list[str] | None, typer.Argument(help="Show the stored questions of these prompts, with their answers.")] = None,
    as_json: JsonOpt = False,
):
    """What the alignment rewards (dsg, vqa) have stored: questions per prompt and answers per
    image, counted with how many were parsed as asked; with prompts, their questions."""
    from promptevo.rewards.alignment import AlignmentCache, cache_path

    if not cache_path().exists():
        raise UserError(f"no alignment questions stored yet ({cache_path()}): score with --objective dsg=1 or vqa=1 first")
    cache = AlignmentCache()
    try:
        data = {"cache": str(cache.path), **cache.stats(), "prompts": {p: cache.prompt_questions(p) for p in prompts or []}}
    finally:
        cache.close()
    if as_json:
        print_json(data)
        return
    table = Table("stored", "model", "rows", "parsed as asked", title=f"alignment cache {escape(data['cache'])}")
    for kind in ("questions", "answers"):
        for r in data[kind]:
            table.add_row(kind, escape(r["model"]), str(r["rows"]), f"{r['parsed'] or 0} ({100 * (r['parsed'] or 0) / r['rows']:.0f}%)")
    out.print(table)
    for prompt, rows in data["prompts"].items():
        table = Table("model", "id", "question", "depends on", "answers", "mean P(yes)", title=escape(prompt))
        for q in rows:
            table.add_row(escape(q["model"]), str(q["id"]), escape(q["question"]), ", ".join(map(str, q["depends"])) or "-",
                          str(q["answers"]), "-" if q["mean_p_yes"] is None else f"{q['mean_p_yes']:.2f}")
        out.print(table if rows else f"{escape(prompt)}: no questions stored")


@app.command()
def render(
    prompts: Annotated[list[str], typer.Argument(help="Prompts to render.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for PNGs and their JSON sidecars.")] = Path("images"),
    seed: Annotated[int, typer.Option(help="Seed of the first image; each further image adds 1.")] = 0,
    per_prompt: Annotated[int, typer.Option(min=1, help="Images per prompt.")] = 1,
    profile: ProfileOpt = "tiny",
    device: DeviceOpt = None,
    render_model: RenderModelOpt = None,
    as_json: JsonOpt = False,
):
    """Render prompts to PNG files named by content hash, each with a JSON sidecar holding the
    prompt, seed and render config needed to make it again."""
    from promptevo.hashing import sha256_hex
    from promptevo.images import png_bytes, to_uint8
    from promptevo.registry import build_renderer

    prompts = check_prompts(prompts)
    prof = build_profile(profile, device=device, render_model=render_model)
    with err.status("loading renderer"):
        renderer = build_renderer(prof.render)
    jobs = [(p, seed + i * per_prompt + k) for i, p in enumerate(prompts) for k in range(per_prompt)]
    with err.status(f"rendering {len(jobs)} images"):
        batch = renderer.render([p for p, _ in jobs], [s for _, s in jobs])
    out_dir.mkdir(parents=True, exist_ok=True)
    pixels = to_uint8(batch.images)
    rows = []
    for (prompt, s), img, size in zip(jobs, pixels, batch.batch_sizes):
        data = png_bytes(img)
        name = sha256_hex(data)[:16]
        path = out_dir / f"{name}.png"
        path.write_bytes(data)
        meta = {
            "image": path.name, "prompt": prompt, "seed": s, "batch_size": size,
            "render_config": renderer.config.identity(), "render_config_hash": renderer.config.hash,
        }
        path.with_suffix(".json").write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
        rows.append({"path": str(path), "prompt": prompt, "seed": s})
    if as_json:
        print_json(rows)
    else:
        table = Table("image", "seed", "prompt")
        for r in rows:
            table.add_row(str(r["path"]), str(r["seed"]), str(r["prompt"]))
        out.print(table)


@app.command()
def score(
    images: Annotated[list[Path], typer.Argument(help="Image files (PNG, JPEG, ...).")],
    prompt: Annotated[str | None, typer.Option(help="Prompt to score against; default: each image's JSON sidecar prompt.")] = None,
    reward: Annotated[list[str] | None, typer.Option(help="A reward of the repository (`promptevo rewards`): hps, clip, aesthetic, brisque, ... Repeatable. Default: the profile's scorer (HPS v2).")] = None,
    objective: ObjectiveOpt = None,
    profile: ProfileOpt = "tiny",
    device: DeviceOpt = None,
    hps_checkpoint: HPSCheckpointOpt = None,
    as_json: JsonOpt = False,
):
    """Score images against a prompt with any rewards of the repository (default: HPS v2, x100
    scale as the HPS leaderboard); with --objective, also the weighted objective of each image.
    --json gives every reward's value per image."""
    from PIL import Image, UnidentifiedImageError

    from promptevo.config import TINY
    from promptevo.images import pil_to_tensor
    from promptevo.registry import build_objective, build_reward, reward_info, reward_name
    from promptevo.rewards.objective import parse_weights, weighted_objective

    if reward is not None and objective is not None:
        raise UserError("give --reward or --objective, not both (an objective names its rewards)")
    targets: list[str] = []
    pil: list[Any] = []
    for path in images:
        if not path.is_file():
            raise UserError(f"image {path} does not exist")
        target = prompt
        if target is None:
            sidecar = path.with_suffix(".json")
            try:
                target = json.loads(sidecar.read_text(encoding="utf-8"))["prompt"]
            except (OSError, ValueError, KeyError, TypeError):
                raise UserError(f"no --prompt given and {sidecar} has no prompt") from None
        try:
            with Image.open(path) as im:
                pil.append(im.convert("RGB"))
        except (UnidentifiedImageError, OSError):
            raise UserError(f"{path} is not an image") from None
        targets.append(target)
    prof = build_profile(profile, device=device, hps_checkpoint=hps_checkpoint)
    text = objective if objective is not None else ",".join(f"{k}=1" for k in dict.fromkeys(reward or [prof.scorer.kind]))
    kinds = list(parse_weights(text))
    judged = [k for k in kinds if reward_info(k).judged]
    if judged:
        raise UserError(f"{', '.join(judged)} comes from judgements of a run's images (`promptevo serve`); it cannot score image files")
    configs, spec = weighted_objective(text, scored={prof.scorer.kind: reward_name(prof.scorer)} if prof.scorer.kind in kinds else {},
                                       tiny=prof.scorer.version == TINY, device=prof.scorer.device)
    configs = {prof.scorer.kind: prof.scorer, **configs} if prof.scorer.kind in kinds else configs
    with err.status("loading " + ", ".join(kinds)):
        models = {kind: build_reward(configs[kind]) for kind in kinds}
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, im in enumerate(pil):
        by_size.setdefault(im.size, []).append(i)
    values: dict[str, list[float]] = {kind: [0.0] * len(pil) for kind in kinds}
    for idx in by_size.values():  # one batch per image size, each model once per batch
        batch, batch_targets = pil_to_tensor([pil[i] for i in idx]), [targets[i] for i in idx]
        for kind, model in models.items():
            scored = model.score(batch, batch_targets, texts=batch_targets) if model.uses_text else model.score(batch, batch_targets)
            for i, v in zip(idx, scored):
                values[kind][i] = float(v)
    names = {kind: models[kind].name for kind in kinds}
    scorer = build_objective(spec) if objective is not None else None
    rows = []
    for i, (path, target) in enumerate(zip(images, targets)):
        row: dict[str, Any] = {"image": str(path), "prompt": target, "scores": {names[k]: values[k][i] for k in kinds}}
        if len(kinds) == 1:  # the one-reward shape scripts already read
            row.update(scorer=names[kinds[0]], score=values[kinds[0]][i])
        if scorer is not None:
            row["objective"] = scorer.score(row["scores"])
        rows.append(row)
    if as_json:
        print_json(rows)
        return
    columns = [*kinds, *(["objective"] if scorer is not None else [])]
    table = Table("image", *columns, Column("prompt", overflow="fold"))
    for r in rows:
        cells = [f"{r['scores'][names[k]]:.3f}" for k in kinds] + ([f"{r['objective']:+.3f}"] if scorer is not None else [])
        table.add_row(escape(r["image"]), *cells, escape(r["prompt"]))
    out.print(table)


@app.command()
def rewrite(
    prompts: Annotated[list[str], typer.Argument(help="Naive prompts to rewrite.")],
    instruction: Annotated[str | None, typer.Option(help="Instruction for the LLM (default: promptevo's seed instruction).")] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed (local models).")] = 0,
    profile: ProfileOpt = "tiny",
    device: DeviceOpt = None,
    llm_model: LLMModelOpt = None,
    llm_base_url: LLMBaseURLOpt = None,
    db: Annotated[Path | None, typer.Option("--db", help="Also log the LLM calls to this database.")] = None,
    as_json: JsonOpt = False,
):
    """Rewrite prompts with the LLM under an instruction."""
    from promptevo.llms.backends import close_llm
    from promptevo.llms.templates import DEFAULT_INSTRUCTION
    from promptevo.optimise.generator import rewrite as do_rewrite
    from promptevo.registry import build_llm

    prompts = check_prompts(prompts)
    prof = build_profile(profile, device=device, llm_model=llm_model, llm_base_url=llm_base_url)
    with err.status("loading LLM"):
        llm = build_llm(prof.llm)
    from promptevo.storage.store import Store

    store = Store(db) if db else None
    try:
        with err.status(f"rewriting {len(prompts)} prompts"):
            results = do_rewrite(llm, instruction or DEFAULT_INSTRUCTION, prompts, seed=seed, store=store)
    finally:
        close_llm(llm)
        if store:
            store.close()
    rows = [
        {"prompt": r.prompt, "rewrite": r.text, "handling": r.handling, "model": r.completion.model, "error": r.completion.error}
        for r in results
    ]
    if as_json:
        print_json(rows)
    else:
        table = Table("prompt", "rewrite")
        for r in rows:
            table.add_row(r["prompt"], r["rewrite"])
        out.print(table)


@app.command()
def bench(
    profile: ProfileOpt = "tiny",
    device: DeviceOpt = None,
    render_model: RenderModelOpt = None,
    hps_checkpoint: HPSCheckpointOpt = None,
    channels_last: ChannelsLastOpt = False,
    compile_: CompileOpt = False,
    tiny_vae: TinyVaeOpt = None,
    faithful: Annotated[str | None, typer.Option(help="GPU: random-weight sd-turbo, sdxl-turbo, flux-schnell or sd35-turbo plus HPS ViT-H-14 built from the published configs (no download; built once into the cache; FLUX is 34 GB in bf16).")] = None,
    images: Annotated[int, typer.Option(min=2, help="Images for the batched measurements.")] = 24,
    naive_images: Annotated[int, typer.Option(min=1, help="Images for the naive (one at a time) measurements.")] = 6,
    rounds: Annotated[int, typer.Option(min=1, help="Optimisation rounds for the whole-round measurement.")] = 2,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the results file.")] = Path("benchmarks/results"),
    as_json: JsonOpt = False,
):
    """Measure images/s for rendering, scoring and whole rounds, promptevo's way and the naive
    way (one pipeline call per image, PNG round trip, checkpoint reloaded per score), and print
    the ratios. Results go to OUT/PROFILE-DEVICE.json."""
    from promptevo.lab.bench import environment, run_bench, save_results
    from promptevo.registry import build_renderer, build_reward

    if naive_images > images:
        raise UserError("--naive-images cannot exceed --images")
    if faithful:
        from promptevo.renderers.faithful import FAITHFUL, faithful_profile

        if faithful not in FAITHFUL:
            raise UserError(f"--faithful takes one of {', '.join(FAITHFUL)}")
        with err.status(f"building random-weight {faithful} (first time only)"):
            built = faithful_profile(faithful, device or "auto")
        prof = built.with_overrides(channels_last=channels_last, compile=compile_, tiny_vae=tiny_vae)
    else:
        prof = build_profile(profile, device=device, render_model=render_model, hps_checkpoint=hps_checkpoint,
                             channels_last=channels_last, compile=compile_, tiny_vae=tiny_vae)
    with err.status("loading renderer and scorer"):
        renderer, scorer = build_renderer(prof.render), build_reward(prof.scorer)
    with err.status("benchmarking") as status:
        result = run_bench(renderer, scorer, profile=prof, loader=build_reward, images=images, naive_images=naive_images,
                           rounds=rounds, progress=lambda s: status.update(f"benchmarking: {s}"))
    data = {"profile": prof.name, "environment": environment(renderer, scorer), **result}
    path = save_results(data, out_dir)
    if as_json:
        print_json({**data, "results_file": str(path)})
        return
    table = Table("measurement", "promptevo images/s", "naive images/s", "ratio")
    r = result
    table.add_row("render", f"{r['render_batched']['images_per_s']:.2f} (batch {r['render_batched']['batch']})",
                  f"{r['render_per_image']['images_per_s']:.2f} (batch 1)", f"{r['ratios']['render_batched_vs_per_image']:.2f}x")
    table.add_row("score", f"{r['score_batched']['images_per_s']:.2f}", f"{r['score_reload_per_image']['images_per_s']:.2f} (reload per image)",
                  f"{r['ratios']['score_batched_vs_reload']:.2f}x")
    table.add_row("whole round", f"{r['round']['images_per_s']:.2f}", f"{r['round_naive']['images_per_s']:.2f}",
                  f"{r['ratios']['round_vs_naive_round']:.2f}x")
    out.print(table)
    rd = r["round"]
    out.print(f"round time {rd['seconds']:.2f} s: render {rd['render_s']:.2f} s, score {rd['score_s']:.2f} s, "
              f"LLM (scripted) {rd['llm_s']:.3f} s, promptevo overhead {100 * rd['overhead_fraction']:.1f}%")
    t = r["tflops"]
    peak = f" of {t['device_peak']} peak" if t["device_peak"] else ""
    out.print(f"achieved: render {t['render']:.3f} TFLOP/s, score {t['score']:.3f} TFLOP/s{peak}")
    err.print(f"results written to {path}")


experiment_app = new_app("Run ablation experiments from TOML configs (see experiments/README.md).")


@experiment_app.command("run")
def experiment_run(
    config: Annotated[Path, typer.Argument(help="Experiment config (TOML), e.g. experiments/selector.toml.")],
    repeats: Annotated[int | None, typer.Option(help="Override the config's repeats (>= 2).")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Results folder (default: experiments/results/NAME next to the config).")] = None,
    as_json: JsonOpt = False,
):
    """Run every arm for several seeds (each run in its own database; finished runs are skipped)
    and write results.md, results.csv, heldout.svg and curves.svg. A config with kind = "retouch"
    runs the retouch benchmark instead (results.md, results.csv, summary.json, contact.jpg)."""
    from promptevo.lab.experiment import run_experiment

    if _experiment_kind(config) == "retouch":
        return _retouch_benchmark(config, out_dir, as_json)

    with err.status("experiment") as status:
        results = run_experiment(config, out=out_dir, repeats=repeats, progress=lambda s: status.update(f"experiment: {s}"))
    if as_json:
        print_json(results)
        return
    table = Table("arm", "runs", "held-out gain", "95% CI", "diff vs " + results["reference_arm"], "95% CI of diff",
                  title=f"{results['name']} ({'SYNTHETIC benchmark' if results['synthetic'] else results['models']})")
    for r in results["rows"]:
        has = "diff_vs_reference" in r
        table.add_row(r["arm"], str(r["runs"]), f"{r['heldout_gain']:+.3f}", f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]",
                      f"{r['diff_vs_reference']:+.3f}" if has else "",
                      (f"[{r['diff_ci_low']:+.3f}, {r['diff_ci_high']:+.3f}]" + (" *" if r["diff_excludes_zero"] else "")) if has else "")
    out.print(table)
    err.print(f"{results['runs_done']} runs done, {results['runs_skipped']} already finished; results in "
              f"{out_dir or config.parent / 'results' / results['name']}")


def _experiment_kind(config: Path) -> str:
    import tomllib

    try:
        return str(tomllib.loads(config.read_text(encoding="utf-8")).get("kind", "optimize"))
    except (OSError, tomllib.TOMLDecodeError):
        return "optimize"  # the experiment runner says what is wrong with it


def _retouch_benchmark(config: Path, out_dir: Path | None, as_json: bool) -> None:
    from promptevo.lab.retouch_bench import run_benchmark

    with err.status("retouch benchmark") as status:
        summary = run_benchmark(config, out=out_dir, progress=lambda s: status.update(f"retouch benchmark: {s}"))
    if as_json:
        print_json(summary)
        return
    table = Table("arm", "PSNR (dB)", "SSIM", "PSNR vs none (95% CI)", "SSIM vs none (95% CI)",
                  title=f"{summary['name']}: {summary['images']} degraded photographs, full reference")
    for r in summary["table"]:
        p, s, dp, ds = r["psnr"], r["ssim"], r["psnr_vs_none"], r["ssim_vs_none"]
        table.add_row(r["arm"], f"{p['mean']:.2f}", f"{s['mean']:.3f}", f"{dp['mean']:+.2f} [{dp['ci_low']:+.2f}, {dp['ci_high']:+.2f}]",
                      f"{ds['mean']:+.3f} [{ds['ci_low']:+.3f}, {ds['ci_high']:+.3f}]")
    out.print(table)
    err.print(f"{summary['seconds']:.0f} s; results in {out_dir or config.parent / 'results' / summary['name']}")


def _register_subcommands() -> None:
    from promptevo.cli import db, optimize, retouch, runs, serve

    optimize.register(app)
    runs.register(app)
    db.register(app)
    retouch.register(app)
    serve.register(app)
    app.add_typer(experiment_app, name="experiment")


def main() -> None:
    from promptevo.interrupts import install

    install()
    try:
        _register_subcommands()
    except KeyboardInterrupt:  # before any command ran: nothing to save
        sys.stderr.write("interrupted; finished work is saved\n")
        sys.stderr.flush()
        os._exit(130)  # no command ran, nothing is open
    app()
