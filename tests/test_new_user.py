"""What a new user hit, each as a test: one run, one owner; run states and messages that tell the
truth; imports that say what they used and dropped; failed commands that leave nothing behind;
option ranges checked before any model loads; progress lines that name the run's answer and
where the time goes; Ctrl-C that always stops; a report with its axes, critiques and timings."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from promptevo import registry
from promptevo.cli.main import _register_subcommands, app
from promptevo.evaluation import components
from promptevo.evaluation.components import Components
from promptevo.llms.backends import ScriptedLLM
from promptevo.optimise.optimizer import Optimizer
from promptevo.optimise.run_config import OptimizeConfig, create_run
from promptevo.storage.lease import RunBusy, RunLease, owner_alive
from promptevo.storage.repository import RunRepository
from promptevo.storage.store import Store

from .scripted import script

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ["a waterfall", "a samurai", "a lighthouse at night", "a fox in the snow", "an old library", "a city street in the rain"]
_register_subcommands()
runner = CliRunner()


@pytest.fixture
def scripted_models(monkeypatch, evaluator):
    """The CLI's models: the tiny evaluator (already loaded) and the scripted LLM."""
    monkeypatch.setattr(components, "build_components", lambda profile, llm=True, **kw: Components(ScriptedLLM(script), evaluator))
    monkeypatch.setattr(registry, "build_llm", lambda config: ScriptedLLM(script))


# -- 1. one run, one owner ----------------------------------------------------------------------


