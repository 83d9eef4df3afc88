"""The bottom floor: the contracts every component meets and the tables they are registered in.

Renderers, reward models, LLM backends, post-render operations, objectives, selectors and
optimiser strategies are registered under a kind (llm's `register_models`); a profile names
kinds, and a run stores its profile, so `runs resume`, `report` and `apply` rebuild exactly what
it used. This module imports no implementation: each built-in registers itself in its own
module, which the registry imports by name on first use (`BUILTINS`, the way simonw/llm loads its
default plugins); third-party packages register through the `promptevo` entry-point group, and
modules named in `PROMPTEVO_PLUGINS` (comma-separated) are imported too.

Adding a reward is registering it, from any module (a test file included):

    @register_reward("brightness", measures="mean brightness", scale=5.0)
    def build(config): return Brightness()
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from promptevo.config import LLMConfig, RenderConfig, ScorerConfig
from promptevo.errors import UserError

# -- contracts -----------------------------------------------------------------------------------


@dataclass
class RenderBatch:
    images: Any  # torch.Tensor [N, 3, H, W], float in [0, 1], on the render device
    batch_sizes: list[int]  # images per pipeline call that produced each image


class Renderer(Protocol):
    config: RenderConfig  # resolved: the device and dtype actually used; config.text_window tokens fit
    batch_limit: int  # images per pipeline call (halved on out-of-memory)

    def render(self, prompts: Sequence[str], seeds: Sequence[int]) -> RenderBatch: ...

    def token_count(self, text: str) -> int:
        """Text-encoder tokens of `text`, start and end markers included."""
        ...

    def full_decoder(self) -> Renderer:
        """This renderer with its full decoder: itself unless search rounds use a faster one.
        The selection pass and the held-out evaluation render with it."""
        ...


def renderer_with_settings(renderer: Any, config: RenderConfig) -> Any | None:
    """The renderer drawing with other call settings (steps, guidance, size, scheduler) while
    sharing its weights, or None when it draws one setting only: the optional `with_settings`."""
    method = getattr(type(renderer), "with_settings", None)
    return method(renderer, config) if method else None


class RewardModel:
    """A reward: scores a batch of images against their target prompts. `name` is what its scores
    are stored under and what objectives refer to; `version` is stored beside it. Subclasses
    override `score`, and the defaults below where they differ."""

    uses_text: bool = False  # score() also takes texts=, the rendered texts

    @property
    def name(self) -> str:
        raise NotImplementedError

    @property
    def version(self) -> str:
        raise NotImplementedError

    def score(self, images: Any, prompts: Sequence[str]) -> list[float]:
        """One value per image against its prompt; a reward with `uses_text` takes `texts=` too."""
        raise NotImplementedError

    def clear_cache(self) -> None:
        """Forget per-prompt work kept between calls (benchmarks time it cold)."""


Message = dict[str, str]  # {"role": ..., "content": ...}


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float | None = None
    attempts: int = 1
    error: str | None = None
    top_logprobs: tuple[tuple[str, float], ...] | None = None  # the first token's, when asked and given

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Request:
    """One conversation for the LLM, with the role that asks and the structured fields its
    meta-prompt was filled from. Real backends send `messages`; stand-ins answer from `role` and
    `fields` and never parse the wording."""

    role: str  # generator, gradient, modifier, ...
    messages: list[Message]
    fields: Mapping[str, Any] = field(default_factory=dict)


class LLM(Protocol):
    model_name: str

    def complete(
        self, requests: Sequence[Request], *, temperature: float | None = None, seed: int | None = None
    ) -> list[Completion]:
        """One completion per request, in order; a failed request comes back with `error` set."""
        ...


PostOp = Callable[[Any, Any], Any]  # (images [N, 3, H, W] in [0, 1], value) -> images; pure and deterministic


class Objective:
    """What a trial is worth from its rewards' scores. `spec()` rebuilds it ({"kind": registered
    kind, **params}) and is stored with the run."""

    def score(self, scores: Mapping[str, float]) -> float:
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        raise NotImplementedError

    def gain(self, scores: Mapping[str, float], naive: Mapping[str, float]) -> float:
        """The paired gain over the naive prompt (guards override it to penalise a gain)."""
        return self.score(scores) - self.score(naive)


class Selector(Protocol):
    """Picks k arms from their statistics (`optimise.bandit.ArmStats`)."""

    name: str

    def select(self, arms: Sequence[Any], k: int, rng: Any) -> list[int]: ...


class Strategy(Protocol):
    """An optimiser strategy (dspy's teleprompter, GEPA's adapter): how a search round draws its
    prompts and arms, how new instructions are made, and how the answer is chosen. The optimiser
    (`optimise.optimizer.Optimizer`, passed as `opt`) keeps the stages, the stored plans and the
    progress; a strategy reads and decides through it."""

    name: str

    def draw(self, opt: Any, r: int, rng: Any) -> tuple[list[str], list[list[int]]]:
        """Round r's prompt ids and seeds per prompt."""
        ...

    def arms(self, opt: Any, r: int, rng: Any) -> list[int]:
        """The instruction ids round r evaluates."""
        ...

    def evolve(self, opt: Any, r: int, rewards: dict[int, float]) -> list[dict[str, Any]]:
        """New instructions after round r (not yet stored), from its mean gain per arm."""
        ...

    def candidates(self, opt: Any) -> list[dict[str, Any]]:
        """The instructions the answer is picked from when no selection pass decides."""
        ...

    def choose(self, opt: Any) -> dict[str, Any]:
        """The answer from the search rounds, among the candidates."""
        ...


