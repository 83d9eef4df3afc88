"""What long runs meet, tested the way it happens: SIGKILL at random moments of every phase,
a real HTTP LLM server that misbehaves, hostile LLM output, bad input, and a canary API key.
Each group reports its count in the test output (`-rP` shows them)."""

import hashlib
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from promptevo.cli.main import _register_subcommands, app
from promptevo.config import LLMConfig
from promptevo.llms.backends import LLMUnavailable, OpenAIChatLLM, ScriptedLLM
from promptevo.llms.parsing import (
    clean_text,
    parse_gradient,
    parse_instruction,
    parse_rewrite,
)
from promptevo.llms.templates import template
from promptevo.optimise.optimizer import Optimizer
from promptevo.optimise.run_config import OptimizeConfig, create_run
from promptevo.optimise.summary import round_rewards
from promptevo.storage.repository import RunRepository
from promptevo.storage.store import Store

from .hostile import corpus
from .openai_server import ScriptedServer
from .scripted import pick, script

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ["a waterfall", "a samurai", "a lighthouse at night", "a fox in the snow", "an old library", "a city street in the rain"]
PHASES = ["planning", "rewriting", "rendering and scoring", "gradient", "round finished", "selection", "held-out evaluation"]

_register_subcommands()
runner = CliRunner()


# -- 1. crash and resume ------------------------------------------------------------------------


def counts(store, run_id):
    c = RunRepository(store).counts(run_id)
    return {k: c[k] for k in ("trials", "trial_scores", "scored_images", "rounds", "instructions", "rewrites", "gradients")}


def plans(store, run_id):
    return [(r["round"], r["phase"], r["plan_json"]) for r in RunRepository(store).rounds(run_id)]


def recomputed_rewards(store, run_id):
    """Arm rewards straight from the stored scores, with none of the objective's code: the plain
    mean of (arm - naive) HPS per search round."""
    rows = RunRepository(store).trials(run_id, phase="search", finished=True)
    naive = {(r.round, r.prompt_id, r.seed): r.scores["hps-tiny"] for r in rows if r.arm == "naive"}
    gains = {}
    for r in rows:
        if r.arm != "naive":
            gains.setdefault((r.instruction_id, r.round), []).append(r.scores["hps-tiny"] - naive[(r.round, r.prompt_id, r.seed)])
    return {k: sum(v) / len(v) for k, v in gains.items()}


PHASES = ("planning", "rewriting", "rendering and scoring", "gradient", "round finished", "selection", "held-out evaluation")


