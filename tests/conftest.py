import os
from pathlib import Path

import pytest

# Nothing in the suite may reach a hub; tiny models are built into a cache shared by the session.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("PROMPTEVO_CACHE", str(Path(__file__).resolve().parent.parent / ".pytest_cache" / "promptevo-models"))

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"


def shared_data(*parts: str) -> Path:
    """A file of the data laid beside the checkout in ../shared (the seed paper's prompts have no
    licence to ship with the project); the test skips, saying so, in a clone without it."""
    path = SHARED.joinpath("data", *parts)
    if not path.exists():
        pytest.skip(f"needs ../shared/data/{'/'.join(parts)} beside the checkout (data the project cannot ship)")
    return path


@pytest.fixture(scope="session")
def tiny():
    from promptevo.config import PROFILES

    return PROFILES["tiny"]


@pytest.fixture(scope="session")
def renderer(tiny):
    from promptevo.renderers.diffusers import DiffusersRenderer

    return DiffusersRenderer(tiny.render)


@pytest.fixture(scope="session")
def scorer(tiny):
    from promptevo.rewards.hps import HPSScorer

    return HPSScorer(tiny.scorer)


@pytest.fixture(scope="session")
def smollm(tiny):
    """The real SmolLM2-135M-Instruct, loaded once for the whole session (about 20 s)."""
    from promptevo.llms.backends import LocalLLM

    return LocalLLM(tiny.llm)


@pytest.fixture(scope="session")
def evaluator(renderer, scorer):
    """The tiny renderer and HPS-architecture reward behind the evaluation boundary."""
    from promptevo.evaluation.evaluator import LocalEvaluator

    return LocalEvaluator(renderer, [scorer])


@pytest.fixture
def store(tmp_path):
    from promptevo.storage.store import Store

    with Store(tmp_path / "test.db") as s:
        yield s


@pytest.fixture
def repo(store):
    from promptevo.storage.repository import RunRepository

    return RunRepository(store)
