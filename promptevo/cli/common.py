"""What every command shares: the error policy (user mistakes exit 2 without a traceback), the
two consoles (data on stdout, people on stderr), profile options, and input readers."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column
from typer.core import TyperGroup

from promptevo.config import Profile, get_profile
from promptevo.display import visible
from promptevo.errors import UserError


class _Console(Console):
    """A console that shows bidirectional controls as code points (promptevo.display)."""

    def _render_buffer(self, buffer) -> str:
        return visible(super()._render_buffer(buffer))


out = _Console(soft_wrap=True)  # data
err = _Console(stderr=True)  # people: progress, messages
for _console in (out, err):
    if not _console.is_terminal and "COLUMNS" not in os.environ:
        _console.width = 4096  # a file or pipe: keep table rows, ids and commands whole instead of cutting at 80


def id_column(header: str, width: int = 24) -> Column:
    """A table column for ids a user copies into the next command: never cut or wrapped,
    whatever the terminal's width (the other columns give way)."""
    return Column(header, no_wrap=True, min_width=width, overflow="ignore")

_current_run: dict[str, str] = {}  # the run a command works on, for the interrupt message


def working_on(run_id: str, db: os.PathLike | str) -> None:
    _current_run.update(run=run_id, db=str(db))


def log_path() -> Path:
    """Where library warnings and log records go instead of the terminal."""
    from promptevo.model_cache import cache_dir

    return cache_dir() / "logs" / "promptevo.log"


def route_warnings_to_log() -> None:
    """Library warnings (Python's warnings and logging: brisque, optuna, open_clip, Ray's driver
    side) go to the log file, not between promptevo's own lines; promptevo says what matters
    itself. Once per process."""
    import logging
    import logging.handlers

    root = logging.getLogger()
    if any(getattr(h, "_promptevo", False) for h in root.handlers):
        return
    path = log_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.handlers.RotatingFileHandler(path, maxBytes=2_000_000, backupCount=2, encoding="utf-8")
    except OSError:
        handler = logging.NullHandler()  # an unwritable cache: warnings are dropped rather than shown
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler._promptevo = True  # type: ignore[attr-defined]
    root.addHandler(handler)  # with a handler on the root, logging's last resort (stderr) is not used
    logging.captureWarnings(True)


class Group(TyperGroup):
    """Turns UserError anywhere below into a one-line message and exit code 2, and Ctrl-C or
    SIGTERM into one line that says how to continue. Library warnings go to the log file."""

    def invoke(self, ctx):
        from promptevo.interrupts import Terminated

        route_warnings_to_log()

        try:
            return super().invoke(ctx)
        except UserError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt as exc:
            what = "stopped (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
            hint = (f"; continue with `promptevo runs resume {_current_run['run']} --db {_current_run['db']}`"
                    if _current_run else "")
            err.print(f"[yellow]{what}[/]; finished work is saved{escape(hint)}", soft_wrap=True)
            raise typer.Exit(143 if isinstance(exc, Terminated) else 130) from None


def new_app(help: str) -> typer.Typer:
    return typer.Typer(
        cls=Group, help=help, no_args_is_help=True, pretty_exceptions_show_locals=False,
        rich_markup_mode=None, add_completion=False,
    )


ProfileOpt = Annotated[str, typer.Option("--profile", "-p", help="Model bundle: see `promptevo profiles`.", envvar="PROMPTEVO_PROFILE")]
DeviceOpt = Annotated[str | None, typer.Option(help="Device for all models: cpu, cuda, cuda:1, mps (default: the profile's).")]
LLMStructuredOpt = Annotated[bool | None, typer.Option("--llm-structured/--no-llm-structured", help="Send each LLM role's JSON schema as response_format, for servers that constrain their output to it (llama.cpp, OpenAI, vLLM). Default: off (SmolLM2 gets the form right and the content wrong under it: see the README).")]
LLMModelOpt = Annotated[str | None, typer.Option(help="LLM: hub id, local folder or .gguf file (local), or API model name.")]
LLMBaseURLOpt = Annotated[str | None, typer.Option(help="OpenAI-compatible server URL (vLLM, Ollama, llama.cpp); key from OPENAI_API_KEY.", envvar="OPENAI_BASE_URL")]
RenderModelOpt = Annotated[str | None, typer.Option(help="diffusers model: hub id or local folder.")]
HPSCheckpointOpt = Annotated[str | None, typer.Option(help="Local HPS v2/v2.1 checkpoint file.")]
ChannelsLastOpt = Annotated[bool, typer.Option("--channels-last", help="channels_last memory format for the UNet and VAE (GPU speed).")]
CompileOpt = Annotated[bool, typer.Option("--compile", help="torch.compile the UNet (slow first call).")]
TinyVaeOpt = Annotated[str | None, typer.Option(help="Tiny decoder in the search rounds (the full VAE for the selection pass and held-out images): auto (the model's own: TAESD, TAESDXL, TAEF1, TAESD3), a hub id, a folder, or 'tiny'.")]
SizeOpt = Annotated[str | None, typer.Option(help="Image size WxH of every render (default: the profile's; the model's multiple, e.g. 16 for FLUX).")]
MaxSequenceOpt = Annotated[int | None, typer.Option(min=1, help="Long-encoder (T5) tokens FLUX and SD3 read; default: the model's own (FLUX.1-schnell 256).")]
CpuOffloadOpt = Annotated[bool, typer.Option("--cpu-offload", help="Keep each model on the CPU until it runs (a large model on a smaller card; slower).")]
AttentionSlicingOpt = Annotated[bool, typer.Option("--attention-slicing", help="Attention in slices: less GPU memory, slower.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout for scripts.")]


