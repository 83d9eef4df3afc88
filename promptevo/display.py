"""Text shown to people, made safe to look at: bidirectional control characters (U+202E and
friends) in a prompt or an LLM reply would reorder what is displayed around them ("a \u202eevil\u202c
fox" reads as "a live fox"), so every page, report and terminal table shows them as visible
code points instead. Stored text and JSON output keep them as they are (they are data)."""

from __future__ import annotations

import re
from typing import Any

# Arabic letter mark, LRM/RLM, embeddings and overrides (LRE..RLO, PDF), isolates (LRI..PDI).
BIDI_CONTROLS = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def visible(text: str) -> str:
    """`text` with each bidirectional control shown as <U+XXXX>."""
    return BIDI_CONTROLS.sub(lambda m: f"<U+{ord(m.group()):04X}>", text)


def visible_value(value: Any) -> Any:
    """`visible` for plain strings, anything else unchanged (a template's finalize hook; markup a
    template made itself, such as a macro's output, was finalized piece by piece already)."""
    return visible(value) if isinstance(value, str) and not hasattr(value, "__html__") else value
