"""Alignment as questions about the image: does it show what the user asked for?

- `dsg` (in the manner of DSG, Cho et al. 2024, and TIFA): an LLM splits each original prompt once
  into atomic yes/no questions with dependencies; a VLM answers each per image; the score is the
  dependency-respecting mean of P(yes): a question whose parent was answered no counts as no.
- `vqa` (VQAScore, Lin et al. 2024): one question, "Does this image show "{prompt}"?", scored
  as P(yes) from the first token's log-probabilities where the server gives them, else the answer.

Both ask the VLM of `llms.vision` through the OpenAI client, in batches, and keep everything in
an SQLite cache beside the model cache (`alignment.sqlite`): questions per (prompt, model), reused
across runs; answers per (image content, question, model); each with how it was parsed, so parse
rates are known (`promptevo alignment`). A question that cannot be parsed becomes VQAScore's one
question; an answer that is neither yes nor no counts 0.5.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from promptevo.config import TINY, ScorerConfig
from promptevo.hashing import sha256_hex
from promptevo.llms.calls import ask
from promptevo.llms.parsing import clean_text
from promptevo.registry import register_reward
from promptevo.rewards.base import ConfiguredReward

MAX_QUESTIONS = 12
VQA_QUESTION = 'Does this image show "{prompt}"?'
_SCHEMA = """
CREATE TABLE IF NOT EXISTS questions (prompt TEXT NOT NULL, model TEXT NOT NULL, questions_json TEXT NOT NULL,
    parsed TEXT NOT NULL, PRIMARY KEY (prompt, model));
CREATE TABLE IF NOT EXISTS answers (image TEXT NOT NULL, question TEXT NOT NULL, model TEXT NOT NULL, answer TEXT NOT NULL,
    p_yes REAL NOT NULL, parsed TEXT NOT NULL, PRIMARY KEY (image, question, model));
