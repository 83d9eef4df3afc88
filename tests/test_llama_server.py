"""The llama.cpp server promptevo starts and owns (the xllamacpp wheel serving SmolLM2's GGUF):
it answers through the OpenAI-compatible client, is restarted when it dies mid-run, never
outlives promptevo (SIGKILL included), and bad set-ups are one line each."""

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from promptevo.config import LLMConfig
from promptevo.errors import UserError
from promptevo.registry import Request

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(importlib.util.find_spec("xllamacpp") is None, reason="xllamacpp is not installed")
CONFIG = LLMConfig(backend="llamacpp", model="smollm2", max_new_tokens=24, temperature=0.7)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie has exited: only its parent has not reaped it yet
        return fh.read().split(") ")[-1][0] != "Z"


@pytest.fixture(scope="module")
def llm():
    from promptevo.registry import build_llm

    backend = build_llm(CONFIG)
    yield backend
    backend.close()


def test_the_server_answers_a_batch_with_token_counts_and_seeds(llm):
    reqs = [Request("generator", [{"role": "user", "content": f"Rewrite as an image prompt: {p}"}]) for p in ("a fox", "a cat", "a cow")]
    first = llm.complete(reqs, seed=5, temperature=0.7)
    again = llm.complete(reqs, seed=5, temperature=0.7)
    assert all(c.ok and c.text and c.completion_tokens and c.prompt_tokens for c in first)
    assert [c.text for c in first] == [c.text for c in again]  # a seed makes a reply again
    assert first[0].model.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert llm.server.url.startswith("http://127.0.0.1:")


def test_a_server_killed_mid_run_is_started_again_and_the_batch_answered(llm):
    reqs = [Request("generator", [{"role": "user", "content": "Rewrite as an image prompt: a lighthouse"}])]
    before = llm.server.starts
    llm.server.proc.send_signal(signal.SIGKILL)
    llm.server.proc.wait(timeout=10)
    out = llm.complete(reqs, seed=1)
    assert out[0].ok and out[0].text and llm.server.starts == before + 1 and llm.server.alive()


def test_the_server_never_outlives_promptevo_even_a_sigkilled_one(tmp_path):
    code = ("from promptevo.config import LLMConfig; from promptevo.registry import build_llm; "
            "llm = build_llm(LLMConfig(backend='llamacpp', model='smollm2')); print(llm.server.proc.pid, flush=True); "
            "import time; time.sleep(300)")
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    child = int(parent.stdout.readline())
    assert _alive(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=10)
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child)


def test_bad_set_ups_are_one_line_each(tmp_path, monkeypatch):
    import socket

    from promptevo.llms.llama_server import LlamaCppLLM, LlamaServer, ServerSettings

    with pytest.raises(UserError, match="does not exist"):
        LlamaCppLLM(LLMConfig(backend="llamacpp", model=str(tmp_path / "missing.gguf")))
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"not a gguf at all" * 100)
    with pytest.raises(UserError, match="not a GGUF file"):
        LlamaCppLLM(LLMConfig(backend="llamacpp", model=str(corrupt)))
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * 64)
    with pytest.raises(UserError, match="could not serve truncated.gguf"):
        LlamaCppLLM(LLMConfig(backend="llamacpp", model=str(truncated)))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        from promptevo.llms.backends import resolve_local_model

        folder, gguf = resolve_local_model(CONFIG)
        with pytest.raises(UserError, match=f"cannot listen on 127.0.0.1:{port}"):
            LlamaServer(Path(folder) / gguf, ServerSettings(port=port)).start()
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "xllamacpp" else real_find_spec(name, *a))
    with pytest.raises(UserError, match="pip install xllamacpp"):
        LlamaServer(corrupt).start()


def test_structured_replies_follow_each_roles_schema_and_reach_the_parser_as_text():
    """With --llm-structured the server constrains the reply to the role's JSON schema (llama.cpp's
    grammar); the parser gets it in its text form."""
    from promptevo.llms.parsing import gradient_outcome, parse_gradient
    from promptevo.llms.templates import template
    from promptevo.optimise.critic import CritiqueExample, Examples
    from promptevo.registry import build_llm

    fields = {"instruction": "Add the light.", "n": 2, "examples": Examples([CritiqueExample("a fox", "a fox, flat", 1.0, "a fox, golden hour", 2.0)])}
    llm = build_llm(LLMConfig(backend="llamacpp", model="smollm2", max_new_tokens=24, structured=True))
    try:
        [reply] = llm.complete([Request("gradient", template("gradient").messages(**fields), fields)], seed=2)
    finally:
        llm.close()
    assert reply.ok and not reply.text.lstrip().startswith("{")
    items = parse_gradient(reply.text)
    assert items and gradient_outcome(reply.text, items) == "ok" and reply.text.startswith("Inference 1:")


def test_schemas_turn_replies_into_text_and_salvage_cut_ones():
    from promptevo.llms.schemas import SCHEMAS, as_text, response_format

    assert set(SCHEMAS) >= {"generator", "gradient", "modifier", "merge", "objective_agent"}
    assert response_format("gradient")["json_schema"]["schema"] == SCHEMAS["gradient"] and response_format("nope") is None
    assert as_text("generator", '{"prompt": "a fox, \\"golden\\" light"}') == 'a fox, "golden" light'
    assert as_text("modifier", '{"instruction": "Name the light.') == "<instruction>Name the light.</instruction>"  # cut off
    cut = '{"critiques": [{"inference": "flat", "improvement": "add light"}, {"inference": "dull", "improvement": "add co'
    assert as_text("gradient", cut) == "Inference 1: flat\nImprovement 1: add light"  # the unfinished pair is dropped
    assert as_text("generator", "plain text") == "plain text" and as_text("retouch_planner", "{}") == "{}"
