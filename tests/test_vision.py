"""The vision paths: the tiny random LLaVA served through the OpenAI protocol (images in, text
and logprobs out), the alignment rewards (DSG questions, VQAScore) against the project's test
server scripted as a VLM (their arithmetic, cache and faults), and the critic that sees, end to
end in a tiny optimisation with `hps=1,dsg=1`. Offline these prove the plumbing, not the
judgement: the tiny VLM's answers are noise."""

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from promptevo.cli.main import _register_subcommands, app
from promptevo.config import LLMConfig, ScorerConfig
from promptevo.llms.backends import OpenAIChatLLM
from promptevo.llms.calls import ask
from promptevo.rewards.alignment import (
    VQA_QUESTION,
    AlignmentCache,
    QuestionReward,
    VQAScore,
    dsg_score,
    p_yes,
    parse_questions,
)

from .openai_server import ScriptedServer

runner = CliRunner()
_register_subcommands()
QUESTIONS = {"questions": [{"id": 1, "question": "Is there a fox?", "depends": []},
                           {"id": 2, "question": "Is the fox red?", "depends": [1]},
                           {"id": 3, "question": "Is there snow?", "depends": []},
                           {"id": 4, "question": "Is it broken?", "depends": [9, 4]}]}


def asked(body) -> str:
    """The text of a request's last message (a vision request's first part)."""
    content = body["messages"][-1]["content"]
    return content if isinstance(content, str) else content[0]["text"]


def images(n, seed=0):
    return torch.rand(n, 3, 48, 48, generator=torch.Generator().manual_seed(seed))


def test_tiny_vlm_answers_images_with_logprobs_and_the_log_keeps_hashes(store):
    from promptevo.hashing import sha256_hex
    from promptevo.images import png_bytes, to_uint8
    from promptevo.llms.vlm_server import LlavaModel, VLMServer, tiny_vlm_folder

    pics = images(2)
    with VLMServer(LlavaModel(tiny_vlm_folder())) as server:
        llm = OpenAIChatLLM(LLMConfig(backend="openai", model="tiny-llava", base_url=server.url, max_new_tokens=6,
                                      temperature=0.0, max_retries=0), top_logprobs=5)
        [call] = ask(llm, "vqa_answer", [{"question": "Is there a fox?"}], role="vqa", store=store, run_id=None,
                     images=[[pics[0], pics[1]]], seed=0)
        [again] = ask(llm, "vqa_answer", [{"question": "Is there a fox?"}], role="vqa", images=[[pics[0], pics[1]]], seed=0)
        [other] = ask(llm, "vqa_answer", [{"question": "Is there a fox?"}], role="vqa", images=[[pics[1], pics[0]]], seed=0)
    c = call.completion
    assert c.ok and c.completion_tokens and len(c.top_logprobs) == 5
    assert all(lp <= 0 for _, lp in c.top_logprobs) and sum(math.exp(lp) for _, lp in c.top_logprobs) <= 1 + 1e-6
    assert again.completion.text == c.text  # greedy: the same images give the same answer
    assert other.completion.top_logprobs != c.top_logprobs  # the images reach the model
    logged = json.loads(store.one("SELECT messages_json FROM llm_calls WHERE id = ?", [call.call_id])["messages_json"])
    urls = [p["image_url"]["url"] for p in logged[-1]["content"] if p["type"] == "image_url"]
    assert urls == ["sha256:" + sha256_hex(png_bytes(to_uint8(pics[i : i + 1])[0])) for i in (0, 1)]
    assert "base64" not in json.dumps(logged)


def test_question_parsing_and_the_dependency_rule():
    questions, how = parse_questions("Sure!\n" + json.dumps(QUESTIONS), "a red fox in the snow")
    assert how == "ok" and [q["id"] for q in questions] == [1, 2, 3, 4]
    assert questions[3]["depends"] == []  # a missing parent and itself are dropped
    lines, how = parse_questions("1. Is there a fox?\n2. Is it red?\nnot a question", "a fox")
    assert how == "repaired" and [q["question"] for q in lines] == ["Is there a fox?", "Is it red?"]
    none, how = parse_questions("no idea", "a fox")
    assert how == "fallback" and none[0]["question"] == VQA_QUESTION.format(prompt="a fox")
    p = {"Is there a fox?": 0.2, "Is the fox red?": 0.9, "Is there snow?": 0.8, "Is it broken?": 0.6}
    assert dsg_score(questions, p) == pytest.approx((0.2 + 0.0 + 0.8 + 0.6) / 4)  # no fox: "red" counts 0
    p["Is there a fox?"] = 0.7
    assert dsg_score(questions, p) == pytest.approx((0.7 + 0.9 + 0.8 + 0.6) / 4)
    assert p_yes("whatever", [("Yes", math.log(0.3)), ("no", math.log(0.1)), ("maybe", math.log(0.5))]) == (pytest.approx(0.75), "ok")
    assert p_yes("No, it is not.", None) == (0.0, "ok")
    assert p_yes("perhaps", None) == (0.5, "fallback")


