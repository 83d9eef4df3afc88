"""Rewards computed from people's judgements when trials are read (the repository fits them), not
by a model: registered for their facts, with nothing to build."""

from __future__ import annotations

from promptevo.config import ScorerConfig
from promptevo.errors import UserError
from promptevo.registry import register_reward


@register_reward("human", name=lambda c: "human",
                 measures="your judgements: which of two images of one prompt and seed you prefer, made in "
                          "`promptevo serve` while or after a run goes (Bradley-Terry strength of each arm)",
                 scale_note="log-odds of being preferred to the naive prompt; +1 is preferred 73% of the time", scale=1.0,
                 needs="judgements in `promptevo serve` (an arm nobody judged counts 0)", version="bradley-terry",
                 arch="bradley-terry", judged=True)
def build_human(config: ScorerConfig):
    raise UserError("the human reward is computed from judgements, not scored by a model")