"""


def cache_path() -> Path:
    from promptevo.model_cache import cache_dir

    return cache_dir() / "alignment.sqlite"


class AlignmentCache:
    """Questions per (prompt, model) and answers per (image hash, question, model)."""

    def __init__(self, path: Path | None = None):
        self.path = path or cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def questions(self, prompt: str, model: str) -> list[dict[str, Any]] | None:
        with self._lock:
            row = self._conn.execute("SELECT questions_json FROM questions WHERE prompt = ? AND model = ?", [prompt, model]).fetchone()
        return json.loads(row[0]) if row else None

    def put_questions(self, prompt: str, model: str, questions: list[dict[str, Any]], parsed: str) -> None:
        with self._lock, self._conn:
            self._conn.execute("INSERT OR REPLACE INTO questions VALUES (?, ?, ?, ?)", [prompt, model, json.dumps(questions), parsed])

    def answers(self, keys: Sequence[tuple[str, str]], model: str) -> dict[tuple[str, str], float]:
        out: dict[tuple[str, str], float] = {}
        with self._lock:
            for image, question in keys:
                row = self._conn.execute("SELECT p_yes FROM answers WHERE image = ? AND question = ? AND model = ?",
                                         [image, question, model]).fetchone()
                if row:
                    out[(image, question)] = float(row[0])
        return out

    def put_answers(self, rows: Sequence[tuple[str, str, str, str, float, str]]) -> None:
        with self._lock, self._conn:
            self._conn.executemany("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?)", rows)

    def stats(self) -> dict[str, Any]:
        """Per table and model: how many rows, and how many were parsed as asked."""
        with self._lock:
            out = {}
            for table in ("questions", "answers"):
                out[table] = [{"model": m, "rows": n, "parsed": ok} for m, n, ok in self._conn.execute(
                    f"SELECT model, COUNT(*), SUM(parsed = 'ok') FROM {table} GROUP BY model ORDER BY model")]  # noqa: S608 - fixed names
            return out

    def prompt_questions(self, prompt: str) -> list[dict[str, Any]]:
        """Every model's questions for `prompt`, each with its answers' count and mean P(yes)."""
        with self._lock:
            rows = self._conn.execute("SELECT model, questions_json, parsed FROM questions WHERE prompt = ? ORDER BY model",
                                      [prompt]).fetchall()
            out = []
            for model, questions_json, parsed in rows:
                for q in json.loads(questions_json):
                    n, p = self._conn.execute("SELECT COUNT(*), AVG(p_yes) FROM answers WHERE question = ? AND model = ?",
                                              [q["question"], model]).fetchone()
                    out.append({"model": model, "parsed": parsed, **q, "answers": n, "mean_p_yes": p})
            return out

    def close(self) -> None:
        self._conn.close()


def parse_questions(text: str, prompt: str) -> tuple[list[dict[str, Any]], str]:
    """Questions with ids and dependencies from the LLM's JSON (or its question lines), and how
    they were parsed: ok, repaired (lines ending in ?), or fallback (VQAScore's one question)."""
    questions: list[dict[str, Any]] = []
    match = re.search(r"\{.*\}", text or "", re.S)
    outcome = "ok"
    try:
        items = json.loads(match.group(0))["questions"] if match else []
        for item in items[:MAX_QUESTIONS]:
            q = clean_text(str(item.get("question", "")), 300)
            if q.endswith("?"):
                questions.append({"id": int(item.get("id", len(questions) + 1)), "question": q,
                                  "depends": [int(d) for d in item.get("depends") or [] if isinstance(d, (int, float))]})
    except (ValueError, TypeError, KeyError, AttributeError):
        questions = []
    if not questions:
        outcome = "repaired"
        lines = [clean_text(line.strip(" -*0123456789.)"), 300) for line in (text or "").splitlines()]
        asked = [line for line in lines if line.endswith("?") and len(line) > 5]
        questions = [{"id": i + 1, "question": q, "depends": []} for i, q in enumerate(asked)]
        questions = questions[:MAX_QUESTIONS]
    if not questions:
        return [{"id": 1, "question": VQA_QUESTION.format(prompt=prompt), "depends": []}], "fallback"
    ids = {q["id"] for q in questions}
    for item in questions:  # a dependency on a question that is not there (or on itself) is dropped
        item["depends"] = [d for d in item["depends"] if d in ids and d != item["id"]]
    return questions, outcome


def p_yes(text: str, top_logprobs: Sequence[tuple[str, float]] | None) -> tuple[float, str]:
    """P(yes) from the first token's alternatives (yes against no), else from the answer's first
    word; neither: 0.5, "fallback"."""
    if top_logprobs:
        yes = sum(math.exp(lp) for tok, lp in top_logprobs if tok.strip().lower() == "yes")
        no = sum(math.exp(lp) for tok, lp in top_logprobs if tok.strip().lower() == "no")
        if yes + no > 0:
            return yes / (yes + no), "ok"
    word = re.match(r"\W*(\w+)", (text or "").lower())
    if word and word.group(1) in ("yes", "no"):
        return (1.0 if word.group(1) == "yes" else 0.0), "ok" if top_logprobs is None else "repaired"
    return 0.5, "fallback"


def dsg_score(questions: Sequence[dict[str, Any]], p: dict[str, float]) -> float:
    """The mean P(yes) over questions, a question counting 0 when a question it depends on was
    answered no (P(yes) < 0.5): DSG's dependency rule."""
    by_id = {q["id"]: q for q in questions}

    def holds(qid: int, seen: frozenset = frozenset()) -> bool:
        q = by_id[qid]
        return p[q["question"]] >= 0.5 and all(holds(d, seen | {qid}) for d in q["depends"] if d not in seen)

    values = [p[q["question"]] if all(holds(d, frozenset({q["id"]})) for d in q["depends"]) else 0.0 for q in questions]
    return sum(values) / len(values)


def image_key(image) -> str:
    """An image's identity for the cache: the hash of its 8-bit pixels (what a PNG of it holds)."""
    from promptevo.images import to_uint8

    pixels = to_uint8(image[None])[0]
    return sha256_hex(bytes(pixels.cpu().numpy().tobytes()) + str(tuple(pixels.shape)).encode(), 32)


class QuestionReward(ConfiguredReward):
    """The shared path of `dsg` and `vqa`: questions per prompt, answers per (image, question)."""

    single_question = False

    def __init__(self, config: ScorerConfig, cache: AlignmentCache | None = None):
        from promptevo.llms.vision import vision_llm

        self.config = config
        tiny = config.version == TINY
        self.vlm = vision_llm(tiny, top_logprobs=5, max_new_tokens=4)
        self.writer = self.vlm if self.single_question else vision_llm(tiny, max_new_tokens=400)
        self.model = self.vlm.model_name
        self.cache = cache or AlignmentCache()

    def questions(self, prompts: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        todo = []
        for prompt in dict.fromkeys(prompts):
            if self.single_question:
                out[prompt] = [{"id": 1, "question": VQA_QUESTION.format(prompt=prompt), "depends": []}]
            elif (cached := self.cache.questions(prompt, self.model)) is not None:
                out[prompt] = cached
            else:
                todo.append(prompt)
        if todo:
            calls = ask(self.writer, "dsg_questions", [{"prompt": p} for p in todo], role="dsg_questions", temperature=0.0, seed=0)
            for prompt, call in zip(todo, calls):
                questions, parsed = parse_questions(call.completion.text if call.completion.ok else "", prompt)
                if call.completion.ok:  # a failed request is asked again next time, not cached
                    self.cache.put_questions(prompt, self.model, questions, parsed)
                out[prompt] = questions
        return out

    def answers(self, images, keys: Sequence[str], asks: Sequence[tuple[int, str]]) -> dict[tuple[str, str], float]:
        """P(yes) per (image key, question) for (image index, question) pairs, from the cache or
        one batch of VLM calls."""
        from promptevo.llms.vision import downscale

        wanted = list(dict.fromkeys((keys[i], q) for i, q in asks))
        have = self.cache.answers(wanted, self.model)
        first = {(keys[i], q): i for i, q in reversed(list(asks))}
        todo = [k for k in wanted if k not in have]
        if todo:
            calls = ask(self.vlm, "vqa_answer", [{"question": q} for _, q in todo], role="vqa", temperature=0.0, seed=0,
                        images=[downscale(images[first[k]].float()) for k in todo])
            rows = []
            for key, call in zip(todo, calls):
                p, parsed = p_yes(call.completion.text, call.completion.top_logprobs) if call.completion.ok else (0.5, "fallback")
                have[key] = p
                if call.completion.ok:
                    rows.append((key[0], key[1], self.model, call.completion.text[:200], p, parsed))
            self.cache.put_answers(rows)
        return have

    def score(self, images, prompts: Sequence[str]) -> list[float]:
        questions = self.questions(prompts)
        keys = [image_key(images[i]) for i in range(len(prompts))]
        p = self.answers(images, keys, [(i, q["question"]) for i, prompt in enumerate(prompts) for q in questions[prompt]])
        return [dsg_score(questions[prompt], {q["question"]: p[(keys[i], q["question"])] for q in questions[prompt]})
                for i, prompt in enumerate(prompts)]

    @property
    def name(self) -> str:
        return f"{self.config.kind}-{self.config.version}"


class VQAScore(QuestionReward):
    single_question = True


def _tiny_config(info, device: str, dtype: str) -> ScorerConfig:
    return ScorerConfig(version=TINY, arch="tiny-llava", device="cpu", kind=info.kind)


_NEEDS = ("an OpenAI-compatible vision model: PROMPTEVO_VLM_BASE_URL and PROMPTEVO_VLM_MODEL "
          "(default OpenAI's gpt-4o-mini with OPENAI_API_KEY); tiny profile: a tiny random LLaVA, offline")
register_reward("dsg", measures="alignment: the share of the prompt's atomic yes/no questions (entities, attributes, relations; "
                "made once per prompt by an LLM) a vision model answers yes, respecting their dependencies (DSG)",
                scale_note="0-1", scale=0.1, needs=_NEEDS, version="v1", arch="vlm", modules=("openai",),
                tiny=_tiny_config)(QuestionReward)
register_reward("vqa", measures="alignment: a vision model's P(yes) that the image shows the prompt (VQAScore)",
                scale_note="0-1", scale=0.1, needs=_NEEDS, version="v1", arch="vlm", modules=("openai",),
                tiny=_tiny_config)(VQAScore)
