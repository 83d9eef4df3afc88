"""Structured outputs: the JSON schema of each role's reply, sent as `response_format` to a
server that constrains its output to it (llama.cpp's grammar), and the reply turned back into
the text form the role's tolerant parser reads. A reply that is not valid JSON (a reply cut by
the token limit) goes to the tolerant parser as it is, so nothing is lost and the parse outcome
says what happened."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

_TEXT = {"type": "string", "minLength": 1}


def obj(**properties: Any) -> dict[str, Any]:
    """A JSON-schema object with exactly these properties, all required."""
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


SCHEMAS: dict[str, dict[str, Any]] = {
    "generator": obj(prompt={**_TEXT, "maxLength": 300}),
    "gradient": obj(critiques={"type": "array", "minItems": 1, "maxItems": 3,
                                "items": obj(inference={**_TEXT, "maxLength": 160}, improvement={**_TEXT, "maxLength": 160})}),
    "modifier": obj(instruction={**_TEXT, "maxLength": 400}),
    "merge": obj(instruction={**_TEXT, "maxLength": 400}),
    "objective_agent": obj(weights={"type": "object", "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1}},
                            reason={**_TEXT, "maxLength": 300}),
}


# New tokens a structured reply may need beyond the profile's limit: the JSON around the text,
# and a critique's pairs (a reply cut mid-string is no longer JSON).
MIN_TOKENS = {"generator": 110, "gradient": 280, "modifier": 130, "merge": 130, "objective_agent": 160}


def response_format(role: str) -> dict[str, Any] | None:
    """The OpenAI `response_format` for a role's reply, or None for a role without a schema."""
    schema = SCHEMAS.get(role)
    return None if schema is None else {"type": "json_schema", "json_schema": {"name": role, "schema": schema, "strict": True}}


def _critiques(data: dict) -> str:
    return "\n".join(f"Inference {k}: {c['inference']}\nImprovement {k}: {c['improvement']}"
                     for k, c in enumerate(data["critiques"], 1))


_AS_TEXT: dict[str, Callable[[dict], str]] = {
    "generator": lambda d: str(d["prompt"]),
    "gradient": _critiques,
    "modifier": lambda d: f"<instruction>{d['instruction']}</instruction>",
    "merge": lambda d: f"<instruction>{d['instruction']}</instruction>",
    "objective_agent": lambda d: json.dumps(d),
}


_SALVAGE: dict[str, Callable[[str], str]] = {}


def register(role: str, schema: dict[str, Any], to_text: Callable[[dict], str], min_tokens: int,
             salvage: Callable[[str], str] | None = None) -> None:
    """A role defined above this layer (the retouch planner) brings its own schema, the text form
    its parser reads, the tokens its reply needs, and how to salvage a reply cut off mid-JSON."""
    SCHEMAS[role], _AS_TEXT[role], MIN_TOKENS[role] = schema, to_text, min_tokens
    if salvage is not None:
        _SALVAGE[role] = salvage


def finished_objects(reply: str) -> list[Any]:
    """The flat JSON objects a (possibly cut-off) reply finished: a list's whole items."""
    out = []
    for m in re.finditer(r"\{[^{}]*\}", reply):
        try:
            out.append(json.loads(m.group(0)))
        except ValueError:
            continue
    return out


_STRING = r'"((?:[^"\\]|\\.)*)'  # a JSON string's body, closed or cut off


def _strings(key: str, reply: str, closed: bool = False) -> list[str]:
    """The values of `key` in a (possibly cut-off) JSON text; `closed`: only finished strings."""
    out = []
    for m in re.finditer(rf'"{key}"\s*:\s*{_STRING}' + ('"' if closed else ""), reply):
        try:
            out.append(json.loads(f'"{m.group(1)}"'))
        except ValueError:
            out.append(m.group(1))
    return [s for s in out if s.strip()]


def _salvage(role: str, reply: str) -> str:
    """The text fields of a JSON reply cut off by the token limit, in the role's text form."""
    if role in _SALVAGE:
        return _SALVAGE[role](reply)
    if role == "gradient":
        pairs = list(zip(_strings("inference", reply, closed=True), _strings("improvement", reply, closed=True)))
        return _critiques({"critiques": [{"inference": i, "improvement": m} for i, m in pairs]}) if pairs else reply
    key = {"generator": "prompt", "modifier": "instruction", "merge": "instruction"}.get(role)
    found = _strings(key, reply) if key else []
    return _AS_TEXT[role]({key: found[0]}) if found else reply


def as_text(role: str, reply: str) -> str:
    """A structured reply in the text form the role's parser reads (the same form the meta-prompt
    asks a free-form model for); a reply cut off mid-JSON salvaged field by field; any other
    reply unchanged."""
    if role not in _AS_TEXT:
        return reply
    try:
        data = json.loads(reply)
        return _AS_TEXT[role](data) if isinstance(data, dict) else reply
    except (KeyError, TypeError, RecursionError):
        return reply
    except ValueError:
        return _salvage(role, reply)
