import json
from pathlib import Path

import pytest

from promptevo.llms.backends import ScriptedLLM
from promptevo.optimise.optimizer import Optimizer
from promptevo.optimise.run_config import OptimizeConfig, create_run, split_prompts

from .scripted import junk, script

PROMPTS = ["a waterfall", "a samurai", "a lighthouse at night", "a fox in the snow", "an old library", "a city street in the rain"]
ROOT = Path(__file__).resolve().parent.parent


def run_loop(store, tiny, evaluator, llm=None, **kw):
    config = OptimizeConfig(**{"rounds": 2, "batch_size": 2, **kw})
    run_id = create_run(store, tiny, config, PROMPTS)
    summary = Optimizer(store, run_id, llm=llm or ScriptedLLM(script), evaluator=evaluator).run_all()
    return run_id, summary


def test_split_is_deterministic_and_disjoint():
    opt, held = split_prompts(PROMPTS, 0.34, seed=3)
    assert (opt, held) == split_prompts(PROMPTS, 0.34, seed=3)
    assert len(held) == 2 and not set(opt) & set(held) and set(opt) | set(held) == set(PROMPTS)


@pytest.mark.parametrize("selector", ["ucb", "greedy", "epsilon-greedy", "random", "round-robin"])
def test_loop_runs_with_every_selector(store, repo, tiny, evaluator, selector):
    run_id, summary = run_loop(store, tiny, evaluator, selector=selector)
    rounds = repo.rounds(run_id)
    assert [(r["round"], r["phase"], r["status"]) for r in rounds] == [
        (1, "search", "finished"), (2, "search", "finished"), (3, "selection", "finished"), (4, "evaluation", "finished")]
    for r in rounds[:2]:
        plan = json.loads(r["plan_json"])
        assert len(plan["prompts"]) == 2 and len(set(plan["arms"])) == 2
        # paired design: every arm and the naive prompt on the same (prompt, seed) pairs
        by_arm = {}
        for t in repo.trials(run_id, round=r["round"]):
            by_arm.setdefault(t.arm, set()).add((t.prompt_id, t.seed))
        assert len(by_arm) == 3 and len({frozenset(v) for v in by_arm.values()}) == 1
    # scores are against the naive prompt, not the rewrite
    texts = {p["id"]: p["text"] for p in repo.prompts(run_id)}
    trials = repo.trials(run_id)
    assert trials and all(row["target"] == texts[t.prompt_id] for t in trials for row in t.score_rows.values())
    # gradients made new instructions with lineage, and the population stays at its size
    new = repo.instructions(run_id, origin="modifier")
    assert new and all(n["parent_id"] and n["gradient_id"] for n in new)
    assert len([i for i in repo.instructions(run_id) if i["retired_round"] is None]) >= 3
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


def test_pulls_grow_only_on_pulls(store, repo, tiny, evaluator):
    run_id, summary = run_loop(store, tiny, evaluator, rounds=3)
    plans = [json.loads(r["plan_json"]) for r in repo.rounds(run_id) if r["phase"] == "search"]
    for item in summary["instructions"]:
        assert item["pulls"] == sum(item["id"] in p["arms"] for p in plans)


def test_every_llm_call_names_its_role_and_the_critic_sees_structured_examples(store, repo, tiny, evaluator):
    llm = ScriptedLLM(script)
    run_id, _ = run_loop(store, tiny, evaluator, llm=llm, rounds=1)
    assert set(llm.roles()) == {"generator", "gradient", "modifier"}
    [critique] = [r for r in llm.calls if r.role == "gradient"]
    examples = critique.fields["examples"]
    assert examples and all(e.low and (e.better or e.references) for e in examples)
    assert all(e.better_score > e.low_score for e in examples if e.better)
    text = critique.messages[-1]["content"]  # what a real LLM reads: the same examples as text
    assert all(f"Low-scoring prompt (score {e.low_score:.2f}): {e.low}" in text for e in examples)
    [call] = repo.llm_calls(run_id, role="gradient")
    assert call["template"] == "gradient" and call["template_hash"]


def test_no_gradient_ablation_makes_instructions_without_critique(store, repo, tiny, evaluator):
    llm = ScriptedLLM(script)
    run_id, _ = run_loop(store, tiny, evaluator, llm=llm, gradient=False)
    assert "gradient" not in llm.roles()
    assert repo.instructions(run_id, origin="modifier")