def test_a_second_process_on_a_live_run_refuses_and_nothing_is_done_twice(tmp_path, tiny, evaluator):
    config = OptimizeConfig(rounds=4, batch_size=2)
    with Store(tmp_path / "straight.db") as s:  # what the run does alone
        rid = create_run(s, tiny, config, PROMPTS)
        Optimizer(s, rid, llm=ScriptedLLM(script), evaluator=evaluator).run_all()
        alone = RunRepository(s).counts(rid)
        alone_rejected = len(RunRepository(s).events(rid, "instruction_rejected"))
    db = tmp_path / "run.db"
    with Store(db) as s:
        run_id = create_run(s, tiny, config, PROMPTS)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    owner = subprocess.Popen([sys.executable, "-m", "tests.loop_driver", str(db), run_id], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in owner.stdout:
        if line.startswith("stage rewriting"):
            break
    second = subprocess.run([sys.executable, "-m", "promptevo", "runs", "resume", run_id, "--db", str(db)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    for _ in owner.stdout:
        pass
    assert owner.wait(timeout=300) == 0
    assert second.returncode == 2, second.stderr
    [message] = [line for line in second.stderr.splitlines() if line.strip()]
    assert f"process {owner.pid}" in message and socket.gethostname() in message and "heartbeat" in message
    assert "Traceback" not in second.stderr
    with Store(db, readonly=True) as s:
        repo = RunRepository(s)
        got = repo.counts(run_id)
        assert {k: got[k] for k in ("llm_calls", "gradients", "trials", "instructions", "rewrites")} == {
            k: alone[k] for k in ("llm_calls", "gradients", "trials", "instructions", "rewrites")}
        assert len(repo.events(run_id, "selected")) == 1
        assert len(repo.events(run_id, "instruction_rejected")) == alone_rejected  # none spurious
        assert repo.run(run_id)["status"] == "finished" and repo.run(run_id)["owner"] is None


def test_a_dead_or_silent_owner_is_taken_over_and_a_live_one_is_waited_for(store, repo, tiny):
    run_id = create_run(store, tiny, OptimizeConfig(rounds=1), PROMPTS)
    here = socket.gethostname()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    assert not owner_alive(f"{dead}@{here}", "2999-01-01T00:00:00+00:00")  # its process is gone
    repo.claim(run_id, f"{dead}@{here}", lambda o, h: False)
    with RunLease(repo, run_id):  # SIGKILLed owner on this machine: taken over at once
        assert repo.run(run_id)["owner"] == f"{os.getpid()}@{here}"
    assert repo.run(run_id)["status"] == "interrupted" and repo.events(run_id, "owner_taken_over")

    far = "4242@another-machine"
    repo.claim(run_id, far, lambda o, h: False)  # a live owner elsewhere, heartbeat fresh
    with pytest.raises(RunBusy, match="process 4242 on another-machine"):
        RunLease(repo, run_id).__enter__()

    def goes_silent():
        time.sleep(0.5)
        with store.atomic() as conn:  # its heartbeat stops: a minute later it counts as dead
            conn.execute("UPDATE runs SET heartbeat_at = '2000-01-01T00:00:00+00:00' WHERE id = ?", [run_id])

    threading.Thread(target=goes_silent).start()
    t0 = time.monotonic()
    with RunLease(repo, run_id, wait=True, poll_s=0.1):  # --wait: starts once the owner is gone
        assert time.monotonic() - t0 >= 0.4 and repo.run(run_id)["owner"] != far


# -- 2. run states and messages -----------------------------------------------------------------


def test_an_interrupted_run_says_so_names_itself_and_apply_calls_its_answer_provisional(tmp_path, scripted_models):
    from promptevo import interrupts

    db = tmp_path / "runs" / "new" / "run.db"  # optimize creates the folder
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    interrupts.install()
    returned = threading.Event()
    try:
        def stop_soon():
            if not returned.wait(6):  # a run that ended early must not take the test process down
                os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=stop_soon, daemon=True).start()
        r = runner.invoke(app, ["optimize", *PROMPTS, "--rounds", "40", "--db", str(db)])
    finally:
        returned.set()
        for s, handler in previous.items():
            signal.signal(s, handler)
        interrupts._requested.clear()
    assert r.exit_code == 143, r.output
    run_id = re.search(r"run (\S+) in", r.output).group(1)
    assert f"stopped (SIGTERM); finished work is saved; continue with `promptevo runs resume {run_id} --db {db}`" in r.output
    listed = json.loads(runner.invoke(app, ["runs", "list", "--db", str(db), "--json"]).stdout)
    assert listed[0]["status"] == "interrupted" and listed[0]["rounds"] == 40 and listed[0]["rounds_done"] < 40
    applied = runner.invoke(app, ["apply", run_id, "a red bicycle", "--db", str(db), "--json"])
    assert applied.exit_code == 0 and "provisional" in applied.output
    assert json.loads(applied.stdout)[0]["provisional"] is True


def test_rounds_done_counts_search_rounds_and_a_finished_run_resumes_without_loading_models(tmp_path, scripted_models, monkeypatch):
    db = tmp_path / "run.db"
    r = runner.invoke(app, ["optimize", *PROMPTS, "--rounds", "2", "--db", str(db), "--json"])
    assert r.exit_code == 0, r.output
    run_id = json.loads(r.stdout)["run_id"]
    [row] = json.loads(runner.invoke(app, ["runs", "list", "--db", str(db), "--json"]).stdout)
    assert (row["rounds_done"], row["rounds"], row["stage"], row["status"]) == (2, 2, "evaluation", "finished")

    def no_models(*a, **k):
        raise AssertionError("a finished run needs no model")

    monkeypatch.setattr(components, "build_components", no_models)
    again = runner.invoke(app, ["runs", "resume", run_id, "--db", str(db), "--json"])
    assert again.exit_code == 0 and json.loads(again.stdout)["run_id"] == run_id


def test_progress_names_the_runs_answer_and_where_the_time_goes(tmp_path, scripted_models):
    db = tmp_path / "run.db"
    r = runner.invoke(app, ["optimize", *PROMPTS, "--rounds", "3", "--db", str(db), "--population", "2"])
    assert r.exit_code == 0, r.output
    run_id = re.search(r"run (\S+) in", r.output).group(1)
    lines = [line for line in r.output.splitlines() if line.startswith("round ")]
    assert len(lines) == 3
    for line in lines:
        assert re.search(r"best so far: #\d+ \(mean gain [+-]\d", line), line  # never "-": retired or not
        assert re.search(r"LLM [\d.]+ s, render and score [\d.]+ s, LLM \d+%\)", line)
        assert "LLM calls left" in line
    # the resume hint is one whole line, not wrapped at 80 columns
    assert f"(resume with `promptevo runs resume {run_id} --db {db}`)" in r.output
    shown = json.loads(runner.invoke(app, ["runs", "show", run_id, "--db", str(db), "--json"]).stdout)
    [chosen] = [line for line in r.output.splitlines() if line.startswith("selection pass finished")]
    assert f"the run's answer: #{shown['best_instruction']['id']} " in chosen  # the last word equals the result
    last = re.search(r"best so far: #(\d+)", lines[-1]).group(1)
    with Store(db, readonly=True) as s:  # the last line named what the run answered before its selection pass
        import promptevo.optimise.bandit as bandit
        from promptevo.optimise.summary import arm_stats

        repo = RunRepository(s)
        stats = arm_stats(repo, run_id, [i["id"] for i in repo.instructions(run_id) if i["origin"] != "baseline"])
        assert int(last) == bandit.best(stats)
    assert shown["best_instruction"]["id"] is not None


# -- 3. imports ---------------------------------------------------------------------------------


def test_parti_style_tsv_imports_without_map_and_keeps_multi_word_tags(tmp_path):
    tsv = tmp_path / "PartiPrompts.tsv"
    tsv.write_text("Prompt\tCategory\tChallenge\nA red apple on a table\tFood & Beverage\tBasic\n"
                   "The Eiffel Tower at night\tWorld Knowledge\tBasic\nA cat\t&&&\tBasic\n", encoding="utf-8")
    db = tmp_path / "p.db"
    r = runner.invoke(app, ["db", "import", str(tsv), "--db", str(db), "--map", "tags=Category", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["added"] == 3 and report["columns"] == {"tags": "Category", "text": "Prompt"}
    assert report["tags_refused"] == ["&&&"]
    stats = json.loads(runner.invoke(app, ["db", "stats", "--db", str(db), "--json"]).stdout)
    assert stats["tags"] == {"food-beverage": 1, "world-knowledge": 1}
    found = json.loads(runner.invoke(app, ["db", "export", str(tmp_path / "o.jsonl"), "--db", str(db), "--tag", "World Knowledge", "--json"]).stdout)
    assert found["prompts"] == 1
    plain = runner.invoke(app, ["db", "import", str(tsv), "--db", str(tmp_path / "q.db")])
    assert plain.exit_code == 0 and "text from column 'Prompt'" in plain.output


def test_a_latin1_file_is_named_as_not_utf8_and_reads_with_encoding(tmp_path):
    f = tmp_path / "latin.csv"
    f.write_bytes("prompt\nun café à Paris\nune crème brûlée\n".encode("latin-1"))
    db = tmp_path / "p.db"
    r = runner.invoke(app, ["db", "import", str(f), "--db", str(db)])
    assert r.exit_code == 2 and "not UTF-8" in r.output and "--encoding" in r.output and "binary" not in r.output
    assert not db.exists()
    ok = runner.invoke(app, ["db", "import", str(f), "--db", str(db), "--encoding", "latin-1", "--json"])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["added"] == 2


# -- 4. failed commands create nothing ----------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["db", "import", "{tmp}/bad.tsv", "--db", "{tmp}/new.db"],
    ["db", "import", "{tmp}/missing.txt", "--db", "{tmp}/new.db"],
    ["runs", "resume", "NOPE", "--db", "{tmp}/new.db"],
    ["db", "tag", "x", "--db", "{tmp}/new.db"],
    ["optimize", "a fox", "a cat", "--epsilon", "2", "--db", "{tmp}/sub/new.db"],
])
def test_a_command_that_fails_on_its_input_creates_no_file(tmp_path, args):
    (tmp_path / "bad.tsv").write_text("Title\tYear\nx\t1\n", encoding="utf-8")
    before = set(tmp_path.rglob("*"))
    r = runner.invoke(app, [a.format(tmp=tmp_path) for a in args])
    assert r.exit_code == 2, r.output
    assert set(tmp_path.rglob("*")) == before


def test_db_import_creates_a_missing_folder_like_optimize(tmp_path):
    (tmp_path / "p.txt").write_text("a fox\n", encoding="utf-8")
    r = runner.invoke(app, ["db", "import", str(tmp_path / "p.txt"), "--db", str(tmp_path / "a" / "b" / "p.db")])
    assert r.exit_code == 0, r.output and (tmp_path / "a" / "b" / "p.db").is_file()


# -- 5. option ranges ---------------------------------------------------------------------------


@pytest.mark.parametrize("option,value,message", [
    ("--epsilon", "2", "--epsilon is a probability"), ("--epsilon", "-0.1", "--epsilon is a probability"),
    ("--ucb-c", "-1", "--ucb-c must be"), ("--heldout-fraction", "1.5", "--heldout-fraction must be"),
])
def test_out_of_range_options_fail_before_any_model_loads(tmp_path, monkeypatch, option, value, message):
    def no_models(*a, **k):
        raise AssertionError("models loaded for a bad option")

    monkeypatch.setattr(components, "build_components", no_models)
    r = runner.invoke(app, ["optimize", "a fox", "a cat", option, value, "--db", str(tmp_path / "x.db")])
    assert r.exit_code == 2 and message in r.output
    assert len([line for line in r.output.splitlines() if line.strip()]) == 1


# -- 7. Ctrl-C always stops ---------------------------------------------------------------------


def test_a_swallowed_interrupt_still_stops_at_the_next_check():
    from promptevo import interrupts

    interrupts._requested.set()
    try:
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()
    finally:
        interrupts._requested.clear()
    interrupts.check()  # nothing asked: nothing raised


@pytest.mark.slow
@pytest.mark.parametrize("delay", [1.5, 4.0])
def test_ctrl_c_while_models_load_stops_with_one_line_and_starts_nothing(tmp_path, delay):
    db = tmp_path / "x.db"
    p = subprocess.Popen([sys.executable, "-m", "promptevo", "optimize", "a fox", "a cat", "a cow", "--db", str(db)],
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    p.send_signal(signal.SIGINT)
    _, stderr = p.communicate(timeout=120)
    # 130 from our handler; in 1 of ~10 runs at 1.5 s the interpreter still ended by re-raising the
    # SIGINT it had already reported (-2): stopped either way, with the one line checked below
    assert p.returncode in (130, -signal.SIGINT), stderr[-2000:]
    assert "interrupted; finished work is saved" in stderr
    assert "Exception ignored" not in stderr and "Traceback" not in stderr
    assert not db.exists()  # no run was started


# -- 8. the report --------------------------------------------------------------------------------


def test_report_has_round_ticks_an_outside_legend_critiques_and_timings(tmp_path, tiny, evaluator):
    db = tmp_path / "run.db"
    with Store(db) as s:
        run_id = create_run(s, tiny, OptimizeConfig(rounds=3, batch_size=2), PROMPTS)
        Optimizer(s, run_id, llm=ScriptedLLM(script), evaluator=evaluator).run_all()
        gradient = RunRepository(s).gradients(run_id)[0]["text"]
    r = runner.invoke(app, ["runs", "report", run_id, "--db", str(db), "-o", str(tmp_path / "r.html")])
    assert r.exit_code == 0, r.output
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    svg = re.search(r"<svg.*?</svg>", page, re.S).group(0)
    ticks = re.findall(r'text-anchor="middle">(\d+)</text>', svg)
    assert ticks == ["1", "2", "3"]  # every round labelled on the x axis
    plot_right = max(float(x) + float(w) for x, w in re.findall(r'<rect x="([\d.]+)" y="[\d.]+" width="([\d.]+)" height="[\d.]+" fill="none"', svg))
    legend_x = [float(x) for x in re.findall(r'<rect x="([\d.]+)" y="[\d.]+" width="10" height="10"', svg)]
    assert legend_x and min(legend_x) > plot_right  # the legend sits outside the data
    assert 'transform="rotate(-90' in svg  # the y label stands beside its ticks, not over one
    assert "<h2>Critiques</h2>" in page and gradient.splitlines()[0] in page.replace("&#x27;", "'")
    assert "<h2>Timings</h2>" in page and "LLM calls" in page
    # the budget: gain against the images the optimiser scored, round by round, and the answer's held-out gain
    with Store(db, readonly=True) as s:
        budget = RunRepository(s).budget(run_id)
    assert f"{budget['images']} images scored ({budget['search_images']} to decide), {budget['llm_calls']} LLM calls" in page
    gain_plot = re.search(r"<h2>Budget</h2>.*?(<svg.*?</svg>)", page, re.S).group(1)
    xs = [int(x) for x in re.findall(r'text-anchor="middle">(\d+)</text>', gain_plot)]
    assert xs == sorted(xs) and len(xs) >= 3 and xs[-1] == budget["search_images"]
    assert "held-out gain of the answer" in gain_plot


def test_llm_text_with_console_markup_prints_as_written(tmp_path, tiny):
    db = tmp_path / "run.db"
    text = "[bold red]Keep[/] the subject [link=http://x]and[/link] add light"
    with Store(db) as s:
        run_id = create_run(s, tiny, OptimizeConfig(rounds=1, initial_instructions=(text,), population=1), PROMPTS)
    r = runner.invoke(app, ["runs", "show", run_id, "--db", str(db)], env={"COLUMNS": "300"})
    assert r.exit_code == 0, r.output
    assert "[bold red]Keep[/]" in r.output and "[link=http://x]" in r.output  # shown, not interpreted


def test_sigterm_stops_the_process_within_its_grace_even_when_a_library_swallows_the_stop(tmp_path):
    """A library that catches the stop (or a long load) cannot keep a SIGTERMed run alive: after
    the grace period the process ends with 143 and says so."""
    code = ("import time; from promptevo import interrupts; interrupts.install(); print('ready', flush=True)\n"
            "while True:\n"
            "    try:\n"
            "        time.sleep(0.05)\n"
            "    except KeyboardInterrupt:\n"
            "        pass  # a library swallowing it\n")
    p = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT), "PROMPTEVO_TERM_GRACE_S": "1"},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    p.send_signal(signal.SIGTERM)
    _, stderr = p.communicate(timeout=60)
    assert p.returncode == 143 and "stopped (SIGTERM, after a 1 s grace)" in stderr
