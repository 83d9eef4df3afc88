"""A run's spending limits: images scored, LLM calls and dollars, checked before each stage.

Limits are stored as events (the latest wins), not in the run's configuration: raising them on
`runs resume` changes what a run may spend, not what it is, so its config hash stays. Cost is
the LLM's tokens times a per-model price table (dollars per million input and output tokens) the
user can extend; renders on your own GPU are not priced. A stage that would take the run past a
limit is not started: the run stops cleanly (event `stopped`, reason `budget`) and resumes where
it stopped once the limit is raised.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from promptevo.errors import UserError
from promptevo.optimise.run_config import OptimizeConfig
from promptevo.storage.repository import RunRepository

# Dollars per million (input, output) tokens, public list prices; local models cost nothing.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
}
FREE_MODELS = ("smollm2", "scripted", "synthetic", "tiny-")  # what runs here: the tiny profile, stand-ins


class BudgetReached(Exception):
    """The next stage would take the run past a limit; the message names it and how to go on."""


@dataclass(frozen=True)
class Limits:
    max_images: int | None = None
    max_llm_calls: int | None = None
    max_cost: float | None = None  # dollars
    prices: dict[str, tuple[float, float]] = field(default_factory=dict)  # the user's, over PRICES

    def any(self) -> bool:
        return any(v is not None for v in (self.max_images, self.max_llm_calls, self.max_cost))

    def validate(self) -> None:
        for name, value in (("--max-images", self.max_images), ("--max-llm-calls", self.max_llm_calls),
                            ("--max-cost", self.max_cost)):
            if value is not None and not value >= 0:
                raise UserError(f"{name} must be >= 0 (got {value})")


def parse_price(text: str) -> tuple[str, tuple[float, float]]:
    """`MODEL=IN,OUT` (dollars per million input and output tokens)."""
    model, _, rest = text.partition("=")
    try:
        inp, out = (float(v) for v in rest.split(","))
    except ValueError:
        raise UserError(f"--price is MODEL=IN,OUT in dollars per million tokens, e.g. gpt-4o-mini=0.15,0.6 (got {text!r})") from None
    if not model.strip() or inp < 0 or out < 0:
        raise UserError(f"--price needs a model name and prices >= 0 (got {text!r})")
    return model.strip(), (inp, out)


def set_limits(repo: RunRepository, run_id: str, limits: Limits) -> None:
    """Store the run's limits (kept for the given ones: a resume that names none keeps them)."""
    limits.validate()
    old = limits_of(repo, run_id)
    merged = Limits(
        max_images=limits.max_images if limits.max_images is not None else old.max_images,
        max_llm_calls=limits.max_llm_calls if limits.max_llm_calls is not None else old.max_llm_calls,
        max_cost=limits.max_cost if limits.max_cost is not None else old.max_cost,
        prices={**old.prices, **limits.prices})
    if merged != old:
        repo.event(run_id, "budget_limits", {**asdict(merged), "prices": {k: list(v) for k, v in merged.prices.items()}})


def limits_of(repo: RunRepository, run_id: str) -> Limits:
    events = repo.events(run_id, "budget_limits")
    if not events:
        return Limits()
    d = events[-1]["data"]
    return Limits(d.get("max_images"), d.get("max_llm_calls"), d.get("max_cost"),
                  {k: (float(v[0]), float(v[1])) for k, v in (d.get("prices") or {}).items()})


def price_of(model: str, prices: dict[str, tuple[float, float]]) -> tuple[float, float] | None:
    """A model's price: the user's table, then the built-in one (a served model's name may
    carry a provider prefix or a date suffix); None when unknown."""
    for table in (prices, PRICES):
        if model in table:
            return table[model]
    base = model.rsplit("/", 1)[-1]
    if base.lower().startswith(FREE_MODELS) or base.endswith(".gguf"):
        return (0.0, 0.0)
    for name in sorted(PRICES, key=len, reverse=True):  # gpt-4o-mini-2024-07-18 is gpt-4o-mini
        if base.startswith(name):
            return PRICES[name]
    return None


def spent(repo: RunRepository, run_id: str, prices: dict[str, tuple[float, float]] | None = None) -> dict[str, Any]:
    """What the run has spent: `RunRepository.budget`'s counts, dollars, and the models without a
    price (counted as free, and named so the number is not trusted blindly)."""
    prices = limits_of(repo, run_id).prices if prices is None else prices
    used = repo.budget(run_id)
    cost, unpriced = 0.0, []
    for row in repo.store.query(
            "SELECT model, COALESCE(SUM(prompt_tokens), 0) AS p, COALESCE(SUM(completion_tokens), 0) AS c "
            "FROM llm_calls WHERE run_id = ? GROUP BY model ORDER BY model", [run_id]):
        price = price_of(row["model"], prices)
        if price is None:
            unpriced.append(row["model"])
            continue
        cost += (row["p"] * price[0] + row["c"] * price[1]) / 1e6
    return {**used, "cost_usd": round(cost, 6), "unpriced_models": unpriced}