@pytest.fixture
def vlm_server(monkeypatch):
    with ScriptedServer() as server:
        monkeypatch.setenv("PROMPTEVO_VLM_BASE_URL", server.url)
        monkeypatch.setenv("PROMPTEVO_VLM_MODEL", "scripted-vlm")
        yes = {"Is there a fox?": 0.9, "Is the fox red?": 0.8, "Is there snow?": 0.3, "Is it broken?": 0.1}

        def answer(body):
            text = asked(body)
            return json.dumps(QUESTIONS) if text.startswith("Description:") else ("yes" if "fox" in text else "no")

        server.answer = answer
        server.logprobs = lambda body: [("yes", math.log(yes.get(asked(body).removesuffix(" Answer yes or no."), 0.5))),
                                        ("no", math.log(1 - yes.get(asked(body).removesuffix(" Answer yes or no."), 0.5)))]
        server.config = ScorerConfig(version="v1", arch="vlm", kind="dsg", device="cpu")
        yield server


def test_dsg_asks_once_per_prompt_and_once_per_image_and_question(vlm_server, tmp_path):
    cache = AlignmentCache(tmp_path / "alignment.sqlite")
    reward = QuestionReward(vlm_server.config, cache=cache)
    pics = images(3)
    scores = reward.score(pics, ["a red fox in the snow", "a red fox in the snow", "a red fox in the snow"])
    expected = (0.9 + 0.8 + 0.3 + 0.1) / 4
    assert scores == pytest.approx([expected] * 3)
    n = len(vlm_server.requests)
    assert n == 1 + 3 * 4  # one decomposition, then one answer per (image, question)
    answers = [r["body"] for r in vlm_server.requests[1:]]
    assert all(b["logprobs"] and b["top_logprobs"] == 5 and b["model"] == "scripted-vlm" for b in answers)
    assert all(sum(p["type"] == "image_url" for p in b["messages"][-1]["content"]) == 1 for b in answers)
    assert reward.score(pics[:2], ["a red fox in the snow"] * 2) == pytest.approx([expected] * 2)
    assert len(vlm_server.requests) == n  # all cached
    stats = cache.stats()
    assert stats["questions"] == [{"model": "scripted-vlm", "rows": 1, "parsed": 1}]
    assert stats["answers"] == [{"model": "scripted-vlm", "rows": 12, "parsed": 12}]
    # a new reward object (a later run) reuses the questions and the answers
    assert QuestionReward(vlm_server.config, cache=cache).score(pics[:1], ["a red fox in the snow"]) == pytest.approx([expected])
    assert len(vlm_server.requests) == n


def test_vqa_score_from_logprobs_then_text_when_the_server_refuses_them(vlm_server, tmp_path):
    cache = AlignmentCache(tmp_path / "alignment.sqlite")
    vlm_server.logprobs = lambda body: [("Yes", math.log(0.6)), ("No", math.log(0.2))]
    reward = VQAScore(ScorerConfig(version="v1", arch="vlm", kind="vqa", device="cpu"), cache=cache)
    assert reward.name == "vqa-v1"
    assert reward.score(images(1), ["a fox"]) == pytest.approx([0.75])
    assert "Does this image show" in asked(vlm_server.requests[-1]["body"])
    vlm_server.refuse_logprobs = True  # a server without logprobs: the answer's word counts
    assert reward.score(images(1, seed=5), ["a fox"]) == [1.0]
    assert reward.score(images(1, seed=6), ["a cat"]) == [0.0]
    vlm_server.behaviours += ["500", "500"]  # failed twice, then answered: retried, not cached as a failure
    vlm_server.answer = lambda body: "maybe"
    assert reward.score(images(1, seed=7), ["a dog"]) == [0.5]
    assert cache.stats()["answers"][0]["rows"] == 4


