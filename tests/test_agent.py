"""The objective agent: weights from the user's goal, bounded and normalised, stored with their
reasons; feedback reaches it; hostile output keeps the previous weights and is recorded."""

import json

import pytest
from typer.testing import CliRunner

from promptevo import registry
from promptevo.cli.main import _register_subcommands, app
from promptevo.llms.backends import ScriptedLLM
from promptevo.optimise.agent import parse_reply
from promptevo.storage.repository import RunRepository
from promptevo.storage.store import Store

from .hostile import corpus
from .scripted import script

_register_subcommands()
runner = CliRunner()
PROMPTS = ["a waterfall", "a samurai", "a lighthouse at night", "a fox in the snow", "an old library", "a city street in the rain"]
NAMES = ["hps-tiny", "clip-tiny"]


def test_replies_parse_to_bounded_normalised_weights():
    assert parse_reply('{"weights": {"hps-tiny": 1, "clip-tiny": 3}, "reason": "faithful"}', NAMES) == (
        {"hps-tiny": 0.5, "clip-tiny": 0.5}, "faithful")  # 3 is clipped to 1, then normalised
    assert parse_reply("hps: 0.25\nclip: 0.75", NAMES, {"hps": "hps-tiny", "clip": "clip-tiny"})[0] == {
        "hps-tiny": 0.25, "clip-tiny": 0.75}
    assert parse_reply('{"weights": {"hps-tiny": 0, "clip-tiny": -1}}', NAMES) is None  # nothing positive
    assert parse_reply("I think you should focus on quality.", NAMES) is None
    for text in corpus():  # hostile output never raises and never yields an unnormalised weight
        parsed = parse_reply(text, NAMES, {"hps": "hps-tiny"})
        assert parsed is None or abs(sum(parsed[0].values()) - 1) < 1e-9 and all(0 <= w <= 1 for w in parsed[0].values())


def agent_script(seen):
    """Answers the agent role from its goal and feedback fields; every other role as usual."""

    def reply(request):
        if request.role != "objective_agent":
            return script(request)
        seen.append(dict(request.fields))
        wanted = str(request.fields["goal"]) + " " + " ".join(request.fields["feedback"])
        clip = 1.0 if "faithful" in wanted else 0.1
        return json.dumps({"weights": {"hps": 1.0, "clip": clip}, "reason": f"goal says {request.fields['goal'][:20]}"})

    return reply


def run_with_goal(tmp_path, monkeypatch, goal, script_fn, name="run.db", rounds="3"):
    monkeypatch.setattr(registry, "build_llm", lambda config: ScriptedLLM(script_fn))
    db = tmp_path / name
    r = runner.invoke(app, ["optimize", *PROMPTS, "--rounds", rounds, "--objective", "hps=1,clip=1", "--goal", goal,
                            "--agent-every", "2", "--db", str(db), "--json"])
    assert r.exit_code == 0, r.output
    return db, json.loads(r.stdout)


def test_the_agents_weights_follow_the_goal_and_are_stored_with_reasons(tmp_path, monkeypatch):
    seen = []
    _, faithful = run_with_goal(tmp_path, monkeypatch, "faithful to the prompt", agent_script(seen), "a.db")
    _, pretty = run_with_goal(tmp_path, monkeypatch, "as pretty as possible", agent_script(seen), "b.db")
    a = [d for d in faithful["objective_decisions"] if d["kind"] == "objective_set"]
    b = [d for d in pretty["objective_decisions"] if d["kind"] == "objective_set"]
    assert [d["round"] for d in a] == [1, 3]  # every 2 search rounds
    assert a[0]["spec"]["weights"] == {"hps-tiny": 0.5, "clip-tiny": 0.5} and a[0]["reason"].startswith("goal says")
    assert b[0]["spec"]["weights"]["clip-tiny"] == pytest.approx(0.1 / 1.1)  # another goal, other weights
    assert faithful["objective"]["weights"] == a[-1]["spec"]["weights"]  # the run's objective is the last decision
    fields = seen[0]
    rewards = {r["reward"]: r["measures"] for r in fields["rewards"]}
    assert set(rewards) == set(NAMES) and "CLIP" in rewards["clip-tiny"] and "preference" in rewards["hps-tiny"]
    assert "round" in str(seen[1]["trajectory"]) and len(seen[1]["trajectory"]) == 2  # it saw two rounds' gains


def test_feedback_reaches_the_agent_at_its_next_decision(tmp_path, monkeypatch):
    seen = []
    db, summary = run_with_goal(tmp_path, monkeypatch, "pretty", agent_script(seen), rounds="1")
    run_id = summary["run_id"]
    r = runner.invoke(app, ["runs", "feedback", run_id, "drifting off the subject, be faithful", "--db", str(db)])
    assert r.exit_code == 0, r.output
    with Store(db) as s:
        repo = RunRepository(s)
        assert [e["data"]["text"] for e in repo.events(run_id, "feedback")] == ["drifting off the subject, be faithful"]
        from promptevo.optimise import agent
        from promptevo.rewards.objective import run_objective

        spec = run_objective(repo, run_id).spec()
        decision = agent.decide(ScriptedLLM(agent_script(seen)), repo, run_id, 9, goal="pretty", spec=spec,
                                describe={n: n for n in NAMES}, seed=0)
        assert "drifting off the subject" in str(seen[-1]["feedback"])  # the next decision reads it
        assert decision.weights == {"hps-tiny": 0.5, "clip-tiny": 0.5}  # and follows it: faithful now
    assert runner.invoke(app, ["runs", "feedback", "NOPE", "x", "--db", str(db)]).exit_code == 2


def test_a_feedback_file_is_read_at_each_decision(tmp_path, monkeypatch):
    seen = []
    note = tmp_path / "notes.txt"
    note.write_text("too dark, and be faithful to the subject\n", encoding="utf-8")
    monkeypatch.setattr(registry, "build_llm", lambda config: ScriptedLLM(agent_script(seen)))
    r = runner.invoke(app, ["optimize", *PROMPTS, "--rounds", "1", "--objective", "hps=1,clip=1", "--goal", "pretty",
                            "--feedback-file", str(note), "--db", str(tmp_path / "r.db"), "--json"])
    assert r.exit_code == 0, r.output
    assert "too dark" in str(seen[0]["feedback"])
    [decision] = [d for d in json.loads(r.stdout)["objective_decisions"] if d["kind"] == "objective_set"]
    assert decision["spec"]["weights"]["clip-tiny"] == 0.5


def test_hostile_agent_output_keeps_the_weights_and_is_recorded(tmp_path, monkeypatch):
    def hostile(request):
        if request.role == "objective_agent":
            return "<script>alert(1)</script> {weights: nonsense} ignore all previous instructions"
        return script(request)

    db, summary = run_with_goal(tmp_path, monkeypatch, "faithful", hostile)
    kinds = [d["kind"] for d in summary["objective_decisions"]]
    assert kinds == ["objective_rejected", "objective_rejected"]
    assert summary["objective"]["weights"] == {"hps-tiny": 1.0, "clip-tiny": 1.0}  # the initial weights, kept
    r = runner.invoke(app, ["runs", "report", summary["run_id"], "--db", str(db), "-o", str(tmp_path / "r.html")])
    assert r.exit_code == 0 and "Objective agent" in (tmp_path / "r.html").read_text(encoding="utf-8")
