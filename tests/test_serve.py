"""The human reward (Bradley-Terry over judgements), judgements in the repository, and the web
app's safety, through Starlette's test client (the browser tests drive the same pages)."""

import base64
import json
import re
import sqlite3
import threading

import numpy as np
import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from promptevo import human
from promptevo.cli.main import _register_subcommands, app
from promptevo.errors import UserError
from tests.hostile import BASE
from tests.web import PROMPTS, free_port, steering_config

_register_subcommands()
runner = CliRunner()
HOSTILE = [s for s in BASE if "<" in s]  # the strings that would be markup if not escaped
BIDI_PROMPT = "a \u202eevil\u202c fox at \u2067dusk\u2069"  # shows as "a live fox" if the controls act


def test_bradley_terry_recovers_the_order_of_arms_from_noisy_judgements():
    rng = np.random.default_rng(0)
    truth = {"naive": 0.0, "a": 1.5, "b": 0.5, "c": -1.0}
    outcomes = []
    for _ in range(600):
        x, y = rng.choice(list(truth), 2, replace=False)
        p = 1 / (1 + np.exp(-(truth[x] - truth[y])))
        outcomes.append((x, y, float(rng.random() < p)))
    fitted = human.bradley_terry(outcomes, pinned="naive")
    assert fitted["naive"] == 0.0
    assert sorted(fitted, key=fitted.get) == ["c", "naive", "b", "a"]
    assert all(abs(fitted[k] - truth[k]) < 0.35 for k in truth)


def test_human_values_stay_finite_count_ties_as_half_and_leave_unjudged_arms_at_naive():
    wins = human.arm_values([human.Judged("1", "naive", "left")] * 20)
    assert 1.0 < wins["1"] < 6.0 and wins["naive"] == 0.0  # all wins: large but finite (the prior)
    ties = human.arm_values([human.Judged("1", "naive", "both"), human.Judged("naive", "1", "neither")] * 10)
    assert abs(ties["1"]) < 1e-9
    few = human.arm_values([human.Judged("2", "naive", "left")])
    assert 0 < few["2"] < 0.6 and "3" not in few  # one judgement moves an arm a little


def _synthetic_run(tmp_path, synthetic, prompts=PROMPTS, rounds=2, **changes):
    from promptevo.evaluation.evaluator import LocalEvaluator
    from promptevo.lab.synthetic import synthetic_profile
    from promptevo.optimise.optimizer import Optimizer
    from promptevo.optimise.run_config import create_run
    from promptevo.storage.store import Store

    llm, renderer, scorer = synthetic
    db = tmp_path / "runs.db"
    with Store(db) as store:
        run_id = create_run(store, synthetic_profile(), steering_config(**changes), prompts)
        optimizer = Optimizer(store, run_id, llm=llm, evaluator=LocalEvaluator(renderer, [scorer]))
        for r in range(1, rounds + 1):
            optimizer.search_round(r)
    return db, run_id


@pytest.fixture(scope="module")
def synthetic():
    from promptevo.embed import Embedder
    from promptevo.lab.synthetic import synthetic_models

    return synthetic_models(Embedder())


