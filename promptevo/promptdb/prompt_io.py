"""Reading prompt files: txt (one per line), JSON, JSONL, CSV/TSV and Parquet, with a column
mapping, Unicode/whitespace normalisation and per-row rejection (empty, overlong, binary,
malformed) counted rather than fatal. Writing selections back out as txt, JSONL or CSV."""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptevo.errors import UserError

MAX_PROMPT_CHARS = 2000
FIELDS = ("text", "id", "licence", "tags")
TEXT_COLUMNS = ("prompt", "text", "caption")  # tried in order when no mapping names the text
FORMATS = {".txt": "txt", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv",
           ".tsv": "tsv", ".parquet": "parquet"}

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"), None)
_SPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """NFKC, zero-width characters dropped, every run of whitespace (newlines and tabs included)
    one space, trimmed. Two prompts that differ only in these ways are the same prompt."""
    text = unicodedata.normalize("NFKC", text).translate(_ZERO_WIDTH)
    return _SPACE.sub(" ", text).strip()


def looks_binary(text: str) -> bool:
    """NUL, replacement characters from undecodable bytes, or mostly control characters."""
    if "\x00" in text or "\ufffd" in text:
        return True
    controls = sum(1 for ch in text if unicodedata.category(ch) == "Cc" and ch not in "\t\n\r")
    return controls > max(2, len(text) // 20)


@dataclass
class Row:
    n: int  # 1-based row number in the file
    text: str  # normalised
    raw: str
    fields: dict[str, str] = field(default_factory=dict)  # id, licence, tags


@dataclass
class ReadResult:
    path: Path
    format: str
    mapping: dict[str, str]
    rows: list[Row] = field(default_factory=list)
    rejected: Counter = field(default_factory=Counter)  # reason -> rows
    examples: list[tuple[int, str]] = field(default_factory=list)  # (row, reason), first few

    def reject(self, n: int, reason: str) -> None:
        self.rejected[reason] += 1
        if len(self.examples) < 10:
            self.examples.append((n, reason))

    @property
    def total(self) -> int:
        return len(self.rows) + sum(self.rejected.values())


def parse_mapping(items: Iterable[str]) -> dict[str, str]:
    """["text=prompt", "id=image"] -> {"text": "prompt", "id": "image"}."""
    mapping: dict[str, str] = {}
    for item in items:
        key, sep, column = item.partition("=")
        key, column = key.strip(), column.strip()
        if not sep or not column:
            raise UserError(f"--map takes FIELD=COLUMN, got {item!r}")
        if key not in FIELDS:
            raise UserError(f"--map field {key!r} is not one of {', '.join(FIELDS)}")
        mapping[key] = column
    return mapping


def read_table(path: Path, mapping: dict[str, str] | None = None, *, max_chars: int = MAX_PROMPT_CHARS,
               encoding: str = "utf-8") -> ReadResult:
    """Every row of a prompt file, normalised, with the rejected ones counted by reason. Column
    names match case-insensitively (a `Prompt` header is the prompt column); the file must be in
    `encoding` (UTF-8 unless told), and a file that is not says so rather than looking binary."""
    if not path.is_file():
        raise UserError(f"prompt file {path} does not exist")
    fmt = FORMATS.get(path.suffix.lower(), "txt")
    mapping = dict(mapping or {})
    result = ReadResult(path=path, format=fmt, mapping=mapping)
    if fmt == "parquet":
        records: Iterator[tuple[int, Any]] = _parquet_records(path)
    else:
        data = path.read_bytes()
        head, head_text = data[:8192], data[:8192].decode("utf-8", errors="replace")
        controls = sum(1 for ch in head_text if unicodedata.category(ch) == "Cc" and ch not in "\t\n\r")
        if head.count(b"\x00") > max(4, len(head) // 100) or (  # text in another encoding has no control characters
                head_text.count("\ufffd") > max(4, len(head_text) // 10) and controls > max(2, len(head_text) // 100)):
            raise UserError(f"prompt file {path} looks binary; give a text, JSON(L), CSV/TSV or Parquet file")
        text = _decode(path, data, encoding)
        records = _text_records(path, fmt, text, result)
        if "\ufffd" in text:  # a few undecodable rows: rejected as such (below), the rest imported
            records = ((n, _NOT_DECODED if _has_replacement(r) else r) for n, r in records)
    for n, record in records:
        if record is _MALFORMED:
            result.reject(n, "malformed")
            continue
        if record is _NOT_DECODED:
            result.reject(n, "not UTF-8")
            continue
        if isinstance(record, dict):
            _resolve_columns(mapping, list(record), path, strict=False)
        if isinstance(record, str):
            raw, fields = record, {}
        elif isinstance(record, dict):
            raw = record.get(mapping["text"])  # type: ignore[assignment]  # checked below
            fields = {k: _as_text(record.get(col)) for k, col in mapping.items() if k != "text" and record.get(col) is not None}
        else:
            raw, fields = None, {}
        if raw is None:
            result.reject(n, "no text field")
            continue
        if not isinstance(raw, str):
            raw = _as_text(raw)
        if looks_binary(raw):
            result.reject(n, "binary")
            continue
        text = normalize(raw)
        if not text:
            result.reject(n, "empty")
        elif len(text) > max_chars:
            result.reject(n, "overlong")
        else:
            result.rows.append(Row(n=n, text=text, raw=raw, fields=fields))
    result.mapping = mapping
    return result


_MALFORMED = object()
_NOT_DECODED = object()  # a row with bytes the file's encoding cannot decode


def _decode(path: Path, data: bytes, encoding: str) -> str:
    """The file's text. A file with a few undecodable rows decodes with replacement characters
    (those rows are rejected as "not UTF-8"); one where most rows are undecodable is in another
    encoding, and says so, naming --encoding."""
    utf8 = encoding.lower().replace("_", "-") in ("utf-8", "utf8")
    try:
        return data.decode("utf-8-sig" if utf8 else encoding)
    except LookupError:
        raise UserError(f"unknown encoding {encoding!r} (e.g. utf-8, latin-1, cp1252, utf-16)") from None
    except UnicodeDecodeError as exc:
        lines = [line for line in data.splitlines() if line.strip()]
        bad = sum(1 for line in lines if _undecodable(line, "utf-8" if utf8 else encoding))
        if utf8 and bad * 2 < len(lines):
            return data.decode("utf-8-sig", errors="replace")
        if utf8:
            raise UserError(f"prompt file {path} is not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                            "if it is Latin-1 or another encoding, pass --encoding NAME (e.g. --encoding latin-1)") from None
        raise UserError(f"prompt file {path} is not {encoding} ({exc.reason} at offset {exc.start})") from None


def _has_replacement(record: Any) -> bool:
    values = record.values() if isinstance(record, dict) else [record]
    return any(isinstance(v, str) and "\ufffd" in v for v in values)


def _undecodable(line: bytes, encoding: str) -> bool:
    try:
        line.decode(encoding)
        return False
    except UnicodeDecodeError:
        return True


def _resolve_columns(mapping: dict[str, str], columns: list[str], path: Path, *, strict: bool) -> None:
    """Map each field to a real column, matching names case-insensitively; the text field, when
    not given, is the first of prompt, text, caption that exists. Missing columns: a UserError
    when `strict` (a header names them all), else left for the row to report."""
    by_lower = {c.lower(): c for c in columns}
    for key, column in list(mapping.items()):
        if column not in columns and column.lower() in by_lower:
            mapping[key] = by_lower[column.lower()]
    if "text" not in mapping:
        found = next((by_lower[c] for c in TEXT_COLUMNS if c in by_lower), None)
        if found is None and strict:
            raise UserError(f"{path} has no prompt column (looked for {', '.join(TEXT_COLUMNS)} in any case; columns: "
                            f"{', '.join(columns) or 'none'}); name it with --map text=COLUMN")
        mapping["text"] = found or "prompt"
    missing = [c for c in mapping.values() if c not in columns]
    if missing and strict:
        raise UserError(f"{path} has no column {', '.join(map(repr, missing))} (columns: {', '.join(columns) or 'none'})")


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def _text_records(path: Path, fmt: str, text: str, result: ReadResult) -> Iterator[tuple[int, Any]]:
    if fmt == "txt":
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                yield n, line
            else:
                result.reject(n, "empty")
    elif fmt == "jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError:
                yield n, _MALFORMED
    elif fmt == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if isinstance(data, dict):  # {"prompts": [...]} or similar: the first list inside
            data = next((v for v in data.values() if isinstance(v, list)), None)
        if not isinstance(data, list):
            raise UserError(f"{path} holds no list of prompts")
        yield from enumerate(data, 1)
    else:
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if fmt == "tsv" else ",")
        _resolve_columns(result.mapping, list(reader.fieldnames or []), path, strict=True)
        try:
            for n, row in enumerate(reader, 1):
                yield n, row
        except csv.Error as exc:
            raise UserError(f"{path} is not valid {fmt.upper()}: {exc}") from None


def _parquet_records(path: Path) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several kinds for a bad file
        raise UserError(f"{path} is not a readable Parquet file ({type(exc).__name__})") from None
    yield from enumerate(table.to_pylist(), 1)


def read_prompts(path: Path, column: str | None = None, encoding: str = "utf-8") -> list[str]:
    return read_prompt_column(path, column, encoding)[0]


def read_prompt_column(path: Path, column: str | None = None, encoding: str = "utf-8") -> tuple[list[str], str | None]:
    """Prompts for a run, and the column they came from (None for a text file): every row must
    be usable (a run should not silently drop a prompt the user gave); blank lines are skipped;
    duplicates are dropped keeping order."""
    result = read_table(path, {"text": column} if column else None, encoding=encoding)
    bad = {k: v for k, v in result.rejected.items() if k != "empty"}
    if bad:
        n, reason = next((n, r) for n, r in result.examples if r != "empty")
        hint = f" (limit {MAX_PROMPT_CHARS:,} characters)" if reason == "overlong" else ""
        raise UserError(
            f"{path}: {sum(bad.values())} unusable row(s): "
            + ", ".join(f"{v} {k}" for k, v in sorted(bad.items()))
            + f"; first at row {n} ({reason}){hint}"
        )
    used = result.mapping.get("text") if result.format != "txt" else None
    return check_prompts([r.text for r in result.rows], source=str(path)), used


def check_prompts(prompts: list[str], source: str = "arguments") -> list[str]:
    prompts = [normalize(p) for p in prompts]
    prompts = [p for p in prompts if p]
    if not prompts:
        raise UserError(f"no prompts in {source}")
    for p in prompts:
        if len(p) > MAX_PROMPT_CHARS:
            raise UserError(f"a prompt in {source} has {len(p):,} characters; the limit is {MAX_PROMPT_CHARS:,}")
        if looks_binary(p):
            raise UserError(f"a prompt in {source} contains control or undecodable characters")
    return list(dict.fromkeys(prompts))


def write_selection(rows: list[dict[str, Any]], path: Path, fmt: str | None = None) -> int:
    """Write rows (each with at least `text`) as txt, JSONL or CSV, chosen by `fmt` or suffix."""
    fmt = fmt or {".txt": "txt", ".jsonl": "jsonl", ".csv": "csv"}.get(path.suffix.lower())
    if fmt not in ("txt", "jsonl", "csv"):
        raise UserError(f"cannot tell the export format of {path}; use a .txt, .jsonl or .csv name or --format")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        if fmt == "txt":
            for r in rows:
                fh.write(r["text"] + "\n")
        elif fmt == "jsonl":
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        else:
            columns = list(dict.fromkeys(k for r in rows for k in r)) or ["text"]
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    tmp.replace(path)
    return len(rows)
