"""The llama.cpp server promptevo starts and owns (the xllamacpp wheel serving SmolLM2's GGUF):
it answers through the OpenAI-compatible client, is restarted when it dies mid-run, never
outlives promptevo (SIGKILL included), and bad set-ups are one line each."""

import importlib.util
import json
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


def _photo():
    """A real photograph (scikit-image's coffee), downscaled, as a [1, 3, H, W] batch in [0, 1]."""
    import skimage.data
    import torch

    image = torch.from_numpy(skimage.data.coffee()[::4, ::4].copy()).permute(2, 0, 1).float() / 255
    return image[None]


def test_structured_replies_follow_each_roles_schema_and_reach_the_parser_as_text():
    """With --llm-structured the server constrains the reply to the role's JSON schema (llama.cpp's
    grammar); the parser gets it in its text form."""
    from promptevo.llms.parsing import gradient_outcome, parse_gradient
    from promptevo.llms.templates import template
    from promptevo.optimise.critic import CritiqueExample, Examples
    from promptevo.registry import build_llm
    from promptevo.retouch.planner import plan_with
    from promptevo.rewards.measures import describe

    fields = {"instruction": "Add the light.", "n": 2, "examples": Examples([CritiqueExample("a fox", "a fox, flat", 1.0, "a fox, golden hour", 2.0)])}
    llm = build_llm(LLMConfig(backend="llamacpp", model="smollm2", max_new_tokens=24, structured=True))
    try:
        [reply] = llm.complete([Request("gradient", template("gradient").messages(**fields), fields)], seed=2)
        [(plan, meta)] = plan_with(llm, describe(_photo()), seed=2)
    finally:
        llm.close()
    assert reply.ok and not reply.text.lstrip().startswith("{")
    items = parse_gradient(reply.text)
    assert items and gradient_outcome(reply.text, items) == "ok" and reply.text.startswith("Inference 1:")
    # the planner's plan arrives as the JSON list its parser reads; the plan's own validation
    # (operation names, value ranges, stage order) still decides whether it runs
    assert isinstance(json.loads(meta["reply"] if "reply" in meta else "[]"), list)
    assert meta["status"] in ("ok", "malformed") and (plan is not None) == (meta["status"] == "ok")


def test_schemas_turn_replies_into_text_and_salvage_cut_ones():
    import promptevo.retouch.planner  # noqa: F401  (registers the planner's schema)
    from promptevo.llms.schemas import SCHEMAS, as_text, response_format

    assert SCHEMAS["retouch_planner"]["properties"]["plan"]["items"]["properties"]["op"]["enum"][0] == "blacks"
    assert set(SCHEMAS) >= {"generator", "gradient", "modifier", "merge", "objective_agent", "retouch_planner"}
    assert response_format("gradient")["json_schema"]["schema"] == SCHEMAS["gradient"] and response_format("nope") is None
    assert as_text("generator", '{"prompt": "a fox, \\"golden\\" light"}') == 'a fox, "golden" light'
    assert as_text("modifier", '{"instruction": "Name the light.') == "<instruction>Name the light.</instruction>"  # cut off
    cut = '{"critiques": [{"inference": "flat", "improvement": "add light"}, {"inference": "dull", "improvement": "add co'
    assert as_text("gradient", cut) == "Inference 1: flat\nImprovement 1: add light"  # the unfinished pair is dropped
    assert as_text("generator", "plain text") == "plain text" and as_text("retouch_planner", "{}") == "{}"
    plan = '{"plan": [{"op": "exposure", "value": 0.5, "reason": "dark"}, {"op": "contrast", "value": 0.2, "rea'
    assert json.loads(as_text("retouch_planner", plan)) == [{"op": "exposure", "value": 0.5, "reason": "dark"}]  # cut: finished steps
    assert as_text("retouch_planner", '{"plan": []}') == "[]"  # nothing to do is an answer


def _kill_at(llm, role: str) -> dict:
    """Kill the server just before the second request of the run's first `role` batch leaves
    (requests go one at a time to one slot): mid-batch, with one reply of it already in."""
    client, seen = llm._client, {"role": None, "at": None, "batch": 0}
    original, batch = client._one, client.complete

    def complete(requests, **kw):
        seen["pos"], seen["size"] = 0, len(requests)
        return batch(requests, **kw)

    def one(messages, temperature, seed, role_=None):
        seen["pos"] += 1
        if seen["role"] is None and role_ == role and seen["pos"] == 2 and seen["size"] > 2:
            seen["role"], seen["at"], seen["batch"] = role_, seen["pos"], seen["size"]
            llm.server.proc.send_signal(signal.SIGKILL)
            llm.server.proc.wait(timeout=10)
        return original(messages, temperature, seed, role_)

    client._one, client.complete = one, complete
    return seen