def test_sigkill_in_every_phase_then_resume_matches_an_uninterrupted_run(tmp_path, tiny, evaluator, record_property):
    config = OptimizeConfig(rounds=4, batch_size=2)
    with Store(tmp_path / "straight.db") as straight:
        rid = create_run(straight, tiny, config, PROMPTS)
        expected = Optimizer(straight, rid, llm=ScriptedLLM(script), evaluator=evaluator).run_all()
        expected_counts, expected_plans = counts(straight, rid), plans(straight, rid)

    db = tmp_path / "killed.db"
    with Store(db) as s:
        run_id = create_run(s, tiny, config, PROMPTS)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rng = random.Random(7)
    kills, killed_in, finished = 0, dict.fromkeys(PHASES, 0), False
    for attempt in range(40):
        proc = subprocess.Popen([sys.executable, "-m", "tests.loop_driver", str(db), run_id], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        # Kill at the next stage of a phase hit least so far, a random 0-300 ms into it: every
        # phase (the five of a round, the selection pass, the held-out evaluation) is hit, each
        # process start counts, and the run moves on between kills.
        for line in proc.stdout:
            if line.strip() == "done":
                finished = True
            if kills >= 10 or not line.startswith("stage "):
                continue
            stage = line[len("stage "):].split("|")[0]
            if killed_in[stage] == min(killed_in.values()):
                time.sleep(rng.uniform(0.0, 0.3))
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    kills += 1
                    killed_in[stage] += 1
                break
        proc.stdout.close()
        proc.wait(timeout=300)
        if finished:
            break
    record_property("kills", kills)
    print(f"SIGKILLs survived: {kills}, by phase: {killed_in}")
    assert kills >= 7 and min(killed_in.values()) >= 1 and finished  # every phase hit at least once

    with Store(db) as s:
        assert s.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        got = Optimizer(s, run_id, llm=ScriptedLLM(script), evaluator=evaluator).run_all()
        assert counts(s, run_id) == expected_counts
        assert plans(s, run_id) == expected_plans  # the same decisions, round by round
        trials = RunRepository(s).trials(run_id)
        assert all(set(t.scores) == {"hps-tiny"} for t in trials)  # one score per reward, no more
        for image_id in {t.image_id for t in trials}:
            image = s.image(image_id)
            path = s.image_path(image)
            assert hashlib.sha256(path.read_bytes()).hexdigest() == image["content_hash"]  # none lost or torn
        stored = {(r["arm"], r["round"]): r["reward"] for r in round_rewards(RunRepository(s), run_id)}
        assert stored == pytest.approx(recomputed_rewards(s, run_id), abs=1e-9)
    assert got["best_instruction"]["text"] == expected["best_instruction"]["text"]
    # Scores may differ in the fourth decimal: a resumed run batches images differently, and
    # batched float arithmetic is not associative. Decisions (plans, best instruction) are equal.
    assert [r["score_mean"] for r in got["heldout"]] == pytest.approx([r["score_mean"] for r in expected["heldout"]], abs=0.01)


# -- 2. LLM server faults -----------------------------------------------------------------------


def server_llm(url, **kw):
    config = LLMConfig(backend="openai", model="test-model", base_url=url, timeout_s=1.0, max_retries=3,
                       max_concurrency=4, temperature=0.0, **kw)
    return OpenAIChatLLM(config, sleep=lambda s: None)


class RewriteServer(ScriptedServer):
    """Answers each role sensibly enough for a run to proceed."""

    def __init__(self):
        super().__init__(reply="A waterfall at dawn, mist, golden light, oil painting", slow_s=2.0)


def test_llm_server_faults_during_a_run_are_retried_recorded_and_resumable(tmp_path, tiny, evaluator, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    faults = ["slow", "429", "500", "malformed", "empty", "429", "500", "slow"]
    config = OptimizeConfig(rounds=2, batch_size=2, new_per_gradient=1)
    with Store(tmp_path / "run.db") as store:
        run_id = create_run(store, tiny, config, PROMPTS)
        with RewriteServer() as server:
            server.behaviours = list(faults)
            Optimizer(store, run_id, llm=server_llm(server.url), evaluator=evaluator).run_all()
            assert not server.behaviours  # every fault was served
        repo = RunRepository(store)
        retried = sum(c["attempts"] - 1 for c in repo.llm_calls(run_id))
        assert retried == len(faults)  # each fault cost exactly one retry, and each is on record
        assert repo.run(run_id)["status"] == "finished"

        # the server goes away mid-run: the run stops with a clear error, then resumes cleanly
        run2 = create_run(store, tiny, config, PROMPTS)
        with RewriteServer() as server:
            llm = server_llm(server.url)
        t0 = time.monotonic()
        with pytest.raises(LLMUnavailable, match="failed after retries"):
            Optimizer(store, run2, llm=llm, evaluator=evaluator).run_all()
        assert time.monotonic() - t0 < 60
        failed = [c for c in repo.llm_calls(run2) if c["error"] is not None]
        assert failed and all(f["attempts"] == 4 and "Connection" in f["error"] for f in failed)
        with RewriteServer() as server:
            summary = Optimizer(store, run2, llm=server_llm(server.url), evaluator=evaluator).run_all()
        assert summary["status"] == "finished"
        assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    print(f"LLM faults injected and retried in a run: {len(faults)} (+ server gone: {len(failed)} failed calls)")


@pytest.mark.parametrize("fault", ["401", "403", "404", "quota"])
def test_fatal_llm_errors_stop_a_run_fast_with_a_clear_message(tmp_path, monkeypatch, fault):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with RewriteServer() as server:
        server.behaviours = [fault] * 50
        t0 = time.monotonic()
        r = runner.invoke(app, ["optimize", "a waterfall", "a fox", "a castle", "--rounds", "1", "--llm-base-url", server.url,
                                "--llm-model", "test-model", "--db", str(tmp_path / "run.db")])
        elapsed = time.monotonic() - t0
        requests = len(server.requests)
    assert r.exit_code == 2, r.output
    assert "refused" in r.output and "runs resume" in r.output and "Traceback" not in r.output
    assert requests <= 4 and elapsed < 60  # no retries of a fatal error (one per concurrent request at most)


# -- 3. hostile output ---------------------------------------------------------------------------


HOSTILE = corpus()


def test_hostile_outputs_through_every_parser():
    assert len(HOSTILE) >= 200
    for text in HOSTILE:
        rewrite = parse_rewrite(text, "a waterfall")
        items = parse_gradient(text, limit=3)
        instruction = parse_instruction(text)
        for out in [rewrite.text, instruction or "", clean_text(text, 300), *(i.improvement for i in items)]:
            assert isinstance(out, str) and len(out) <= 1000
            out.encode("utf-8")  # no lone surrogates
            assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", out)
        assert rewrite.text  # never empty: falls back to the naive prompt
        assert len(items) <= 3
        # filled into a template, text stays inside its field: still exactly two messages
        messages = template("gradient").messages(instruction=text, examples=text, n=2)
        assert [m["role"] for m in messages] == ["system", "user"]
        assert messages[0]["content"] == template("gradient").system
    print(f"hostile outputs through every parser: {len(HOSTILE)}")


def _structured(role, text):
    """The replies a schema-following server could send with `text` in each of the role's string
    fields: whole, cut off halfway (the token limit), and the text bare (a server that ignored
    the schema)."""
    shaped = {"generator": {"prompt": text}, "modifier": {"instruction": text}, "merge": {"instruction": text},
              "gradient": {"critiques": [{"inference": text, "improvement": text}] * 2},
              "objective_agent": {"weights": {"hps-tiny": 0.5, text[:40]: 1}, "reason": text},
              "retouch_planner": {"plan": [{"op": "exposure", "value": 0.5, "reason": text}, {"op": text[:40], "value": 1, "reason": text}]}}[role]
    whole = json.dumps(shaped)
    return [whole, whole[: len(whole) // 2], text]


def test_hostile_outputs_through_the_structured_path():
    """Hostile text inside schema-shaped JSON (whole, cut off, or not JSON at all) goes through
    the structured path's conversion and then the role's own parser: data, never a crash."""
    from promptevo.llms.schemas import SCHEMAS, as_text
    from promptevo.optimise.agent import parse_reply as parse_weights
    from promptevo.retouch.plan import PlanError
    from promptevo.retouch.plan import parse_reply as parse_plan
    from promptevo.retouch.planner import plan_with  # noqa: F401  (registers the planner's schema)

    assert set(SCHEMAS) == {"generator", "gradient", "modifier", "merge", "objective_agent", "retouch_planner"}
    checked = 0
    for role in SCHEMAS:
        for text in HOSTILE:
            for reply in _structured(role, text):
                converted = as_text(role, reply)
                assert isinstance(converted, str)
                outs: list[str] = []
                if role == "generator":
                    rewrite = parse_rewrite(converted, "a waterfall")
                    assert rewrite.text
                    outs.append(rewrite.text)
                elif role == "gradient":
                    items = parse_gradient(converted, limit=3)
                    assert len(items) <= 3
                    outs += [i.improvement for i in items]
                elif role in ("modifier", "merge"):
                    outs.append(parse_instruction(converted) or "")
                elif role == "objective_agent":
                    parsed = parse_weights(converted, ["hps-tiny", "clip-tiny"])
                    assert parsed is None or abs(sum(parsed[0].values()) - 1) < 1e-9
                else:
                    try:
                        plan = parse_plan(converted)
                    except PlanError:
                        continue
                    assert plan.ops() in ((), ("exposure",))  # the hostile op never survives validation
                    outs += [s.reason for s in plan.steps]
                for out in outs:
                    assert len(out) <= 1000
                    out.encode("utf-8")  # no lone surrogates
                    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", out)
                checked += 1
    print(f"hostile outputs through the structured path: {checked} replies")


def test_structured_requests_carry_the_schema_and_a_server_without_it_gets_free_text(monkeypatch):
    from promptevo.registry import Request

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    reqs = [Request("modifier", [{"role": "user", "content": "improve"}])]
    with ScriptedServer(reply='{"instruction": "Name the light."}') as server:
        llm = server_llm(server.url, structured=True)
        [out] = llm.complete(reqs)
        assert out.ok and out.text == "<instruction>Name the light.</instruction>"
        assert server.requests[-1]["body"]["response_format"]["json_schema"]["name"] == "modifier"
        server.refuse_format, server.reply = True, "<instruction>Free text.</instruction>"
        [out] = llm.complete(reqs)
        assert out.ok and out.text == "<instruction>Free text.</instruction>" and out.attempts == 2
        assert "response_format" not in server.requests[-1]["body"]  # and it stays off for the next call
        [out] = llm.complete(reqs)
        assert out.attempts == 1 and not llm.structured


def test_hostile_outputs_through_a_whole_run_stay_data(tmp_path, tiny, evaluator, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pool = iter(range(10**9))

    def hostile(request):
        return HOSTILE[(next(pool) * 7919 + len(pick(request.messages[-1]["content"], HOSTILE))) % len(HOSTILE)]

    before = set(Path("/tmp").iterdir())
    with Store(tmp_path / "run.db") as store:
        run_id = create_run(store, tiny, OptimizeConfig(rounds=3, batch_size=3), PROMPTS)
        summary = Optimizer(store, run_id, llm=ScriptedLLM(hostile), evaluator=evaluator).run_all()
        assert summary["status"] == "finished"
        assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        calls = len(RunRepository(store).llm_calls(run_id))
    files = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    images = {f for f in files if f.startswith("run.db-artifacts/")}
    assert files - images <= {"run.db", "run.db-wal", "run.db-shm"}
    assert all(re.fullmatch(r"run\.db-artifacts/images/[0-9a-f]{2}/[0-9a-f]{64}\.png", f) for f in images)
    assert not [p for p in set(Path("/tmp").iterdir()) - before if "escape" in p.name or "passwd" in p.name]
    r = runner.invoke(app, ["runs", "report", run_id, "--db", str(tmp_path / "run.db"), "--output", str(tmp_path / "r.html")])
    assert r.exit_code == 0, r.output
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in html and "onerror=alert" not in html.replace("onerror=alert(1)&gt;", "")
    print(f"hostile outputs answered in a whole run: {calls} calls")


# -- 4. bad input --------------------------------------------------------------------------------


def _valid_db(path):
    with Store(path) as s:
        create_run(s, __import__("promptevo.config", fromlist=["PROFILES"]).PROFILES["tiny"], OptimizeConfig(), PROMPTS)
        s.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        s.conn.execute("PRAGMA journal_mode = DELETE")


def _corrupt(kind, path):
    _valid_db(path)
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    if kind == "header":
        data[:16] = b"NOT A DATABASE!!"
    elif kind == "truncated":
        data = data[: len(data) // 2 + 100]
    elif kind == "schema-page":
        data[100:page] = random.Random(1).randbytes(page - 100)
    elif kind == "data-page":
        start = page * (len(data) // page - 1)
        data[start + 8 : start + page] = bytes(page - 8)
        data[start : start + 8] = b"\x0d\xff\xff\xff\xff\xff\xff\xff"
    elif kind == "page-count":
        data[28:32] = (10**6).to_bytes(4, "big")
        data[92:96] = data[24:28]  # header claims a million pages the file does not hold
        data[page * 1 : page * 1 + 1] = b"\xff"
    path.write_bytes(bytes(data))


BAD_INPUTS = [
    ("empty prompt file", ["optimize", "--prompts", "{tmp}/empty.txt"], "no prompts"),
    ("blank-lines prompt file", ["optimize", "--prompts", "{tmp}/blank.txt"], "no prompts"),
    ("binary prompt file", ["optimize", "--prompts", "{tmp}/binary.txt"], "binary"),
    ("100 kB prompt in a file", ["optimize", "--prompts", "{tmp}/huge.txt"], "overlong"),
    ("100 kB prompt as an argument", ["optimize", "{huge}"], "characters; the limit"),
    ("prompt file missing", ["optimize", "--prompts", "{tmp}/nope.txt"], "does not exist"),
    ("unknown profile", ["optimize", "a fox", "--profile", "gigantic"], "unknown profile"),
    ("missing render weights", ["optimize", "a fox", "a cat", "--render-model", "/nonexistent/sd"], "does not exist"),
    ("missing HPS checkpoint", ["optimize", "a fox", "a cat", "--hps-checkpoint", "/nonexistent/hps.pt"], "does not exist"),
    ("missing LLM weights", ["optimize", "a fox", "a cat", "--llm-model", "/nonexistent/model.gguf"], "nonexistent"),
    ("read-only database", ["optimize", "a fox", "a cat", "--db", "{tmp}/readonly.db"], "read-only"),
    ("database is a folder", ["runs", "list", "--db", "{tmp}"], "folder"),
    ("corrupted header", ["runs", "list", "--db", "{tmp}/header.db"], "not a SQLite database"),
    ("truncated database", ["optimize", "a fox", "a cat", "--db", "{tmp}/truncated.db"], "database"),
    ("corrupted schema page", ["runs", "list", "--db", "{tmp}/schema-page.db"], "database"),
    ("corrupted data page", ["optimize", "a fox", "a cat", "--db", "{tmp}/data-page.db"], "corrupted"),
    ("corrupted page count", ["db", "stats", "--db", "{tmp}/page-count.db"], "database"),
    ("unknown run", ["runs", "show", "nope", "--db", "{tmp}/ok.db"], "no run"),
    # the database is checked before the models load: the missing LLM would be reported otherwise
    ("database where no file can be made", ["optimize", "a fox", "a cat", "--llm-model", "/nonexistent/model.gguf",
                                            "--db", "/proc/promptevo/x.db"], "cannot create database"),
    ("another program's database", ["optimize", "a fox", "a cat", "--llm-model", "/nonexistent/model.gguf",
                                    "--db", "{tmp}/foreign.sqlite"], "another program's SQLite database"),
    ("empty objective", ["optimize", "a fox", "a cat", "--objective", ""], "at least one reward"),
    ("a reward weighed twice", ["optimize", "a fox", "a cat", "--objective", "hps=1,hps=2"], "twice"),
]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    (tmp / "empty.txt").write_bytes(b"")
    (tmp / "blank.txt").write_text("\n  \n\t\n", encoding="utf-8")
    (tmp / "binary.txt").write_bytes(bytes(range(256)) * 40)
    (tmp / "huge.txt").write_text("a fox\n" + "w" * 100_000 + "\n", encoding="utf-8")
    _valid_db(tmp / "readonly.db")
    os.chmod(tmp / "readonly.db", 0o444)
    _valid_db(tmp / "ok.db")
    with sqlite3.connect(tmp / "foreign.sqlite") as conn:
        conn.execute("CREATE TABLE cache (key TEXT, value BLOB)")
    conn.close()
    for kind in ("header", "truncated", "schema-page", "data-page", "page-count"):
        _corrupt(kind, tmp / f"{kind}.db")
    return tmp


@pytest.mark.parametrize("name,args,message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_a_clear_message_exit_2_and_nothing_changes(bad_files, name, args, message):
    snapshot = {p.name: p.read_bytes() for p in bad_files.iterdir() if p.is_file()}
    args = [a.format(tmp=bad_files, huge="w" * 100_000) for a in args]
    if "--db" not in args:
        args += ["--db", str(bad_files / "new.db")]
    r = runner.invoke(app, args)
    assert r.exit_code == 2, (name, r.output[-2000:])
    assert message in r.output and "Traceback" not in r.output, (name, r.output[-2000:])
    after = {p.name: p.read_bytes() for p in bad_files.iterdir() if p.is_file()}
    assert after == snapshot, f"{name}: files changed or appeared: {set(after) ^ set(snapshot)}"


def test_bad_input_count():
    assert len(BAD_INPUTS) >= 15
    print(f"bad inputs: {len(BAD_INPUTS)}")


# -- 5. secrets ----------------------------------------------------------------------------------


def test_canary_api_key_never_reaches_database_logs_reports_or_exports(tmp_path):
    canary = "sk-canary-" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:24]
    env = {**os.environ, "OPENAI_API_KEY": canary, "PYTHONPATH": str(ROOT)}
    db = tmp_path / "run.db"
    with RewriteServer() as server:
        server.behaviours = ["500", "429"]
        p = subprocess.run([sys.executable, "-m", "promptevo", "optimize", "a waterfall", "a fox", "a castle", "--rounds", "1",
                            "--llm-base-url", server.url, "--llm-model", "test-model", "--db", str(db), "--json"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
        auth = {r["auth"] for r in server.requests}
    assert p.returncode == 0, p.stderr[-2000:]
    assert auth == {f"Bearer {canary}"}  # the key was really used
    run_id = json.loads(p.stdout)["run_id"]
    outputs = [p.stdout, p.stderr]
    for args in (["runs", "export", run_id, "--output", str(tmp_path / "export.json")], ["runs", "report", run_id, "--output", str(tmp_path / "r.html")],
                 ["runs", "show", run_id, "--json"]):
        q = subprocess.run([sys.executable, "-m", "promptevo", *args, "--db", str(db)], capture_output=True, text=True, env=env, timeout=300)
        assert q.returncode == 0, q.stderr
        outputs += [q.stdout, q.stderr]
    leaked = [str(f) for f in tmp_path.rglob("*") if f.is_file() and canary.encode() in f.read_bytes()]
    leaked += [f"output {i}" for i, o in enumerate(outputs) if canary in o]
    assert not leaked
    with sqlite3.connect(db) as conn:
        dump = "\n".join(conn.iterdump())
    assert canary not in dump
    shutil.rmtree(tmp_path / "run.db-artifacts", ignore_errors=True)
