import json
from pathlib import Path

import pytest

from promptevo.llm import ScriptedLLM
from promptevo.optimize import OptimizeConfig, Optimizer, create_run, split_prompts

from .scripted import junk, script

PROMPTS = ["a waterfall", "a samurai", "a lighthouse at night", "a fox in the snow", "an old library", "a city street in the rain"]
ROOT = Path(__file__).resolve().parent.parent


def run_loop(store, tiny, renderer, scorer, llm=None, **kw):
    config = OptimizeConfig(**{"rounds": 2, "batch_size": 2, **kw})
    run_id = create_run(store, tiny, config, PROMPTS)
    summary = Optimizer(store, run_id, llm=llm or ScriptedLLM(script), renderer=renderer, scorer=scorer).run_all()
    return run_id, summary


def test_split_is_deterministic_and_disjoint():
    opt, held = split_prompts(PROMPTS, 0.34, seed=3)
    assert (opt, held) == split_prompts(PROMPTS, 0.34, seed=3)
    assert len(held) == 2 and not set(opt) & set(held) and set(opt) | set(held) == set(PROMPTS)


@pytest.mark.parametrize("selector", ["ucb", "greedy", "epsilon-greedy", "random", "round-robin"])
def test_loop_runs_with_every_selector(store, tiny, renderer, scorer, selector):
    run_id, summary = run_loop(store, tiny, renderer, scorer, selector=selector)
    rounds = store.query("SELECT * FROM rounds WHERE run_id = ? ORDER BY round", [run_id])
    assert [(r["round"], r["phase"], r["status"]) for r in rounds] == [
        (1, "search", "finished"), (2, "search", "finished"), (3, "selection", "finished"), (4, "evaluation", "finished")]
    for r in rounds[:2]:
        plan = json.loads(r["plan_json"])
        assert len(plan["prompts"]) == 2 and len(set(plan["arms"])) == 2
        # paired design: every arm and the naive prompt on the same (prompt, seed) pairs
        pairs = store.query("SELECT arm, prompt_id, seed FROM trials WHERE run_id = ? AND round = ?", [run_id, r["round"]])
        by_arm = {}
        for p in pairs:
            by_arm.setdefault(p["arm"], set()).add((p["prompt_id"], p["seed"]))
        assert len(by_arm) == 3 and len({frozenset(v) for v in by_arm.values()}) == 1
    # scores are against the naive prompt, not the rewrite
    rows = store.query("""SELECT p.text AS naive, s.target_prompt FROM trials t JOIN prompts p ON p.id = t.prompt_id
                          JOIN scores s ON s.id = t.score_id WHERE t.run_id = ?""", [run_id])
    assert all(r["naive"] == r["target_prompt"] for r in rows)
    # gradients made new instructions with lineage, and the population stays at its size
    new = store.query("SELECT * FROM instructions WHERE run_id = ? AND origin = 'modifier'", [run_id])
    assert new and all(n["parent_id"] and n["gradient_id"] for n in new)
    alive = store.query("SELECT * FROM instructions WHERE run_id = ? AND retired_round IS NULL", [run_id])
    assert len(alive) >= 3
    assert summary["best_instruction"] is not None
    # the selection pass chose the best: the highest gain on its shared prompts
    compared = [i["selection_gain"] for i in summary["instructions"] if i["selection_gain"] is not None]
    assert len(compared) >= 2 and summary["best_instruction"]["selection_gain"] == max(compared)
    arms = {row["arm"] for row in summary["heldout"]}
    assert arms == {"best", "initial", "naive"}
    for row in summary["heldout"]:
        if row["arm"] != "naive":
            d = row["diff_vs_naive"]
            assert d["ci_low"] <= d["mean"] <= d["ci_high"] and d["n"] == 2 * 2  # 2 held-out prompts x 2 seeds