# -- the reward repository's facts ---------------------------------------------------------------


@dataclass(frozen=True)
class RewardInfo:
    """What promptevo knows of a reward without loading it, given when it registers."""

    kind: str
    measures: str
    scale_note: str
    scale: float  # a gain of this size matters (the weighted objective's unit)
    higher_is_better: bool
    needs: str
    version: str  # the real model's version
    arch: str
    modules: tuple[str, ...]  # Python packages it imports
    judged: bool = False  # computed from people's judgements when trials are read, not by a model
    reads_text: bool = False  # scores the rendered text, not the image (no use to an image-only objective)
    tiny: Callable[[RewardInfo, str, str], ScorerConfig] | None = None  # its toy stand-in's config

    def installed(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in self.modules)

    def config(self, *, tiny: bool, device: str = "auto", dtype: str = "float32") -> ScorerConfig:
        """The reward's config on a profile: its toy stand-in on tiny profiles (when it has one;
        rewards that ship real weights score for real everywhere), else the real model."""
        if tiny and self.tiny is not None:
            return self.tiny(self, device, dtype)
        return ScorerConfig(version=self.version, arch=self.arch, device=device, dtype=dtype, kind=self.kind)


# -- the tables ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    kind: str
    build: Callable[..., Any]
    name: Callable[[Any], str] | None = None  # rewards: the stored name, known without loading
    info: RewardInfo | None = None


GROUPS = ("renderer", "reward", "llm", "post_op", "objective", "selector", "strategy")
_REGISTRY: dict[str, dict[str, Entry]] = {group: {} for group in GROUPS}

BUILTINS = (  # modules that register the built-in kinds, imported on first use of any table
    "promptevo.renderers.diffusers",
    "promptevo.rewards.hps",
    "promptevo.rewards.clip",
    "promptevo.rewards.pickscore",
    "promptevo.rewards.aesthetic",
    "promptevo.rewards.brisque",
    "promptevo.rewards.naturalness",
    "promptevo.rewards.alignment",
    "promptevo.rewards.fidelity",
    "promptevo.lab.synthetic",
    "promptevo.rewards.imagereward",
    "promptevo.rewards.measures",
    "promptevo.rewards.judged",
    "promptevo.rewards.objective",
    "promptevo.llms.backends",
    "promptevo.llms.llama_server",
    "promptevo.retouch.ops",
    "promptevo.optimise.bandit",
    "promptevo.optimise.strategies",
)
ENTRY_POINT_GROUP = "promptevo"
_loaded = False
_loading = threading.RLock()


def load() -> None:
    """Import the built-ins and entry-point plugins once, and any module newly named in
    `PROMPTEVO_PLUGINS` (read at each call: cheap, and a changed setting takes effect)."""
    global _loaded
    if not _loaded:
        with _loading:
            if not _loaded:
                _loaded = True  # set first: a built-in that reads a table while registering must not recurse
                for module in BUILTINS:
                    importlib.import_module(module)
                from importlib.metadata import entry_points

                for ep in entry_points(group=ENTRY_POINT_GROUP):
                    ep.load()
    named = os.environ.get("PROMPTEVO_PLUGINS", "")
    if named and named != _plugins_seen[0]:
        with _loading:
            for module in filter(None, (m.strip() for m in named.split(","))):
                try:
                    importlib.import_module(module)
                except ImportError as exc:
                    raise UserError(f"PROMPTEVO_PLUGINS names {module!r}, which cannot be imported ({exc})") from None
            _plugins_seen[0] = named


