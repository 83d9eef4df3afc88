"""Components by kind: renderers, reward models, LLM backends, post-render operations and
objectives are registered under a name (llm's `register_models`), and a profile names kinds.
`build_components` is the one place that turns a profile into models; a run stores its profile
with the kinds, so `runs resume`, `runs report` and `apply` rebuild exactly what it used.

Adding a component is registering it, from any module (a test file included):

    @register_reward("brightness", name=lambda config: "brightness-v1")
    def build_brightness(config): return Brightness()
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from promptevo.config import LLMConfig, Profile, RenderConfig, ScorerConfig
from promptevo.errors import UserError


@dataclass(frozen=True)
class Entry:
    kind: str
    build: Callable[..., Any]
    name: Callable[[Any], str] | None = None  # rewards: the stored name, known without loading


_REGISTRY: dict[str, dict[str, Entry]] = {"renderer": {}, "reward": {}, "llm": {}, "post_op": {}, "objective": {}}


def _register(group: str, kind: str, name: Callable[[Any], str] | None = None):
    def decorate(build):
        _REGISTRY[group][kind] = Entry(kind, build, name)
        return build

    return decorate


def register_renderer(kind: str):
    """`build(config: RenderConfig) -> Renderer`."""
    return _register("renderer", kind)


def register_reward(kind: str, *, name: Callable[[ScorerConfig], str]):
    """`build(config: ScorerConfig) -> RewardModel`; `name(config)` is the name its scores are
    stored under, which must be known without loading the model (reports, objectives)."""
    return _register("reward", kind, name)


def register_llm(kind: str):
    """`build(config: LLMConfig) -> LLM`."""
    return _register("llm", kind)


def register_post_op(kind: str):
    """`apply(images [N, 3, H, W] in [0, 1], value: float) -> images`, pure and deterministic."""
    return _register("post_op", kind)


def register_objective(kind: str):
    """`build(**params) -> Objective`."""
    return _register("objective", kind)


def _entry(group: str, kind: str) -> Entry:
    try:
        return _REGISTRY[group][kind]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY[group])) or "none"
        raise UserError(f"unknown {group.replace('_', '-')} kind {kind!r}; registered: {known}") from None


def kinds() -> dict[str, list[str]]:
    return {group: sorted(entries) for group, entries in _REGISTRY.items()}


def build_renderer(config: RenderConfig):
    return _entry("renderer", config.kind).build(config)


def build_reward(config: ScorerConfig):
    return _entry("reward", config.kind).build(config)


def reward_name(config: ScorerConfig) -> str:
    return _entry("reward", config.kind).name(config)


def build_llm(config: LLMConfig):
    return _entry("llm", config.backend).build(config)


def post_op(kind: str) -> Callable[..., Any]:
    return _entry("post_op", kind).build


def build_objective(spec: dict[str, Any]):
    params = {k: v for k, v in spec.items() if k != "kind"}
    try:
        return _entry("objective", spec["kind"]).build(**params)
    except TypeError as exc:
        raise UserError(f"objective {spec['kind']!r}: {exc}") from None


@dataclass
class Components:
    """What a run needs: the LLM and the evaluator (renderer, post-ops, every reward)."""

    llm: Any
    evaluator: Any


def build_components(profile: Profile, *, llm: bool = True, max_models: int = 2) -> Components:
    """The models of a profile, each loaded once. The evaluator first: its weights are the ones
    most often missing, and it fails before the LLM spends time loading."""
    from promptevo.evaluation import EvaluatorSpec, LocalEvaluator

    evaluator = LocalEvaluator.from_spec(EvaluatorSpec(render=profile.render, rewards=profile.rewards, max_models=max_models))
    return Components(llm=build_llm(profile.llm) if llm else None, evaluator=evaluator)


# -- the built-in kinds -------------------------------------------------------------------------


@register_renderer("diffusers")
def _diffusers(config: RenderConfig):
    from promptevo.render import DiffusersRenderer

    return DiffusersRenderer(config)


@register_renderer("tiny")
def _tiny_renderer(config: RenderConfig):
    from dataclasses import replace

    from promptevo.config import TINY
    from promptevo.render import DiffusersRenderer

    return DiffusersRenderer(replace(config, model=TINY))


@register_renderer("synthetic")
def _synthetic_renderer(config: RenderConfig):
    from promptevo.synthetic import SyntheticRenderer, shared_embedder

    return SyntheticRenderer(shared_embedder())


@register_reward("hps", name=lambda config: f"hps-{config.version}")
def _hps(config: ScorerConfig):
    from promptevo.score import HPSScorer

    return HPSScorer(config)


@register_reward("synthetic", name=lambda config: "synthetic-v1")
def _synthetic_reward(config: ScorerConfig):
    from promptevo.synthetic import SyntheticScorer, shared_embedder

    return SyntheticScorer(shared_embedder())


@register_reward("synthetic-fidelity", name=lambda config: "synthetic-fidelity-v1")
def _synthetic_fidelity(config: ScorerConfig):
    from promptevo.synthetic import SyntheticFidelity, shared_embedder

    return SyntheticFidelity(shared_embedder())


@register_llm("openai")
def _openai(config: LLMConfig):
    from promptevo.llm import OpenAIChatLLM

    return OpenAIChatLLM(config)


@register_llm("local")
def _local(config: LLMConfig):
    from promptevo.llm import LocalLLM

    return LocalLLM(config)


@register_llm("scripted")
def _scripted(config: LLMConfig):
    """A script named as "module:function" (a function of the request), e.g. the bench's."""
    import importlib

    from promptevo.llm import ScriptedLLM

    module, _, function = config.model.partition(":")
    try:
        script = getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError, ValueError):
        raise UserError(f"scripted LLM {config.model!r}: no such module:function") from None
    return ScriptedLLM(script, model_name=config.model)


@register_llm("simulated")
def _simulated(config: LLMConfig):
    from promptevo.synthetic import SimulatedLLM, shared_embedder

    return SimulatedLLM(shared_embedder())


@register_objective("reward")
def _reward_objective(reward: str):
    from promptevo.objective import RewardObjective

    return RewardObjective(reward)


@register_objective("weighted")
def _weighted_objective(weights, scales, signs, guards=None, penalty=10.0, kinds=None):
    from promptevo.objective import WeightedObjective

    return WeightedObjective(dict(weights), dict(scales), dict(signs), dict(guards or {}), float(penalty), dict(kinds or {}))


def _register_repository() -> None:
    """The reward repository's models (rewards.py) register themselves on import."""
    import promptevo.image_ops  # noqa: F401 - the retouch operations, as post-ops
    import promptevo.rewards  # noqa: F401


_register_repository()