def test_malformed_llm_output_keeps_the_loop_running(store, repo, tiny, evaluator):
    run_id, summary = run_loop(store, tiny, evaluator, llm=ScriptedLLM(junk))
    assert summary["heldout"]
    assert [r for r in repo.rewrites(run_id) if r["handling"]]  # unusable rewrites fell back to the naive prompt, and say so
    assert repo.instructions(run_id, origin="modifier") == []
    kinds = {e["kind"] for e in repo.events(run_id)}
    assert "instruction_rejected" in kinds or "gradient_skipped" in kinds
    assert not list(Path(".").glob("rm*"))


def test_overlong_rewrites_are_cut_to_the_text_window(store, repo, tiny, evaluator, renderer):
    long = ScriptedLLM(lambda r: "a " + "very detailed glowing " * 60 if r.role == "generator" else script(r))
    run_id, _ = run_loop(store, tiny, evaluator, llm=long, rounds=1)
    rows = repo.rewrites(run_id)
    assert rows and all("truncated_to_text_window" in r["handling"] for r in rows)
    assert all(renderer.token_count(r["text"]) <= 77 for r in rows)


def test_tiny_vae_decodes_search_rounds_and_the_full_vae_the_final_numbers(store, repo, tiny, scorer):
    import dataclasses

    from promptevo.evaluation.evaluator import LocalEvaluator
    from promptevo.renderers.diffusers import DiffusersRenderer

    fast = DiffusersRenderer(dataclasses.replace(tiny.render, tiny_vae="tiny"))
    full = fast.full_decoder()
    assert full.config.hash == tiny.render.hash != fast.config.hash and full.pipe is fast.pipe
    evaluator = LocalEvaluator(fast, [scorer])
    assert evaluator.search_variant.hash == fast.config.hash and evaluator.final_variant.hash == full.config.hash
    run_id, _ = run_loop(store, tiny, evaluator)
    by_phase = {}
    for t in repo.trials(run_id):
        by_phase.setdefault(t.phase, set()).add(t.variant_hash)
    assert by_phase == {"search": {fast.config.hash}, "selection": {full.config.hash}, "evaluation": {full.config.hash}}
    assert type(fast.pipe.vae).__name__ == "AutoencoderTiny"  # restored after each full-decoder call


def test_stages_are_found_by_phase_not_by_round_number(store, repo, tiny, evaluator):
    """A run with no search rounds still has its selection pass and held-out evaluation, under
    the next free round numbers, and a resumed run finds them by their stored phase."""
    run_id, summary = run_loop(store, tiny, evaluator, rounds=0)
    assert [(r["round"], r["phase"]) for r in repo.rounds(run_id)] == [(1, "selection"), (2, "evaluation")]
    again = Optimizer(store, run_id, llm=ScriptedLLM(script), evaluator=evaluator).run_all()
    assert len(repo.rounds(run_id)) == 2 and again["heldout"] == summary["heldout"]


def test_every_reply_records_whether_it_parsed_and_the_summary_gives_the_rate_per_role(store, repo, tiny, evaluator):
    """The scripted LLM answers generator requests with a preamble (repaired), critiques and
    instructions in the form asked (ok); the junk LLM's replies are counted as fallbacks, never
    silently."""
    from promptevo.optimise.summary import summarize

    run_id, _ = run_loop(store, tiny, evaluator, llm=ScriptedLLM(script), rounds=1)
    rates = {r["role"]: r for r in summarize(repo, run_id)["parse_rates"]}
    assert set(rates) == {"generator", "gradient", "modifier"}
    assert rates["generator"]["repaired"] == rates["generator"]["calls"] > 0  # "Here is the prompt: ..." stripped
    assert rates["gradient"]["ok"] == rates["gradient"]["calls"] and rates["modifier"]["ok"] == rates["modifier"]["calls"]
    assert all(r["parsed"] == 1.0 for r in rates.values())
    junk_run, _ = run_loop(store, tiny, evaluator, llm=ScriptedLLM(junk), rounds=1)
    junk_rates = {r["role"]: r for r in summarize(repo, junk_run)["parse_rates"]}
    assert junk_rates["generator"]["fallback"] > 0 and junk_rates["generator"]["parsed"] < 1.0
    from promptevo.optimise.critic import update

    junk_llm = ScriptedLLM(lambda request: "ok")  # too short to be an instruction
    [rejected] = update(junk_llm, "Add the light.", ["Name the colours."], set(), repo=repo, run_id=junk_run, seed=0)
    assert rejected.rejected == "unusable"
    modifier = {r["role"]: r for r in summarize(repo, junk_run)["parse_rates"]}["modifier"]
    assert modifier["fallback"] == modifier["calls"] == 1
    unrecorded = store.conn.execute("SELECT COUNT(*) FROM llm_calls WHERE parse IS NULL AND run_id IN (?, ?)", [run_id, junk_run]).fetchone()[0]
    assert unrecorded == 0
