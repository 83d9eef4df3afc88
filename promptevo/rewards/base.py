"""What the rewards built on their own code share: where their weights come from, and the version
from their config."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from promptevo.config import TINY, ScorerConfig
from promptevo.errors import ModelNotFound
from promptevo.registry import RewardModel


def weights_file(config: ScorerConfig, tiny: Callable[[], Path], hub: tuple[str, str], what: str) -> Path:
    """The weights a reward loads: its tiny stand-in (built offline), the configured local file,
    or the hub's file (which fails with a line that says what to download where)."""
    if config.version == TINY:
        return tiny()
    if config.checkpoint:
        return Path(config.checkpoint).expanduser()
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(*hub))
    except Exception as exc:  # noqa: BLE001 - any hub failure means the same to the user
        raise ModelNotFound(f"cannot get the {what} ({type(exc).__name__}); download {hub[1]} from {hub[0]} "
                            "and pass it as the reward's checkpoint") from None


class ConfiguredReward(RewardModel):
    """What the rewards built on their own code share: the version from the config, no cache."""

    config: ScorerConfig

    @property
    def version(self) -> str:
        return self.config.version

    def clear_cache(self) -> None:
        pass