def test_judgements_are_checked_and_make_the_human_score_of_every_trial(tmp_path, synthetic):
    from promptevo.storage.repository import RunRepository
    from promptevo.storage.store import Store

    db, run_id = _synthetic_run(tmp_path, synthetic)
    with Store(db) as store:
        repo = RunRepository(store)
        trials = repo.trials(run_id)
        assert all(t.scores["human"] == 0.0 for t in trials)  # the objective weighs it: everyone starts at 0
        naive = next(t for t in trials if t.arm == "naive" and t.round == 1)
        arm = next(t for t in trials if t.arm != "naive" and (t.round, t.prompt_id, t.seed) == (1, naive.prompt_id, naive.seed))
        other_seed = next(t for t in trials if t.arm != "naive" and t.prompt_id != naive.prompt_id)
        for bad in [(naive.id, naive.id, "left"), (naive.id, other_seed.id, "left"), (naive.id, arm.id, "maybe"),
                    (naive.id, 10**9, "left")]:
            with pytest.raises(UserError):
                repo.add_judgement(run_id, *bad, "me")
        first = repo.add_judgement(run_id, arm.id, naive.id, "right", "me")
        for judge in ("me", "you", "them"):  # one per (judge, pair): "me" changes their mind, from another tab
            repo.add_judgement(run_id, naive.id, arm.id, "right", judge)
        assert [j["judge"] for j in repo.judgements(run_id)] == ["me", "you", "them"] and first not in {j["id"] for j in repo.judgements(run_id)}
        values = repo.human_values(run_id)
        after = {t.id: t for t in repo.trials(run_id)}
        assert values[str(arm.instruction_id)] > 0.5
        assert {t.scores["human"] for t in after.values() if t.instruction_id == arm.instruction_id} == {values[str(arm.instruction_id)]}
        assert after[naive.id].scores["human"] == 0.0
        assert repo.judgements(run_id)[0]["judge"] == "me"
    # a finished run is re-ranked with the judgements made since
    shown = runner.invoke(app, ["runs", "show", run_id, "--db", str(db), "--objective", "human=1", "--json"])
    assert shown.exit_code == 0, shown.output
    means = {i["id"]: i["mean_reward"] for i in json.loads(shown.stdout)["instructions"]}
    assert means[arm.instruction_id] == pytest.approx(values[str(arm.instruction_id)])


def test_rerank_by_judgements_needs_some(tmp_path, synthetic):
    db, run_id = _synthetic_run(tmp_path, synthetic, rounds=1, objective=None)
    shown = runner.invoke(app, ["runs", "show", run_id, "--db", str(db), "--objective", "human=1"])
    assert shown.exit_code == 2 and "no judgements yet" in shown.output


def test_runs_without_judgements_or_a_human_weight_carry_no_human_score(tmp_path, synthetic):
    from promptevo.storage.repository import RunRepository
    from promptevo.storage.store import Store

    db, run_id = _synthetic_run(tmp_path, synthetic, rounds=1, objective=None)
    with Store(db) as store:
        assert all("human" not in t.scores for t in RunRepository(store).trials(run_id))


def test_judgements_steer_the_next_rounds_arm_choice(tmp_path, synthetic):
    """Two identical runs; in one, judgements favour the arm with the lower mean gain; greedy
    selection then pulls that arm in round 3, while the other run pulls the better one."""
    from promptevo.evaluation.evaluator import LocalEvaluator
    from promptevo.optimise.optimizer import Optimizer
    from promptevo.storage.repository import RunRepository
    from promptevo.storage.store import Store

    llm, renderer, scorer = synthetic
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    picks = {}
    for name, judge in (("a", True), ("b", False)):
        db, run_id = _synthetic_run(tmp_path / name, synthetic)
        with Store(db) as store:
            repo = RunRepository(store)
            optimizer = Optimizer(store, run_id, llm=llm, evaluator=LocalEvaluator(renderer, [scorer]))
            stats = {s.arm: s.mean for s in optimizer.arm_stats([1, 2])}
            weaker = min(stats, key=stats.get)
            if judge:
                judge_for(repo, run_id, str(weaker), 10)
            optimizer.search_round(3)
            picks[name] = (weaker, json.loads(repo.round(run_id, 3)["plan_json"])["arms"])
    assert picks["a"][0] == picks["b"][0]  # the same runs up to the judgements
    assert picks["a"][1] == [picks["a"][0]] and picks["b"][1] != [picks["b"][0]]


def judge_for(repo, run_id, favoured: str, n: int) -> None:
    """Judge n pairs as the web page offers them: the favoured arm wins, the naive prompt beats
    any other arm, and other pairs are neither."""
    rng = np.random.default_rng(0)
    for _ in range(n):
        judged = {frozenset((j["left_image_id"], j["right_image_id"])) for j in repo.judgements(run_id)}
        left, right = human.next_pair(repo.trials(run_id), judged, {}, {"1", "2", "naive"}, rng)
        keys = [human.arm_key(t.arm, t.instruction_id) for t in (left, right)]
        choice = ("left" if keys[0] == favoured else "right" if keys[1] == favoured
                  else "left" if keys[0] == "naive" else "right" if keys[1] == "naive" else "neither")
        repo.add_judgement(run_id, left.id, right.id, choice, "test")


