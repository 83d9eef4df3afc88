"""The product as a user runs it: `promptevo optimize --profile tiny` on real (tiny) models and
the real SmolLM2 LLM, then the run commands on its database."""

import base64
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def promptevo(*args, timeout=900):
    p = subprocess.run([sys.executable, "-m", "promptevo", *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=timeout, env={**os.environ, "COLUMNS": "200"})
    return p


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    db = tmp_path_factory.mktemp("e2e") / "run.db"
    ref = db.with_name("reference.db")
    p = promptevo("db", "import", "prompt_db/imagereward-benchmark.jsonl", "--db", str(ref), "--licence", "Apache-2.0")
    assert p.returncode == 0, p.stderr
    p = promptevo("optimize", "--profile", "tiny", "--prompts", "examples/prompts.txt", "--rounds", "3",
                  "--db", str(db), "--reference-db", str(ref), "--json")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    return db, json.loads(p.stdout)


def test_optimize_with_real_smollm2_stores_gradients_and_heldout(finished_run):
    from promptevo.storage.repository import RunRepository
    from promptevo.storage.store import Store

    db, summary = finished_run
    assert summary["status"] == "finished"
    with Store(db, readonly=True) as store:
        repo = RunRepository(store)
        run_id = summary["run_id"]
        calls = {c["id"]: c for c in repo.llm_calls(run_id)}
        roles = [c["role"] for c in calls.values() if c["error"] is None]
        assert roles.count("generator") >= 12 and roles.count("gradient") >= 1
        assert any("SmolLM2-135M-Instruct" in c["model"] for c in calls.values())
        # gradient text and new instructions come from the model's own replies
        grads = repo.gradients(run_id)
        assert grads and all(g["text"] == calls[g["llm_call_id"]]["response"] and g["text"].strip() for g in grads)
        new = repo.instructions(run_id, origin="modifier")
        assert new, "SmolLM2 wrote no usable instruction in 3 rounds"
        assert all(re.sub(r"\s+", " ", i["text"])[:30] in re.sub(r"\s+", " ", calls[i["llm_call_id"]]["response"]) for i in new)
        assert {row["arm"] for row in summary["heldout"]} == {"best", "initial", "naive"}
        # --reference-db: the nearest reference prompts were shown to the gradient
        used = [e["data"] for e in repo.events(run_id, "reference_prompts")]
        assert used
        messages = " ".join(c["messages_json"] for c in calls.values() if c["role"] == "gradient")
        images = store.scalar("SELECT COUNT(DISTINCT content_hash) FROM images")  # one file per distinct PNG
    with Store(db.with_name("reference.db"), readonly=True) as ref:
        from promptevo.promptdb.collection import PromptDB

        texts = {r["id"]: r["text"] for r in PromptDB(ref).select()}
    for event in used:
        for r in event["references"]:
            assert json.dumps(texts[r["reference_id"]])[1:-1] in messages
    assert images == len(list((db.parent / "run.db-artifacts" / "images").rglob("*.png")))


def test_runs_commands_on_the_finished_run(finished_run, tmp_path):
    db, summary = finished_run
    run_id = summary["run_id"]
    listed = json.loads(promptevo("runs", "list", "--db", str(db), "--json").stdout)
    assert [r["id"] for r in listed] == [run_id]
    shown = json.loads(promptevo("runs", "show", run_id, "--db", str(db), "--json").stdout)
    assert shown["best_instruction"] == summary["best_instruction"]
    exported = json.loads(promptevo("runs", "export", run_id, "--db", str(db)).stdout)
    assert exported["trials"] and exported["llm_calls"] and exported["run"]["config"]["optimize"]["rounds"] == 3
    # resuming a finished run does no new work
    before = len(exported["llm_calls"])
    assert promptevo("runs", "resume", run_id, "--db", str(db), "--json").returncode == 0
    assert len(json.loads(promptevo("runs", "export", run_id, "--db", str(db)).stdout)["llm_calls"]) == before


def test_report_is_one_page_with_the_images(finished_run, tmp_path):
    db, summary = finished_run
    out = tmp_path / "report.html"
    p = promptevo("runs", "report", summary["run_id"], "--db", str(db), "-o", str(out))
    assert p.returncode == 0, p.stderr
    page = out.read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) >= 2
    for data in images:
        assert Image.open(io.BytesIO(base64.b64decode(data))).size == (64, 64)
    assert "<svg" in page and "Held-out" in page and summary["best_instruction"]["text"][:40].replace("'", "&#x27;") in page
    assert "src=\"http" not in page and "href=\"http" not in page  # self-contained


def test_apply_rewrites_new_prompts_with_the_best_instruction(finished_run):
    db, summary = finished_run
    p = promptevo("apply", summary["run_id"], "a red bicycle", "--db", str(db), "--json")
    assert p.returncode == 0, p.stderr[-2000:]
    [row] = json.loads(p.stdout)
    assert row["prompt"] == "a red bicycle" and row["rewrite"] and row["instruction_id"] == summary["best_instruction"]["id"]


@pytest.mark.parametrize("args, message", [
    (["optimize", "--db", "x.db"], "give prompts"),
    (["optimize", "a", "--selector", "thompson", "--db", "{tmp}/x.db"], "unknown selector"),
    (["optimize", "--prompts", "{tmp}/empty.txt", "--db", "{tmp}/x.db"], "no prompts"),
    (["optimize", "--prompts", "{tmp}/binary.txt", "--db", "{tmp}/x.db"], "binary"),
    (["runs", "show", "nope", "--db", "{tmp}/missing.db"], "does not exist"),
])
def test_optimize_input_errors_exit_2(tmp_path, args, message):
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "binary.txt").write_bytes(b"\x00\x01\x02" * 100)
    p = promptevo(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert p.returncode == 2, p.stderr
    assert message in p.stderr and "Traceback" not in p.stderr