def test_an_unparseable_decomposition_falls_back_to_one_question(vlm_server, tmp_path):
    cache = AlignmentCache(tmp_path / "alignment.sqlite")
    vlm_server.answer = lambda body: "I cannot do that." if asked(body).startswith("Description:") else "yes"
    reward = QuestionReward(vlm_server.config, cache=cache)
    assert reward.score(images(1), ["a lighthouse"]) == pytest.approx([0.5])  # logprobs say 0.5 for an unknown question
    [q] = cache.prompt_questions("a lighthouse")
    assert q["parsed"] == "fallback" and q["question"] == VQA_QUESTION.format(prompt="a lighthouse") and q["answers"] == 1


def test_critic_that_sees_in_a_tiny_run_with_an_alignment_objective(tmp_path, tiny):
    """The Done-when path: a tiny optimisation with the critic shown images and `hps=1,dsg=1`,
    offline (tiny LLaVA in-process); critiques, questions, answers and scores stored and shown."""
    import dataclasses

    from promptevo.cli.optimize import _with_objective
    from promptevo.evaluation.components import build_components
    from promptevo.llms.backends import ScriptedLLM
    from promptevo.optimise.optimizer import Optimizer
    from promptevo.optimise.run_config import OptimizeConfig, create_run
    from promptevo.rewards.alignment import AlignmentCache
    from promptevo.storage.repository import RunRepository
    from promptevo.storage.store import Store

    from .scripted import script

    prof, spec = _with_objective(tiny, "hps=1,dsg=1", [])
    config = OptimizeConfig(rounds=2, batch_size=2, critic_vision=True, objective=spec, select_prompts=2)
    prompts = ["a waterfall", "a samurai", "a lighthouse at night", "a fox in the snow", "an old library", "a rainy street"]
    db = tmp_path / "run.db"
    llm = ScriptedLLM(script)
    with Store(db) as store:
        run_id = create_run(store, prof, config, prompts)
        summary = Optimizer(store, run_id, llm=llm, evaluator=build_components(prof, llm=False).evaluator).run_all()
        repo = RunRepository(store)
        critiques = repo.events(run_id, "vision_critique")
        assert [c["round"] for c in critiques] == [1, 2]
        hashes = set(repo.content_hashes([t.image_id for t in repo.trials(run_id)]).values())
        for c in critiques:
            assert 2 <= len(c["data"]["images"]) <= 4 and {i["content_hash"] for i in c["data"]["images"]} <= hashes
            call = store.one("SELECT role, model, messages_json FROM llm_calls WHERE id = ?", [c["data"]["llm_call_id"]])
            assert call["role"] == "gradient" and call["model"] == "tiny-llava" and "base64" not in call["messages_json"]
        assert "gradient" not in llm.roles()  # the text critic was not asked: the one that sees was
        assert all({"hps-tiny", "dsg-tiny"} <= set(t.scores) for t in repo.trials(run_id))
        assert all(0 <= t.scores["dsg-tiny"] <= 1 for t in repo.trials(run_id))
        assert {row["arm"] for row in summary["heldout_by_reward"]["dsg-tiny"]} >= {"best", "naive"}
    cache = AlignmentCache()
    assert cache.prompt_questions("a waterfall") or cache.prompt_questions("a samurai")
    cache.close()
    shown = runner.invoke(app, ["runs", "show", run_id, "--db", str(db)], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    assert shown.exit_code == 0 and "the critic saw" in shown.stdout and "dsg-tiny" in shown.stdout
    listed = runner.invoke(app, ["alignment", "a waterfall", "--json"])
    assert listed.exit_code == 0
    data = json.loads(listed.stdout)
    assert any(r["model"] == "tiny-llava" and r["rows"] >= 1 for r in data["questions"]) and data["prompts"]["a waterfall"]
    assert dataclasses.asdict(config)["critic_vision"] is True


def test_alignment_rewards_serve_as_objective_terms_and_guards():
    from promptevo.rewards.objective import weighted_objective

    configs, spec = weighted_objective("hps=1", ["dsg"], scored={"hps": "hps-tiny"}, tiny=True, device="cpu")
    assert configs["dsg"].kind == "dsg" and configs["dsg"].version == "tiny" and spec["guards"] == {"dsg-tiny": 0.1}
    configs, spec = weighted_objective("hps=1,vqa=2", [], scored={"hps": "hps-tiny"}, tiny=True, device="cpu")
    assert set(spec["weights"]) == {"hps-tiny", "vqa-tiny"} and spec["scales"]["vqa-tiny"] == 0.1