def test_next_pair_prefers_live_arms_judged_least_and_never_repeats_a_pair():
    from types import SimpleNamespace as T

    trials = [T(id=i, arm=arm, instruction_id=iid, prompt_id="p", seed=1, image_id=i, round=1)
              for i, (arm, iid) in enumerate([("naive", None), ("1", 1), ("2", 2), ("3", 3)])]
    rng = np.random.default_rng(0)
    pair = human.next_pair(trials, set(), {"1": 5}, {"naive", "2", "3"}, rng)
    assert {t.instruction_id for t in pair} == {2, 3} or {t.arm for t in pair} in ({"naive", "2"}, {"naive", "3"})
    seen = set()
    for _ in range(6):
        a, b = human.next_pair(trials, seen, {}, {"naive", "1", "2", "3"}, rng)
        assert a.image_id != b.image_id and frozenset((a.image_id, b.image_id)) not in seen
        seen.add(frozenset((a.image_id, b.image_id)))
    assert human.next_pair(trials, seen, {}, set(), rng) is None  # 4 arms: 6 pairs, all judged


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory, synthetic):
    """A run whose prompts and instructions are hostile strings, and the web app over it."""
    from promptevo.web.app import create_app

    tmp = tmp_path_factory.mktemp("hostile")
    db, run_id = _synthetic_run(tmp, synthetic, prompts=HOSTILE + [BIDI_PROMPT] + PROMPTS[:3], rounds=1,
                                initial_instructions=("<script>alert(1)</script> say \u202eevil\u202c in detail", "<img src=x onerror=alert(1)> in detail"))
    with TestClient(create_app(db, judge="<b>judge</b>"), base_url="http://127.0.0.1:8765") as client:
        yield client, run_id, db


def test_pages_escape_every_hostile_string_and_allow_no_inline_script(hostile_run):
    client, run_id, _ = hostile_run
    for url in ["/", f"/runs/{run_id}", f"/runs/{run_id}/judge"]:
        r = client.get(url)
        assert r.status_code == 200
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert r.text.count("<script") == 1  # our own app.js, nothing from the data
        assert not [s for s in HOSTILE if s in r.text]  # no hostile markup verbatim
    page = client.get(f"/runs/{run_id}").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "&lt;b&gt;judge&lt;/b&gt;" in client.get(f"/runs/{run_id}/judge").text


def test_judging_needs_the_sessions_token(hostile_run):
    client, run_id, _ = hostile_run
    page = client.get(f"/runs/{run_id}/judge").text
    token = re.search(r'name="promptevo-token" content="([0-9a-f]+)"', page).group(1)
    left, right = (int(re.search(rf'data-{side}="(\d+)"', page).group(1)) for side in ("left", "right"))
    body = {"left": left, "right": right, "choice": "right"}
    assert client.post(f"/api/runs/{run_id}/judgements", json=body).status_code == 403
    assert client.post(f"/api/runs/{run_id}/judgements", json=body, headers={"x-promptevo-token": "0" * 64}).status_code == 403
    other = TestClient(client.app, base_url="http://127.0.0.1:8765")  # another browser: its own session
    other.get("/")
    assert other.post(f"/api/runs/{run_id}/judgements", json=body, headers={"x-promptevo-token": token}).status_code == 403
    assert client.post(f"/api/runs/{run_id}/judgements", json={"left": left}, headers={"x-promptevo-token": token}).status_code == 400
    ok = client.post(f"/api/runs/{run_id}/judgements", json=body, headers={"x-promptevo-token": token})
    assert ok.status_code == 200 and ok.json()["id"] >= 1
    assert client.get("/", headers={"host": "rebound.example"}).status_code == 400  # DNS rebinding