def test_pulls_grow_only_on_pulls(store, tiny, renderer, scorer):
    run_id, summary = run_loop(store, tiny, renderer, scorer, rounds=3)
    plans = [json.loads(r["plan_json"]) for r in store.query(
        "SELECT plan_json FROM rounds WHERE run_id = ? AND phase = 'search'", [run_id])]
    for item in summary["instructions"]:
        assert item["pulls"] == sum(item["id"] in p["arms"] for p in plans)


def test_gradient_sees_weak_rewrites_and_better_prompts(store, tiny, renderer, scorer):
    llm = ScriptedLLM(script)
    run_loop(store, tiny, renderer, scorer, llm=llm, rounds=1)
    gradient_calls = [c for c in llm.calls if "You review" in c[0]["content"]]
    assert len(gradient_calls) == 1
    text = gradient_calls[0][-1]["content"]
    assert "Low-scoring prompt" in text and "Better prompt" in text
    call = store.one("SELECT * FROM llm_calls WHERE role = 'gradient'")
    assert call["template"] == "gradient" and call["template_hash"]


def test_no_gradient_ablation_makes_instructions_without_critique(store, tiny, renderer, scorer):
    llm = ScriptedLLM(script)
    run_id, _ = run_loop(store, tiny, renderer, scorer, llm=llm, gradient=False)
    assert not [c for c in llm.calls if "You review" in c[0]["content"]]
    assert store.query("SELECT * FROM instructions WHERE run_id = ? AND origin = 'modifier'", [run_id])


def test_malformed_llm_output_keeps_the_loop_running(store, tiny, renderer, scorer):
    run_id, summary = run_loop(store, tiny, renderer, scorer, llm=ScriptedLLM(junk))
    assert summary["heldout"]
    handled = store.query("SELECT handling FROM rewrites WHERE run_id = ? AND handling IS NOT NULL", [run_id])
    assert handled  # unusable rewrites fell back to the naive prompt, and say so
    assert store.query("SELECT * FROM instructions WHERE run_id = ? AND origin = 'modifier'", [run_id]) == []
    kinds = {e["kind"] for e in store.query("SELECT kind FROM events WHERE run_id = ?", [run_id])}
    assert "instruction_rejected" in kinds or "gradient_skipped" in kinds
    assert not list(Path(".").glob("rm*"))


def test_overlong_rewrites_are_cut_to_the_text_window(store, tiny, renderer, scorer):
    long = ScriptedLLM(lambda m: "a " + "very detailed glowing " * 60 if "You write" in m[0]["content"] else script(m))
    run_id, _ = run_loop(store, tiny, renderer, scorer, llm=long, rounds=1)
    rows = store.query("SELECT text, handling FROM rewrites WHERE run_id = ?", [run_id])
    assert rows and all("truncated_to_text_window" in r["handling"] for r in rows)
    assert all(renderer.token_count(r["text"]) <= 77 for r in rows)


def test_tiny_vae_decodes_search_rounds_and_the_full_vae_the_final_numbers(store, tiny, scorer):
    import dataclasses

    from promptevo.render import DiffusersRenderer

    fast = DiffusersRenderer(dataclasses.replace(tiny.render, tiny_vae="tiny"))
    full = fast.full_decoder()
    assert full.config.hash == tiny.render.hash != fast.config.hash and full.pipe is fast.pipe
    run_id, _ = run_loop(store, tiny, fast, scorer)
    rows = store.query("""SELECT r.phase, i.render_config_hash AS h FROM trials t JOIN images i ON i.id = t.image_id
                          JOIN rounds r ON r.run_id = t.run_id AND r.round = t.round WHERE t.run_id = ?""", [run_id])
    by_phase = {}
    for row in rows:
        by_phase.setdefault(row["phase"], set()).add(row["h"])
    assert by_phase == {"search": {fast.config.hash}, "selection": {full.config.hash}, "evaluation": {full.config.hash}}
    assert type(fast.pipe.vae).__name__ == "AutoencoderTiny"  # restored after each full-decoder call
