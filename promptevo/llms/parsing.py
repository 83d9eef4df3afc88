"""Tolerant parsing of LLM output. LLM text is untrusted data: these functions never raise on
any string, cap what they return, and strip control characters. Nothing here executes or
opens anything named in the text."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

MAX_REWRITE_CHARS = 600
MAX_INSTRUCTION_CHARS = 800
MAX_IMPROVEMENT_CHARS = 400

_PREAMBLE = re.compile(
    r"^\s*(sure|certainly|of course|okay|ok|here('s| is)|below is|the (new|rewritten|improved|detailed) prompt"
    r"|rewritten( prompt)?|new prompt|improved prompt|prompt|output|answer)\b[^:\n]*:\s*",
    re.IGNORECASE,
)
_LABEL = re.compile(r"^\s*(\*\*)?(new |rewritten |improved |detailed )?prompt(\*\*)?\s*[:\-]\s*", re.IGNORECASE)


def clean_text(text: object, limit: int) -> str:
    """Printable text only, whitespace collapsed, at most `limit` characters."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if not isinstance(text, str):
        return ""
    text = unicodedata.normalize("NFC", text.replace("\ufffd", " "))
    text = "".join(ch if ch in "\n\t" or unicodedata.category(ch)[0] != "C" else " " for ch in text)
    text = "\n".join(re.sub(r"[ \t]+", " ", line).strip() for line in text.splitlines())
    return text.strip()[:limit]


@dataclass(frozen=True)
class Rewrite:
    text: str
    handling: str | None  # None when used as written


def parse_rewrite(raw: object, naive_prompt: str, limit: int = MAX_REWRITE_CHARS) -> Rewrite:
    """The prompt inside a generator reply: drop preambles, labels, quotes and trailing notes.
    An unusable reply falls back to the naive prompt, and says so."""
    text = clean_text(raw, 20_000)
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n|\n", text) if p.strip()]
    candidates = []
    for para in paragraphs:
        para = _LABEL.sub("", _PREAMBLE.sub("", para)).strip().strip("\"'`*“”").strip()
        if len(para) >= 3 and not para.endswith(":"):
            candidates.append(para)
    if not candidates:
        return Rewrite(text=naive_prompt, handling="unusable_reply_used_naive_prompt")
    best = candidates[0]
    handling = None
    if len(best) > limit:
        cut = best[:limit]
        best = cut[: cut.rfind(" ")] if " " in cut else cut
        handling = "capped_length"
    return Rewrite(text=best, handling=handling)


@dataclass(frozen=True)
class Improvement:
    inference: str
    improvement: str


_NUMBERED = re.compile(
    r"(?im)^\W*(inference|improvement)\s*(\d+)\s*[:.)\-]\s*(.*)$"
)


def parse_gradient(raw: object, limit: int = 5) -> list[Improvement]:
    """`Inference k: ... / Improvement k: ...` pairs. Missing inferences are allowed; lines that
    are not improvements are ignored. Falls back to bullet lines when no markers are present."""
    text = clean_text(raw, 20_000)
    found: dict[int, dict[str, str]] = {}
    for kind, num, body in _NUMBERED.findall(text):
        body = clean_text(body, MAX_IMPROVEMENT_CHARS)
        if body:
            found.setdefault(int(num), {})[kind.lower()] = body
    items = [
        Improvement(inference=v.get("inference", ""), improvement=v["improvement"])
        for _, v in sorted(found.items())
        if "improvement" in v
    ]
    if not items:
        bullets = [
            m.strip() for m in re.findall(r"(?m)^\s*(?:[-*•]|\d+[.)])\s+(.{15,})$", text)
        ]
        items = [Improvement(inference="", improvement=clean_text(b, MAX_IMPROVEMENT_CHARS)) for b in bullets]
    seen, unique = set(), []
    for item in items:
        key = item.improvement.lower()
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return unique[:limit]


# A paragraph after the instruction that talks about it rather than being it.
_COMMENTARY = re.compile(
    r"^\W*(this|these|note|notes|explanation|why|reasoning|rationale|i |i'|in this|by |here|the (new|above|improved|updated|revised) "
    r"instruction|this (new |improved |updated )?instruction)\b", re.IGNORECASE)


def clip_at_sentence(text: str, limit: int) -> str:
    """`text` whole if it fits; else cut at the last sentence end within `limit`, or failing one,
    at a word with an ellipsis, so a cut is never silent mid-sentence."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s|$)", head)]
    if ends and ends[-1] >= limit // 3:
        return head[: ends[-1]].strip()
    cut = head[: head.rfind(" ")] if " " in head else head[: limit - 1]
    return cut.rstrip(" ,;:") + "…"


def parse_instruction(raw: object, limit: int = MAX_INSTRUCTION_CHARS) -> str | None:
    """The text between <instruction> tags, or failing that the reply less preambles and less
    the commentary paragraphs a model adds after it ("This instruction ..."). Cut, when too
    long, at a sentence end. None when nothing usable remains (too short to be an instruction)."""
    text = clean_text(raw, 20_000)
    match = re.search(r"<instruction>(.*?)(</instruction>|$)", text, re.IGNORECASE | re.DOTALL)
    body = match.group(1) if match else _PREAMBLE.sub("", text)
    body = re.sub(r"</?instruction>", " ", body, flags=re.IGNORECASE)
    if not match:
        kept: list[str] = []
        for paragraph in (p for p in re.split(r"\n\s*\n", body.strip()) if p.strip()):
            if kept and _COMMENTARY.match(paragraph):
                break  # the rest talks about the instruction
            kept.append(paragraph)
        body = "\n\n".join(kept) or body
    body = clip_at_sentence(clean_text(body.strip().strip("\"'`"), 20_000), limit)
    if len(body.split()) < 4:
        return None
    return body


# -- parse outcomes: was a reply in the form its role asked for? --------------------------------
# ok: as asked; repaired: a usable answer recovered from another form; fallback: unusable, so the
# caller used its fallback (the naive prompt, the blind improvement, no new instruction).


def rewrite_outcome(raw: object, parsed: Rewrite) -> str:
    if parsed.handling and parsed.handling.startswith("unusable"):
        return "fallback"
    return "ok" if clean_text(raw, 20_000).strip().strip("\"'`") == parsed.text else "repaired"


def gradient_outcome(raw: object, items: list[Improvement]) -> str:
    if not items:
        return "fallback"
    return "ok" if any(i.inference or _NUMBERED.search(clean_text(raw, 20_000)) for i in items) else "repaired"


def instruction_outcome(raw: object, parsed: str | None) -> str:
    if parsed is None:
        return "fallback"
    return "ok" if re.search(r"<instruction>", clean_text(raw, 20_000), re.IGNORECASE) else "repaired"