def test_images_are_served_by_content_hash_only(hostile_run):
    client, run_id, db = hostile_run
    digest = re.search(r"/image/([0-9a-f]{64})", client.get(f"/runs/{run_id}").text).group(1)
    r = client.get(f"/image/{digest}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content[:8] == b"\x89PNG\r\n\x1a\n"
    (db.parent / "secret.txt").write_text("secret")
    for probe in ["/image/..%2Fsecret.txt", "/image/" + "0" * 64, "/image/" + digest.upper(), "/image/%2Fetc%2Fpasswd",
                  "/static/..%2F..%2Fserve.py"]:
        r = client.get(probe)
        assert r.status_code == 404 and b"secret" not in r.content and b"import" not in r.content


def test_pages_are_read_while_an_optimiser_holds_the_write_lock(hostile_run):
    """A running optimiser's write transaction does not block the pages (WAL)."""
    client, run_id, db = hostile_run
    writer = sqlite3.connect(db, timeout=1)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE runs SET updated_at = updated_at WHERE id = ?", [run_id])
    try:
        result = {}
        thread = threading.Thread(target=lambda: result.update(r=client.get(f"/runs/{run_id}")))
        thread.start()
        thread.join(timeout=20)
        assert not thread.is_alive() and result["r"].status_code == 200
        assert client.get(f"/api/runs/{run_id}").json()["run_id"] == run_id
    finally:
        writer.rollback()
        writer.close()


def test_the_json_api_is_strict_json_for_scripts(hostile_run):
    from promptevo.web.app import _finite

    client, run_id, _ = hostile_run

    def refuse(name):
        raise AssertionError(f"{name} is not JSON")

    data = json.loads(client.get(f"/api/runs/{run_id}").text, parse_constant=refuse)
    assert data["run_id"] == run_id and {h["arm"] for h in data["human"]} == {i["id"] for i in data["instructions"]}
    assert json.loads(client.get("/api/runs").text, parse_constant=refuse)[0]["id"] == run_id
    assert _finite({"ci": [float("-inf"), 1.5, float("nan")], "n": 1}) == {"ci": [None, 1.5, None], "n": 1}


def test_serve_refuses_a_missing_database_and_a_busy_port(tmp_path, hostile_run):
    _, _, db = hostile_run
    missing = runner.invoke(app, ["serve", "--db", str(tmp_path / "none.db")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    import socket

    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        busy = runner.invoke(app, ["serve", "--db", str(db), "--port", str(port)])
    assert busy.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in busy.output


def test_the_human_reward_is_in_the_repository_and_needs_no_model():
    from promptevo.cli.optimize import _with_objective
    from promptevo.config import PROFILES

    rows = {r["kind"]: r for r in json.loads(runner.invoke(app, ["rewards", "--json"]).stdout)}
    assert rows["human"]["installed"] and "promptevo serve" in rows["human"]["needs"]
    prof, spec = _with_objective(PROFILES["tiny"], "hps=1,human=2", [])
    assert not prof.extra_rewards and spec["weights"] == {"hps-tiny": 1.0, "human": 2.0}
    assert spec["kinds"]["human"] == "human"



def test_no_path_read_from_a_crafted_database_leaves_its_artifacts_folder(tmp_path, hostile_run):
    """A database someone hands you is untrusted: image paths that point elsewhere (absolute,
    `..`, a symlink out) are missing images in `serve`, `runs report` and rescoring."""
    import shutil

    from promptevo.storage.store import Store
    from promptevo.web.app import create_app

    _, run_id, source = hostile_run
    db = tmp_path / "handed.db"
    with Store(source, readonly=True) as store:
        store.conn.execute(f"VACUUM INTO '{db}'")
        shutil.copytree(store.artifacts, tmp_path / "handed.db-artifacts")
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    inside = tmp_path / "handed.db-artifacts" / "images" / "link.png"
    inside.symlink_to(secret)
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT id, content_hash FROM images ORDER BY id").fetchall()
    crafted = {rows[0][1]: str(secret), rows[1][1]: "../secret.txt", rows[2][1]: "images/link.png"}
    for digest, path in crafted.items():
        conn.execute("UPDATE images SET path = ? WHERE content_hash = ?", [path, digest])
    conn.commit()
    conn.close()
    with TestClient(create_app(db), base_url="http://127.0.0.1:8765") as client:
        for digest in crafted:
            r = client.get(f"/image/{digest}")
            assert r.status_code == 404 and b"secret" not in r.content
        assert client.get(f"/image/{rows[3][1]}").status_code == 200  # the untouched ones still show
    with Store(db, readonly=True) as store:
        assert store.artifact_file("images/link.png") is None and store.artifact_file(str(secret)) is None
        with pytest.raises(UserError, match="missing from"):
            store.image_path({"id": rows[0][0], "path": str(secret)})
    out = tmp_path / "report.html"
    result = runner.invoke(app, ["runs", "report", run_id, "--db", str(db), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "top secret" not in out.read_text() and base64.b64encode(b"top secret").decode() not in out.read_text()


def test_a_report_of_a_database_copied_without_its_artifacts_says_how_many_images_are_missing(tmp_path, hostile_run):
    from promptevo.storage.store import Store

    _, run_id, source = hostile_run
    db = tmp_path / "alone.db"
    with Store(source, readonly=True) as store:
        store.conn.execute(f"VACUUM INTO '{db}'")
    out = tmp_path / "report.html"
    result = runner.invoke(app, ["runs", "report", run_id, "--db", str(db), "-o", str(out)])
    assert result.exit_code == 0, result.output
    shown = re.search(r"(\d+) of (\d+) image files are missing", " ".join(result.output.split()))
    assert shown and shown.group(1) == shown.group(2) and int(shown.group(1)) > 0
    assert out.read_text().count("image file missing") == int(shown.group(1))


def test_runs_list_keeps_run_ids_whole_on_an_80_column_terminal(hostile_run, monkeypatch):
    """The id `show`, `resume` and `apply` need is never cut, however narrow the terminal."""
    from promptevo.cli.common import out

    _, run_id, db = hostile_run
    monkeypatch.setattr(out, "_width", 80)
    result = runner.invoke(app, ["runs", "list", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert run_id in result.output and max(len(line) for line in result.output.splitlines()) <= 80
    for command in ("optimize", "runs", "serve"):  # option names in --help are never cut either
        helped = runner.invoke(app, [*command.split(), "--help"], terminal_width=80)
        assert "…" not in helped.output
    assert "--seeds-per-prompt" in runner.invoke(app, ["optimize", "--help"], terminal_width=80).output


@pytest.mark.parametrize("bind", ["127.0.0.1", "0.0.0.0", "::", "192.0.2.7"])
def test_every_bind_keeps_a_host_allow_list(hostile_run, bind):
    """DNS rebinding: a page on another site that resolves its name to this machine is refused
    on every bind, wildcard included; loopback, the bound address, the machine's own names and
    --allow-host names are answered."""
    from promptevo.web.app import allowed_hosts, create_app, machine_names

    _, _, db = hostile_run
    hosts = allowed_hosts(bind, ("judging.lan",))
    assert "*" not in hosts
    answered = ["127.0.0.1", "localhost", "judging.lan", "LOCALHOST:8765"]
    answered += machine_names()[:1] if bind in ("0.0.0.0", "::") else [] if bind.startswith("127") else [bind]
    with TestClient(create_app(db, hosts=hosts), base_url="http://127.0.0.1:8765") as client:
        for name in answered:
            assert client.get("/api/runs", headers={"host": name}).status_code == 200, (bind, name)
        for name in ["rebound.example", "evil.127.0.0.1.nip.io", "judging.lan.evil.example", ""]:
            assert client.get("/api/runs", headers={"host": name}).status_code == 400, (bind, name)
    refused = runner.invoke(app, ["serve", "--db", str(db), "--host", "0.0.0.0", "--allow-host", "*"])
    assert refused.exit_code == 2 and "DNS rebinding" in refused.output


def test_a_judgement_waiting_on_the_write_lock_blocks_no_page_and_says_busy(hostile_run):
    """An optimiser holds SQLite's write lock: the judgement waits in a worker thread (pages
    are served meanwhile), then answers 503 with a message instead of hanging; it lands once
    the lock is free."""
    client, run_id, db = hostile_run
    page = client.get(f"/runs/{run_id}/judge").text
    token = re.search(r'name="promptevo-token" content="([0-9a-f]+)"', page).group(1)
    left, right = (int(re.search(rf'data-{side}="(\d+)"', page).group(1)) for side in ("left", "right"))
    body, headers = {"left": left, "right": right, "choice": "left"}, {"x-promptevo-token": token}
    writer = sqlite3.connect(db, timeout=1)
    writer.execute("BEGIN IMMEDIATE")
    try:
        result = {}
        judging = threading.Thread(target=lambda: result.update(r=client.post(f"/api/runs/{run_id}/judgements", json=body, headers=headers)))
        judging.start()
        while client.app.state.server._writer is None:  # the judgement has reached the database
            threading.Event().wait(0.05)
        assert client.get(f"/runs/{run_id}").status_code == 200
        assert judging.is_alive()  # the page was served while the judgement still waited
        judging.join(timeout=60)
        assert result["r"].status_code == 503 and "busy" in result["r"].json()["error"]
    finally:
        writer.rollback()
        writer.close()
    assert client.post(f"/api/runs/{run_id}/judgements", json=body, headers=headers).status_code == 200


def test_bidirectional_controls_are_shown_not_obeyed_on_pages_in_the_report_and_the_cli(tmp_path, hostile_run):
    from promptevo.display import BIDI_CONTROLS

    client, run_id, db = hostile_run
    texts = {url: client.get(url).text for url in ["/", f"/runs/{run_id}", f"/runs/{run_id}/judge"]}
    assert "say &lt;U+202E&gt;evil&lt;U+202C&gt; in detail" in texts[f"/runs/{run_id}"]
    out = tmp_path / "report.html"
    assert runner.invoke(app, ["runs", "report", run_id, "--db", str(db), "-o", str(out)]).exit_code == 0
    texts["report"] = out.read_text(encoding="utf-8")
    assert "&lt;U+202E&gt;evil" in texts["report"]
    for command in (["runs", "show", run_id], ["runs", "list"]):
        shown = runner.invoke(app, [*command, "--db", str(db)])
        assert shown.exit_code == 0, shown.output
        texts[" ".join(command)] = shown.output
    assert "<U+202E>evil" in texts[f"runs show {run_id}"]
    assert not {where for where, text in texts.items() if BIDI_CONTROLS.search(text)}
    exported = runner.invoke(app, ["runs", "export", run_id, "--db", str(db)]).output
    assert BIDI_PROMPT in exported  # data for scripts keeps the text exactly


def test_held_out_evidence_holds_only_what_was_measured_on_held_out_images(tmp_path, synthetic):
    """--objective synthetic=1,human=3 with judgements made only on search images: the held-out
    table is the objective's measured part alone (it equals `runs show --objective synthetic=1`
    recomputed from the stored scores), the judgement-based values are in their own labelled
    table, and nothing judged counts as held-out evidence."""
    from promptevo.evaluation.evaluator import LocalEvaluator
    from promptevo.optimise.optimizer import Optimizer
    from promptevo.optimise.summary import summarize
    from promptevo.storage.repository import RunRepository
    from promptevo.storage.store import Store

    llm, renderer, scorer = synthetic
    db, run_id = _synthetic_run(tmp_path, synthetic, rounds=2)
    with Store(db) as store:
        repo = RunRepository(store)
        judge_for(repo, run_id, "1", 10)
        Optimizer(store, run_id, llm=llm, evaluator=LocalEvaluator(renderer, [scorer])).run_all()
        summary = summarize(repo, run_id)
        judged_images = {i for j in repo.judgements(run_id) for i in (j["left_image_id"], j["right_image_id"])}
        held_images = {t.image_id for t in repo.trials(run_id, phase="evaluation")}
    assert not judged_images & held_images  # the premise: nobody judged a held-out image
    assert set(summary["objective"]["weights"]) == {"synthetic-v1", "human"}
    assert summary["heldout_objective"]["weights"] == {"synthetic-v1": 1.0}
    assert "human" not in summary["heldout_by_reward"]
    best = next(r for r in summary["heldout"] if r["arm"] == "best")["diff_vs_naive"]
    assert best["ci_high"] - best["ci_low"] > 0  # a measured quantity, not a constant from clicks
    judged = summary["judged"]
    assert judged["judgements"] == 10 and set(judged["images_judged_by_phase"]) == {"search"} and judged["judges"] == ["test"]
    assert {a["arm"] for a in judged["arms"]} >= {"1", "naive"}
    alone = runner.invoke(app, ["runs", "show", run_id, "--db", str(db), "--objective", "synthetic=1", "--json"])
    assert alone.exit_code == 0, alone.output
    assert json.loads(alone.stdout)["heldout"] == summary["heldout"]
    shown = runner.invoke(app, ["runs", "show", run_id, "--db", str(db)])
    text = " ".join(shown.output.split())
    assert "mean objective" in text and "mean HPS" not in text and "not held-out evidence" in text
    assert "10 judgements by test; 10 on search images" in text
