"""Known recipes as starting instructions (`--seed-recipes`): the search starts from the best
known answers, so its result can be worse than the best of them only by selection noise.

A recipe is an instruction. One whose text holds `{prompt}` is a template: the rewrite is the
text with `{prompt}` replaced by the user's prompt (and `{reference}` by the nearest prompt of
the reference database), made without the LLM, so the style-suffix recipe renders exactly what
the suffix baseline renders. An updater that keeps the placeholder makes a new template; one that
drops it makes an ordinary instruction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from promptevo.errors import UserError
from promptevo.llms.templates import REFINE_INSTRUCTION, STYLE_SUFFIX

PROMPT, REFERENCE = "{prompt}", "{reference}"
BUILT_IN = {
    "suffix": PROMPT + STYLE_SUFFIX,  # the fixed style suffix
    "refine": REFINE_INSTRUCTION,  # the seed paper's plain instruction (the LLM rewrites)
    "reference": PROMPT + ", in the style of: " + REFERENCE,  # the nearest professional prompt's style
}
MAX_RECIPE_CHARS = 2000


def is_template(text: str) -> bool:
    return PROMPT in text


def apply(template: str, prompt: str, nearest: Callable[[str], str | None] | None = None) -> str:
    """The rewrite a template makes of `prompt` (no LLM). `{reference}` without a reference
    database, or with no neighbour, is dropped with the words that introduce it."""
    text = template
    if REFERENCE in text:
        ref = nearest(prompt) if nearest else None
        text = text.replace(REFERENCE, ref) if ref else text.replace(", in the style of: " + REFERENCE, "").replace(REFERENCE, "")
    return " ".join(text.replace(PROMPT, prompt).split())


def resolve(names: Sequence[str], path: Path | None = None, *, reference_db: bool = False) -> tuple[dict[str, str], ...]:
    """The recipes a run starts with, as {"name", "text"}: built-in names, then a file's lines
    (one instruction or template per line; `#` lines are comments)."""
    out: list[dict[str, str]] = []
    for name in names:
        if name not in BUILT_IN:
            raise UserError(f"--seed-recipes takes {', '.join(BUILT_IN)} (got {name!r}); your own go in --recipe-file")
        if name == "reference" and not reference_db:
            raise UserError("the reference recipe needs a reference database (--reference-db)")
        out.append({"name": name, "text": BUILT_IN[name]})
    if path is not None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read --recipe-file {path}: {exc}") from None
        texts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not texts:
            raise UserError(f"--recipe-file {path} has no recipe (one per line)")
        for i, text in enumerate(texts, 1):
            if len(text) > MAX_RECIPE_CHARS:
                raise UserError(f"--recipe-file {path}: line {i} is longer than {MAX_RECIPE_CHARS} characters")
            out.append({"name": f"file:{i}", "text": text})
    unique: dict[str, dict[str, str]] = {}
    for r in out:  # a recipe given twice is kept once, under its first name
        unique.setdefault(r["text"], r)
    return tuple(unique.values())


def template_rewrites(todo: Sequence[tuple[int, str, str]], texts: dict[str, str], references,
                      token_count: Callable[[str], int] | None, window: int) -> list[dict]:
    """Rewrite rows for (instruction id, template, prompt id) items, made without the LLM and
    fitted to the renderer's text window like the LLM's rewrites."""
    from promptevo.optimise.generator import fit_window

    def nearest(prompt: str) -> str | None:
        near = references.nearest(prompt) if references else []
        return near[0]["text"] if near else None

    rows = []
    for iid, template, pid in todo:
        text, cut = fit_window(apply(template, texts[pid], nearest), token_count, window)
        rows.append({"instruction_id": iid, "prompt_id": pid, "text": text, "raw_text": "",
                     "handling": "template" + (",truncated_to_text_window" if cut else ""), "llm_call_id": None})
    return rows


def heldout_arms(recipes: Sequence[dict[str, str]], rows: Sequence[dict]) -> list[tuple[str, int]]:
    """The held-out arms of a run's recipes, `recipe:NAME`, so the answer is compared with each."""
    ids = {r["text"]: r["id"] for r in rows}
    return [(f"recipe:{r['name']}", ids[r["text"]]) for r in recipes if r["text"] in ids]


def fixed_baselines(config, repo, references, prompt_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    """Baselines that need no LLM: the naive prompt plus a fixed style suffix, and the nearest
    reference-database prompt used as is (the paper's Lexica baseline)."""
    texts = repo.prompt_texts(prompt_ids)
    fixed: dict[str, dict[str, str]] = {}
    if "suffix" in config.baselines:
        fixed["suffix"] = {pid: texts[pid] + STYLE_SUFFIX for pid in prompt_ids}
    if "reference" in config.baselines and references:
        fixed["reference"] = {}
        for pid in prompt_ids:
            near = references.nearest(texts[pid])
            fixed["reference"][pid] = near[0]["text"] if near else texts[pid]
    return fixed