def build_profile(
    name: str, *, device=None, llm_model=None, llm_base_url=None, render_model=None, hps_checkpoint=None,
    channels_last=False, compile=False, tiny_vae=None, llm_structured=None, size=None, max_sequence_length=None,
    cpu_offload=False, attention_slicing=False,
) -> Profile:
    settings: dict[str, Any] = {}
    if size:
        w, _, h = size.lower().partition("x")
        if not (w.isdigit() and h.isdigit() and int(w) >= 8 and int(h) >= 8):
            raise UserError(f"--size is WIDTHxHEIGHT in pixels, e.g. 512x512 (got {size!r})")
        settings.update(width=int(w), height=int(h))
    settings.update({k: v for k, v in (("max_sequence_length", max_sequence_length), ("cpu_offload", cpu_offload),
                                        ("attention_slicing", attention_slicing)) if v})
    return get_profile(name).with_overrides(
        device=device, llm_model=llm_model, llm_base_url=llm_base_url,
        render_model=render_model, hps_checkpoint=hps_checkpoint,
        channels_last=channels_last, compile=compile, tiny_vae=tiny_vae, llm_structured=llm_structured,
        render_settings=settings,
    )


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


@contextlib.contextmanager
def progress_bar(description: str) -> Iterator:
    """A callback (done, total) drawing a bar on stderr; silent when stderr is not a terminal."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


# options shared by the commands that make and read runs
DbOpt = Annotated[Path, typer.Option("--db", help="SQLite database of runs.", envvar="PROMPTEVO_DB")]
WorkersOpt = Annotated[str, typer.Option(help="Where images are rendered and scored: local (this process) or ray (one Ray actor per GPU; this process stays the only writer).")]
RayAddressOpt = Annotated[str | None, typer.Option(help="With --workers ray: a running cluster (auto, or ray://HOST:PORT); default: start a local Ray.")]
RayActorsOpt = Annotated[int | None, typer.Option(min=1, help="With --workers ray: actors to start (default: one per GPU in the cluster, or 1).")]
MaxModelsOpt = Annotated[int, typer.Option(min=1, help="Render models kept loaded at once (variants of one model share it); the least recently used is released first.")]
ObjectiveOpt = Annotated[str | None, typer.Option(help="Weighted rewards from `promptevo rewards`, e.g. hps=1,clip=0.5,aesthetic=0.2; each reward's gain is divided by its scale. Default: HPS alone.")]
GuardOpt = Annotated[list[str] | None, typer.Option(help="Reward that must not drop below the naive prompt's by more than a tolerance (KIND or KIND:TOLERANCE, default one scale unit); a rewrite that does is penalised. Repeatable.")]

MaxImagesOpt = Annotated[int | None, typer.Option(min=0, help="Stop before a stage that would take the run past this many scored images (raise it on `runs resume`).")]
MaxLLMCallsOpt = Annotated[int | None, typer.Option(min=0, help="Stop before a stage that would take the run past this many LLM calls.")]
MaxCostOpt = Annotated[float | None, typer.Option(min=0, help="Stop before a stage that would take the LLM's cost past this many dollars (tokens x --price).")]
PriceOpt = Annotated[list[str] | None, typer.Option(help="A model's price, MODEL=IN,OUT in dollars per million input and output tokens (over the built-in table). Repeatable.")]
