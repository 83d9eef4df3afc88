"""`promptevo serve` in a real headless Chromium: a running run updates by itself, ten keyboard
judgements change the human reward, the arm statistics and the next round's pick, and hostile
strings render as text."""

import json
import subprocess
import sys
import time

import pytest

from tests.test_serve import HOSTILE, _synthetic_run, synthetic  # noqa: F401 - the module's synthetic models
from tests.web import PROMPTS, ROOT, chromium, serving

pytestmark = pytest.mark.slow


def test_a_running_run_updates_in_the_browser_as_rounds_finish(tmp_path):
    from promptevo.config import PROFILES
    from promptevo.optimise.run_config import OptimizeConfig, create_run
    from promptevo.storage.store import Store

    db = tmp_path / "live.db"
    with Store(db) as store:
        run_id = create_run(store, PROFILES["tiny"], OptimizeConfig(rounds=3, batch_size=2, population=2, new_per_gradient=1,
                                                                    select_prompts=2, eval_seeds=1), PROMPTS[:5])
    with serving(db) as url, chromium() as page:
        page.goto(f"{url}/runs/{run_id}")
        assert page.inner_text("#rounds-done") == "0" and page.locator("#latest img").count() == 0
        driver = subprocess.Popen([sys.executable, "-m", "tests.loop_driver", str(db), run_id], cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            reloads = []
            page.on("load", lambda _: reloads.append(time.monotonic()))
            seen, deadline = set(), time.monotonic() + 240
            while time.monotonic() < deadline and "3" not in seen:
                page.wait_for_timeout(200)
                try:
                    seen.add(page.inner_text("#rounds-done", timeout=2000))
                except Exception:  # noqa: BLE001 - the page is reloading
                    continue
            # the page followed the run from round 0 to its last search round by reloading itself (how many
            # rounds it showed in between depends on how fast they finish against its 1.5 s poll)
            assert "3" in seen, seen
            loaded, deadline = 0, time.monotonic() + 60
            while loaded < 1 and time.monotonic() < deadline:  # the page may still reload as the run ends
                try:
                    page.wait_for_selector("#latest img", timeout=5000)
                    loaded = page.eval_on_selector_all("#latest img", "imgs => imgs.filter(i => i.complete && i.naturalWidth > 0).length")
                except Exception:  # noqa: BLE001 - a reload in between
                    pass
                page.wait_for_timeout(200)
            assert loaded >= 1
            assert int(page.locator("#arms tr[data-arm] .pulls").first.inner_text()) >= 1
        finally:
            driver.wait(timeout=300)
    assert driver.returncode == 0


def _arm_of(repo, run_id):
    from promptevo.human import arm_key

    return {t.id: arm_key(t.arm, t.instruction_id) for t in repo.trials(run_id)}


def test_keyboard_judgements_change_the_human_reward_and_the_next_rounds_pick(tmp_path, synthetic):  # noqa: F811
    """Two identical runs; in one, ten judgements made with the keyboard favour the arm with the
    lower mean gain. The run page shows its human value and mean gain rise, and greedy
    selection pulls it in round 3, while the unjudged twin pulls the other arm."""
    from playwright.sync_api import expect

    from promptevo.evaluation.evaluator import LocalEvaluator
    from promptevo.optimise.optimizer import Optimizer
    from promptevo.storage.repository import RunRepository
    from promptevo.storage.store import Store

    llm, renderer, scorer = synthetic
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    db, run_id = _synthetic_run(tmp_path / "a", synthetic)
    twin_db, twin_id = _synthetic_run(tmp_path / "b", synthetic)
    with Store(db) as store:
        repo = RunRepository(store)
        optimizer = Optimizer(store, run_id, llm=llm, evaluator=LocalEvaluator(renderer, [scorer]))
        means = {s.arm: s.mean for s in optimizer.arm_stats([1, 2])}
        weaker = min(means, key=means.get)
        arm_of = _arm_of(repo, run_id)
        with serving(db) as url, chromium() as page:
            page.goto(f"{url}/runs/{run_id}")
            row = f"#arms tr[data-arm='{weaker}']"
            gain_before = float(page.inner_text(f"{row} .gain"))
            assert page.inner_text(f"{row} .human") == "+0.00"
            page.goto(f"{url}/runs/{run_id}/judge")
            for n in range(1, 11):
                pair = page.locator("#pair")
                keys = [arm_of[int(pair.get_attribute(f"data-{side}"))] for side in ("left", "right")]
                key = ("ArrowLeft" if keys[0] == str(weaker) else "ArrowRight" if keys[1] == str(weaker)
                       else "1" if keys[0] == "naive" else "2" if keys[1] == "naive" else "n")
                page.keyboard.press(key)
                expect(page.locator("#judgement-count")).to_have_text(str(n))  # stored, and the next pair shown
            assert len(repo.judgements(run_id)) == 10 and {j["judge"] for j in repo.judgements(run_id)} == {"tester"}
            human = {r[0]: r for r in page.eval_on_selector_all("#human tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")}
            assert float(human[str(weaker)][2]) > 0.5
            page.goto(f"{url}/runs/{run_id}")
            assert float(page.inner_text(f"{row} .human")) > 0.5
            assert float(page.inner_text(f"{row} .gain")) > gain_before + 1.5  # weight 3 x the human value
        optimizer.search_round(3)
        picked = json.loads(repo.round(run_id, 3)["plan_json"])["arms"]
    with Store(twin_db) as store:
        Optimizer(store, twin_id, llm=llm, evaluator=LocalEvaluator(renderer, [scorer])).search_round(3)
        twin_picked = json.loads(RunRepository(store).round(twin_id, 3)["plan_json"])["arms"]
    assert picked == [weaker] and twin_picked != [weaker]


def test_hostile_strings_render_as_text_and_run_no_script(tmp_path, synthetic):  # noqa: F811
    db, run_id = _synthetic_run(tmp_path, synthetic, prompts=HOSTILE + PROMPTS[:3], rounds=1,
                                initial_instructions=("<script>alert(1)</script> in detail", "<img src=x onerror=alert(1)> in detail"))
    with serving(db) as url, chromium() as page:  # an alert or a page error fails the test
        for path in ("/", f"/runs/{run_id}", f"/runs/{run_id}/judge"):
            page.goto(url + path)
            assert page.eval_on_selector_all("script", "s => s.map(x => x.getAttribute('src'))") == ["/static/app.js"]
            assert page.locator("img[onerror], [onload], iframe, object").count() == 0
        page.goto(f"{url}/runs/{run_id}")
        text = page.inner_text("#arms")
        assert "<script>alert(1)</script> in detail" in text and "<img src=x onerror=alert(1)> in detail" in text
        page.goto(f"{url}/runs/{run_id}/judge")
        shown = page.inner_text("#prompt")
        assert shown in HOSTILE + PROMPTS[:3]  # the prompt, as the text it is


def test_a_phone_a_long_prompt_new_rounds_and_a_lost_server(tmp_path, synthetic):  # noqa: F811
    """At 390 px both images of a pair are on screen and no page scrolls sideways; a 2,000-character
    prompt is shown short with a control that shows it whole; a judge page with a pair announces
    new images without swapping the pair, one with nothing left loads new pairs by itself; a
    lost server is shown as such, not in the colour of a live one."""
    import numpy as np
    from playwright.sync_api import expect

    from promptevo.evaluation.evaluator import LocalEvaluator
    from promptevo.optimise.optimizer import Optimizer
    from promptevo.storage.repository import RunRepository
    from promptevo.storage.store import Store
    from promptevo.web import pages

    llm, renderer, scorer = synthetic
    long_prompt = "a lighthouse on a cliff, " + ", ".join(f"detail number {i} of the storm" for i in range(80))
    assert len(long_prompt) > 2000
    db, run_id = _synthetic_run(tmp_path, synthetic, prompts=[long_prompt, *PROMPTS[:5]], rounds=1, heldout_fraction=0.2)
    rng = np.random.default_rng(0)
    with Store(db) as store, chromium() as page:
        repo = RunRepository(store)
        server = serving(db)
        url = server.__enter__()
        try:
            page.set_viewport_size({"width": 390, "height": 844})
            for path in ("/", f"/runs/{run_id}", f"/runs/{run_id}/judge"):
                page.goto(url + path)
                assert page.evaluate("document.documentElement.scrollWidth") <= 390, path
            right = page.locator("#right").bounding_box()
            assert right["x"] >= 0 and right["x"] + right["width"] <= 390
            shown = page.get_attribute("#pair", "data-left")
            view = pages.judge_page(repo, run_id, rng)
            while view["pair"]:  # another judge judges every pair
                pair = view["pair"]
                repo.add_judgement(run_id, pair["left"]["trial"], pair["right"]["trial"], "both", "other judge")
                view = pages.judge_page(repo, run_id, rng)
            expect(page.locator("#news")).to_contain_text("New images", timeout=15000)
            assert page.get_attribute("#pair", "data-left") == shown  # the pair on screen stays
            page.goto(f"{url}/runs/{run_id}/judge")
            page.wait_for_selector("#done")
            Optimizer(store, run_id, llm=llm, evaluator=LocalEvaluator(renderer, [scorer])).search_round(2)
            page.wait_for_selector("#pair", timeout=20000)  # reloaded by itself with the new round's pairs
            page.goto(f"{url}/runs/{run_id}")
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            heights = page.eval_on_selector_all("#latest figcaption", "cs => cs.map(c => c.getBoundingClientRect().height)")
            clipped = page.locator("#latest figcaption details.clip").first
            before = clipped.bounding_box()["height"]
            assert max(heights) < 400 and before < 200  # the 2,000 characters are not spelled out (it would be thousands of px)
            clipped.locator("summary").click()
            assert clipped.bounding_box()["height"] > 5 * before  # the control shows it whole
            expect(page.locator("#live")).to_have_text("live", timeout=10000)
            live_colour = page.eval_on_selector("#live", "e => getComputedStyle(e).color")
        finally:
            server.__exit__(None, None, None)
        expect(page.locator("#live")).to_have_text("server unreachable", timeout=10000)
        assert page.eval_on_selector("#live", "e => getComputedStyle(e).color") != live_colour


def test_the_run_page_keeps_judgements_out_of_the_held_out_evidence_and_shows_bidi_controls(tmp_path, synthetic):  # noqa: F811
    from promptevo.evaluation.evaluator import LocalEvaluator
    from promptevo.optimise.optimizer import Optimizer
    from promptevo.storage.repository import RunRepository
    from promptevo.storage.store import Store
    from tests.test_serve import judge_for

    llm, renderer, scorer = synthetic
    db, run_id = _synthetic_run(tmp_path, synthetic, rounds=2, initial_instructions=("say \u202eevil\u202c in detail", "add light and lens words"))
    with Store(db) as store:
        judge_for(RunRepository(store), run_id, "1", 10)
        Optimizer(store, run_id, llm=llm, evaluator=LocalEvaluator(renderer, [scorer])).run_all()
    with serving(db) as url, chromium() as page:
        page.goto(f"{url}/runs/{run_id}")
        held = page.inner_text("main")
        assert "Objective measured on each held-out image: synthetic-v1 x1." in held and "human" not in page.inner_text("#heldout")
        assert "not held-out evidence" in held
        arms = page.inner_text("#arms")
        assert "say <U+202E>evil<U+202C> in detail" in arms and "\u202e" not in page.content()