def test_a_server_killed_mid_batch_in_a_run_loses_and_duplicates_nothing(tmp_path, tiny, evaluator):
    """A whole tiny optimisation through the real server, three ways: straight; with the server
    SIGKILLed mid-batch (started again, the failed requests retried at their seeds); and with
    the server killed and not startable (the run stops, then resumes). All three end with the same
    rewrites, instructions and decisions, one logged call per request."""
    from dataclasses import replace

    from promptevo.optimise.optimizer import Optimizer
    from promptevo.optimise.run_config import OptimizeConfig, create_run
    from promptevo.storage.repository import RunRepository
    from promptevo.storage.store import Store

    from .test_reliability import counts, plans

    config = OptimizeConfig(rounds=2, batch_size=2)
    prompts = ["a waterfall", "a samurai", "a lighthouse at night"]
    llm_config = replace(tiny.llm, max_retries=1, max_new_tokens=48)

    def outcome(store, run_id):
        rows = store.conn.execute("SELECT round, instruction_id, prompt_id, text FROM rewrites WHERE run_id = ? "
                                  "ORDER BY round, instruction_id, prompt_id", (run_id,)).fetchall()
        calls = RunRepository(store).llm_calls(run_id)
        return {"counts": counts(store, run_id), "plans": plans(store, run_id), "rewrites": [tuple(r) for r in rows],
                "instructions": [i["text"] for i in RunRepository(store).instructions(run_id)],
                "calls": sorted((c["role"], c["response"]) for c in calls if c["error"] is None),
                "failed": [c for c in calls if c["error"] is not None]}

    def run(db, kill_at=None, restart_fails=False):
        with Store(db) as store:
            run_id = create_run(store, tiny, config, prompts)
            llm = build_llm(llm_config)
            try:
                seen = _kill_at(llm, kill_at) if kill_at else {}
                if restart_fails:
                    def no_restart():
                        raise UserError("the llama.cpp server could not be started again")
                    llm.server.restart = no_restart
                    with pytest.raises(UserError, match="could not be started again"):
                        Optimizer(store, run_id, llm=llm, evaluator=evaluator).run_all()
                    llm.close()
                    llm = build_llm(llm_config)
                Optimizer(store, run_id, llm=llm, evaluator=evaluator).run_all()
                starts = llm.server.starts
            finally:
                llm.close()
            return outcome(store, run_id), seen, starts

    from promptevo.registry import build_llm

    straight, _, _ = run(tmp_path / "straight.db")
    restarted, seen, starts = run(tmp_path / "restarted.db", kill_at="generator")
    assert seen["role"] == "generator" and seen["batch"] > 2 and starts == 2  # killed inside a batch, started again
    resumed, seen2, _ = run(tmp_path / "resumed.db", kill_at="generator", restart_fails=True)
    assert seen2["role"] == "generator"
    assert not straight["failed"] and not restarted["failed"] and not resumed["failed"]
    for got in (restarted, resumed):
        assert got["counts"] == straight["counts"] and got["plans"] == straight["plans"]
        assert got["rewrites"] == straight["rewrites"] and got["instructions"] == straight["instructions"]
        assert got["calls"] == straight["calls"]  # nothing lost, nothing asked twice into the log


def _server_children(pid: int) -> list[int]:
    """The llama.cpp server processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().split(") ")[-1].split()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat[1]) == pid and b"llama_child" in cmdline:
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_of_a_run_stop_it_cleanly_and_the_server_with_it(tmp_path, sig, code):
    """`promptevo optimize` on the tiny profile, stopped once its server is up: one line, the
    exit code of the signal, and no server left."""
    proc = subprocess.Popen([sys.executable, "-m", "promptevo", "optimize", "a waterfall", "a fox", "a castle", "--rounds", "3",
                             "--db", str(tmp_path / "run.db")], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline, children = time.monotonic() + 120, []
    while not children and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        children = _server_children(proc.pid)
    assert children, "the run never started its llama.cpp server"
    time.sleep(2.0)  # into the run
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr[-2000:]
    assert "Traceback" not in stderr
    deadline = time.monotonic() + 10
    while any(_alive(c) for c in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(c) for c in children)