_plugins_seen = [""]  # the PROMPTEVO_PLUGINS value whose modules are imported


def _register(group: str, kind: str, name: Callable[[Any], str] | None = None, info: RewardInfo | None = None):
    def decorate(build):
        _REGISTRY[group][kind] = Entry(kind, build, name, info)
        return build

    return decorate


def register_renderer(kind: str):
    """`build(config: RenderConfig) -> Renderer`."""
    return _register("renderer", kind)


def register_reward(kind: str, *, name: Callable[[ScorerConfig], str] | None = None, measures: str = "",
                    scale: float = 1.0, higher_is_better: bool = True, scale_note: str = "", needs: str = "nothing",
                    version: str = "v1", arch: str = "", modules: Sequence[str] = (), judged: bool = False, reads_text: bool = False,
                    tiny: Callable[[RewardInfo, str, str], ScorerConfig] | None = None):
    """`build(config: ScorerConfig) -> RewardModel`. `name(config)` is the name its scores are
    stored under, known without loading the model (reports, objectives); by default KIND-VERSION.
    The facts (what it measures, its scale, sign, needs, its toy stand-in) are what `promptevo
    rewards` lists and what objectives weigh it by."""
    info = RewardInfo(kind, measures, scale_note, float(scale), higher_is_better, needs, version, arch,
                      tuple(modules), judged, reads_text, tiny)
    return _register("reward", kind, name or (lambda config: f"{kind}-{config.version}"), info)


def register_llm(kind: str):
    """`build(config: LLMConfig) -> LLM`."""
    return _register("llm", kind)


def register_post_op(kind: str):
    """`apply(images [N, 3, H, W] in [0, 1], value: float) -> images`, pure and deterministic."""
    return _register("post_op", kind)


def register_objective(kind: str):
    """`build(**params) -> Objective`."""
    return _register("objective", kind)


def register_selector(kind: str):
    """`build(ucb_c: float, epsilon: float) -> Selector`."""
    return _register("selector", kind)


def register_strategy(kind: str):
    """`build() -> Strategy`."""
    return _register("strategy", kind)


def _entry(group: str, kind: str) -> Entry:
    load()
    try:
        return _REGISTRY[group][kind]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY[group])) or "none"
        raise UserError(f"unknown {group.replace('_', '-')} kind {kind!r}; registered: {known}") from None


def kinds() -> dict[str, list[str]]:
    load()
    return {group: sorted(entries) for group, entries in _REGISTRY.items()}


def build_renderer(config: RenderConfig) -> Any:
    return _entry("renderer", config.kind).build(config)


def build_reward(config: ScorerConfig) -> Any:
    return _entry("reward", config.kind).build(config)


def reward_name(config: ScorerConfig) -> str:
    name = _entry("reward", config.kind).name
    assert name is not None
    return name(config)


def reward_info(kind: str) -> RewardInfo:
    load()
    entry = _REGISTRY["reward"].get(kind)
    if entry is None or entry.info is None:
        raise UserError(f"unknown reward {kind!r}; the repository has {', '.join(_REGISTRY['reward'])} (`promptevo rewards`)")
    return entry.info


def reward_infos() -> dict[str, RewardInfo]:
    """Every registered reward's facts, in registration order."""
    load()
    return {kind: e.info for kind, e in _REGISTRY["reward"].items() if e.info is not None}


def build_llm(config: LLMConfig) -> Any:
    return _entry("llm", config.backend).build(config)


def post_op(kind: str) -> PostOp:
    return _entry("post_op", kind).build


def build_objective(spec: dict[str, Any]) -> Objective:
    params = {k: v for k, v in spec.items() if k != "kind"}
    try:
        return _entry("objective", spec["kind"]).build(**params)
    except TypeError as exc:
        raise UserError(f"objective {spec['kind']!r}: {exc}") from None


def build_selector(kind: str, *, ucb_c: float = 1.0, epsilon: float = 0.2) -> Selector:
    try:
        entry = _entry("selector", kind)
    except UserError:
        raise UserError(f"unknown selector {kind!r}; choose one of: {', '.join(_REGISTRY['selector'])}") from None
    return entry.build(ucb_c=ucb_c, epsilon=epsilon)


def build_strategy(kind: str) -> Strategy:
    return _entry("strategy", kind).build()
