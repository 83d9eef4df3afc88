"""Meta-prompts: versioned text templates shipped in the package. Each call stores the template
name and the hash of its text, so a run records exactly which wording produced what."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from promptevo.hashing import sha256_hex

_DIR = Path(__file__).parent / "meta_prompts"


@dataclass(frozen=True)
class Template:
    name: str
    system: str
    user: str
    hash: str

    def messages(self, **fields: object) -> list[dict[str, str]]:
        # str.format does not re-read substituted values, so LLM text in a field stays data.
        return [
            {"role": "system", "content": self.system.format(**fields).strip()},
            {"role": "user", "content": self.user.format(**fields).strip()},
        ]


@cache
def template(name: str) -> Template:
    raw = (_DIR / f"{name}.txt").read_text(encoding="utf-8")
    body = "\n".join(line for line in raw.splitlines() if not line.startswith("#"))
    _, rest = body.split("---system---", 1)
    system, user = rest.split("---user---", 1)
    return Template(name=name, system=system.strip(), user=user.strip(), hash=sha256_hex(raw, 16))


DEFAULT_INSTRUCTION = (
    "Rewrite the short prompt into a detailed image prompt: keep its subject, and add the scene, "
    "lighting, colours, composition, art style and quality keywords that make a striking picture."
)
SEED_INSTRUCTIONS = (
    DEFAULT_INSTRUCTION,
    "Turn the short prompt into a professional photograph description: keep the subject, and name "
    "the camera, lens, lighting and mood.",
    "Turn the short prompt into a description of a painting: keep the subject, and name the medium, "
    "the palette, the composition and an art movement.",
)
NO_GRADIENT_IMPROVEMENT = (  # the no-gradient ablation: a change with no critique behind it
    "Change the instruction in one way that could make the images better."
)
REFINE_INSTRUCTION = "Refine this prompt."  # the seed paper's plain baseline
STYLE_SUFFIX = (  # a common hand-made recipe, the fixed-suffix baseline
    ", highly detailed, sharp focus, dramatic lighting, vivid colors, masterpiece, trending on artstation"
)