def stage_estimate(cfg: OptimizeConfig, repo: RunRepository, run_id: str, stage: str) -> dict[str, int]:
    """Images and LLM calls a stage takes at most (cached images count too: an upper bound); the
    budget checks and the progress display's "LLM calls left" both read it."""
    n_opt = len(repo.prompts(run_id, "optimize"))
    n_held = len(repo.prompts(run_id, "heldout")) or n_opt
    if stage == "search":
        prompts = cfg.pareto_set or cfg.batch_size
        critique = int(cfg.gradient) + cfg.new_per_gradient if cfg.new_per_gradient else 0
        return {"images": prompts * cfg.seeds_per_prompt * (cfg.arms_per_round + 1),
                "llm_calls": cfg.arms_per_round * prompts + critique + int(cfg.merge)}
    if stage == "selection":
        n = min(cfg.select_prompts, n_opt)
        return {"images": n * (cfg.population * 2 + 1), "llm_calls": n * cfg.population * 2}
    from promptevo.optimise.recipes import is_template

    rewritten = 2 + int("refine" in cfg.baselines) + sum(not is_template(r["text"]) for r in cfg.recipes)
    arms = 3 + len(cfg.baselines) + len(cfg.recipes)
    return {"images": n_held * cfg.eval_seeds * arms, "llm_calls": n_held * rewritten}


def check(cfg: OptimizeConfig, repo: RunRepository, run_id: str, stage: str, label: str) -> None:
    """Raise BudgetReached when `stage` would take the run past a limit (nothing is started)."""
    limits = limits_of(repo, run_id)
    if not limits.any():
        return
    now = spent(repo, run_id, limits.prices)
    need = stage_estimate(cfg, repo, run_id, stage)
    calls = max(now["llm_calls"], 1)
    cost_next = now["cost_usd"] / calls * need["llm_calls"]  # the run's mean cost per call so far
    over = []
    if limits.max_images is not None and now["images"] + need["images"] > limits.max_images:
        over.append(f"images {now['images']} + up to {need['images']} > --max-images {limits.max_images}")
    if limits.max_llm_calls is not None and now["llm_calls"] + need["llm_calls"] > limits.max_llm_calls:
        over.append(f"LLM calls {now['llm_calls']} + up to {need['llm_calls']} > --max-llm-calls {limits.max_llm_calls}")
    if limits.max_cost is not None and now["cost_usd"] + cost_next > limits.max_cost:
        over.append(f"cost ${now['cost_usd']:.4f} + about ${cost_next:.4f} > --max-cost {limits.max_cost:g}")
    if over:
        raise BudgetReached(f"{label} not started: {'; '.join(over)}")


def first_round_warning(cfg: OptimizeConfig, limits: Limits) -> str | None:
    """A warning when the limits cannot pay for one round of every starting instruction (GEPA's
    users hit this: a budget spent before the search has compared anything)."""
    arms = len(cfg.initial_instructions[: cfg.population]) + len(cfg.recipes)
    prompts = (cfg.pareto_set or cfg.batch_size)
    images, calls = prompts * cfg.seeds_per_prompt * (arms + 1), prompts * arms
    short = []
    if limits.max_images is not None and limits.max_images < images:
        short.append(f"--max-images {limits.max_images} < {images}")
    if limits.max_llm_calls is not None and limits.max_llm_calls < calls:
        short.append(f"--max-llm-calls {limits.max_llm_calls} < {calls}")
    if not short:
        return None
    return (f"the budget cannot cover one round of each of the {arms} starting instructions ({', '.join(short)}): "
            "the search will stop before it has compared them")


def describe(b: dict[str, Any]) -> str:
    """What a run spent, against its limits, and whether it stopped at them."""
    limits = b.get("limits") or {}

    def of(key: str) -> str:
        return f" of {limits[key]:g}" if limits.get(key) is not None else ""

    cost = f", ${b['cost_usd']:.4f}{of('max_cost')}" if "cost_usd" in b else ""
    unpriced = f" (no price for {', '.join(b['unpriced_models'])}: --price)" if b.get("unpriced_models") else ""
    line = (f"budget: {b['images']}{of('max_images')} images scored ({b['search_images']} to decide), {b['llm_calls']}"
            f"{of('max_llm_calls')} LLM calls ({b['prompt_tokens'] + b['completion_tokens']} tokens{cost}{unpriced}), "
            f"{b['wall_s']:.0f} s in rounds")
    return line + (f"; stopped at the budget: {b['stopped_at_budget']}" if b.get("stopped_at_budget") else "")
