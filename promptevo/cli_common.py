"""What every command shares: the error policy (user mistakes exit 2 without a traceback), the
two consoles (data on stdout, people on stderr), profile options, and input readers."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from promptevo.config import Profile, get_profile
from promptevo.errors import UserError

out = Console(soft_wrap=True)  # data
err = Console(stderr=True)  # people: progress, messages


class Group(TyperGroup):
    """Turns UserError anywhere below into a one-line message and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}")
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]; finished work is saved (`promptevo runs resume RUN` continues a run)")
            raise typer.Exit(130) from None


def new_app(help: str) -> typer.Typer:
    return typer.Typer(
        cls=Group, help=help, no_args_is_help=True, pretty_exceptions_show_locals=False,
        rich_markup_mode="rich", add_completion=False,
    )


ProfileOpt = Annotated[str, typer.Option("--profile", "-p", help="Model bundle: see `promptevo profiles`.", envvar="PROMPTEVO_PROFILE")]
DeviceOpt = Annotated[str | None, typer.Option(help="Device for all models: cpu, cuda, cuda:1, mps (default: the profile's).")]
LLMModelOpt = Annotated[str | None, typer.Option(help="LLM: hub id, local folder or .gguf file (local), or API model name.")]
LLMBaseURLOpt = Annotated[str | None, typer.Option(help="OpenAI-compatible server URL (vLLM, Ollama, llama.cpp); key from OPENAI_API_KEY.", envvar="OPENAI_BASE_URL")]
RenderModelOpt = Annotated[str | None, typer.Option(help="diffusers model: hub id or local folder.")]
HPSCheckpointOpt = Annotated[str | None, typer.Option(help="Local HPS v2/v2.1 checkpoint file.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout for scripts.")]


def build_profile(
    name: str, *, device=None, llm_model=None, llm_base_url=None, render_model=None, hps_checkpoint=None
) -> Profile:
    return get_profile(name).with_overrides(
        device=device, llm_model=llm_model, llm_base_url=llm_base_url,
        render_model=render_model, hps_checkpoint=hps_checkpoint,
    )


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


MAX_PROMPT_CHARS = 2000


def read_prompts(path: Path, column: str = "prompt") -> list[str]:
    """Prompts from txt (one per line), JSONL or CSV/TSV (a `prompt` column). Rejects binary
    files and overlong prompts with a message rather than a traceback."""
    if not path.is_file():
        raise UserError(f"prompt file {path} does not exist")
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        raise UserError(f"prompt file {path} looks binary; give a text, JSONL or CSV file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"prompt file {path} is not UTF-8 text") from None
    suffix = path.suffix.lower()
    prompts: list[str] = []
    if suffix in (".jsonl", ".ndjson"):
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise UserError(f"{path}:{n} is not valid JSON") from None
            value = row.get(column) if isinstance(row, dict) else row if isinstance(row, str) else None
            if not isinstance(value, str):
                raise UserError(f"{path}:{n} has no {column!r} field")
            prompts.append(value)
    elif suffix in (".csv", ".tsv"):
        reader = csv.DictReader(io.StringIO(text), delimiter="\t" if suffix == ".tsv" else ",")
        if not reader.fieldnames or column not in reader.fieldnames:
            raise UserError(f"{path} has no {column!r} column (columns: {reader.fieldnames})")
        prompts = [row[column] or "" for row in reader]
    else:
        prompts = text.splitlines()
    return check_prompts([p.strip() for p in prompts if p and p.strip()], source=str(path))


def check_prompts(prompts: list[str], source: str = "arguments") -> list[str]:
    if not prompts:
        raise UserError(f"no prompts in {source}")
    for p in prompts:
        if len(p) > MAX_PROMPT_CHARS:
            raise UserError(f"a prompt in {source} has {len(p):,} characters; the limit is {MAX_PROMPT_CHARS:,}")
    return list(dict.fromkeys(prompts))
