"""Retouching: the operations library, plans, the planner and search, `promptevo retouch` on real
photographs (scikit-image's) and hostile files, and `optimize --retouch`."""

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from promptevo.cli.main import _register_subcommands, app
from promptevo.llms.backends import ScriptedLLM
from promptevo.retouch.ops import OPS, STAGES, apply_op, apply_steps
from promptevo.retouch.plan import PlanError, parse_reply, validate
from promptevo.retouch.planner import (
    RetouchObjective,
    RetouchSettings,
    RulePlanner,
    retouch_images,
)
from promptevo.rewards.measures import (
    blockiness,
    describe,
    noise_sigma,
    psnr,
    sharpness,
    ssim,
)

from .lazy import torch

runner = CliRunner()
_register_subcommands()


def photo(name="coffee", size=(96, 128)):
    from skimage import data

    x = torch.tensor(getattr(data, name)()).permute(2, 0, 1).float() / 255
    return torch.nn.functional.interpolate(x[None], size=size, mode="area")[0]


def noisy(x, sigma=0.05, seed=0):
    return (x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))).clamp(0, 1)


@pytest.fixture(scope="module")
def objective():
    return RetouchObjective.from_weights("exposure=1,contrast=1,colourfulness=1,noise=1")


# -- operations ---------------------------------------------------------------------------------


def test_every_operation_is_bounded_deterministic_neutral_at_zero_and_batched():
    x = torch.stack([photo("coffee"), photo("astronaut")])
    assert len(OPS) >= 33 and {o.stage for o in OPS.values()} == set(STAGES)
    for name, op in OPS.items():
        assert op.low <= op.neutral <= op.high, name
        same = apply_op(name, x, op.neutral)
        assert torch.allclose(same, x, atol=2e-5), name
        values = torch.tensor([op.low, op.high])
        batched = apply_op(name, x, values)
        assert batched.min() >= 0 and batched.max() <= 1 and torch.isfinite(batched).all(), name
        one_by_one = torch.cat([apply_op(name, x[i:i + 1], float(values[i])) for i in range(2)])
        assert torch.allclose(batched, one_by_one, atol=1e-5), name  # a value per image, same result
        assert torch.equal(apply_op(name, x, values), batched), name  # deterministic


def test_operations_do_what_they_say_on_a_real_photograph():
    x = photo("coffee")[None]
    y = lambda im: float(describe(im)[0]["luminance_median"])  # noqa: E731
    assert y(apply_op("exposure", x, 1.0)) > y(x) > y(apply_op("exposure", x, -1.0))
    assert y(apply_op("low_light", x, 1.0)) > y(x)
    grey = apply_op("saturation", x, -1.0)
    assert float((grey.max(1).values - grey.min(1).values).max()) < 1e-5
    warm = apply_op("temperature", x, 1.0)
    assert float(warm[:, 0].mean() - warm[:, 2].mean()) > float(x[:, 0].mean() - x[:, 2].mean())
    n = noisy(x[0])[None]
    assert float(noise_sigma(apply_op("denoise", n, 1.0))) < 0.7 * float(noise_sigma(n))
    soft = apply_op("denoise", x, 1.0)
    assert float(sharpness(apply_op("deblur", soft, 1.5))) > float(sharpness(soft))
    assert float(sharpness(apply_op("sharpen", x, 1.0))) > float(sharpness(x))
    cast = x * torch.tensor([1.0, 0.85, 0.6]).reshape(1, 3, 1, 1)
    balanced = apply_op("white_balance", cast, 1.0)
    spread = lambda im: float(im.mean(dim=(2, 3)).std())  # noqa: E731
    assert spread(balanced) < 0.2 * spread(cast)
    blocks = torch.nn.functional.interpolate(torch.nn.functional.avg_pool2d(x, 8), scale_factor=8, mode="nearest")
    assert float(blockiness(apply_op("deblock", blocks, 1.0))) < float(blockiness(blocks))
    blue = torch.zeros(1, 3, 32, 32)
    blue[:, 2] = 0.8
    assert torch.allclose(apply_op("hue_red", blue, 1.0), blue, atol=1e-5)  # other bands are left alone
    assert not torch.allclose(apply_op("hue_blue", blue, 1.0), blue, atol=1e-3)


# -- plans --------------------------------------------------------------------------------------


@pytest.mark.parametrize("plan, message", [
    ([{"op": "glow", "value": 1}], "unknown operation 'glow'"),
    ([{"op": "exposure", "value": 3}], "outside [-2, 2]"),
    ([{"op": "exposure", "value": "bright"}], "is not a number"),
    ([{"op": "exposure", "value": float("nan")}], "outside"),
    ([{"op": "exposure", "value": 1}, {"op": "exposure", "value": 0.5}], "appears twice"),
    ([{"op": "saturation", "value": 0.2}, {"op": "exposure", "value": 0.5}], "lighting comes before colour"),
    ([{"op": "exposure", "value": 0.5}, {"op": "denoise", "value": 0.5}], "restore comes before lighting"),
    ({"op": "exposure"}, "a JSON list"),
    (["exposure"], "needs an \"op\""),
])
def test_invalid_plans_are_refused_naming_the_step(plan, message):
    with pytest.raises(PlanError, match=None) as info:
        validate(plan)
    assert message in str(info.value)


def test_plans_hash_into_the_variant_by_their_values_not_their_reasons(tiny):
    from promptevo.evaluation.evaluator import Variant

    a = validate([{"op": "sharpen", "value": 0.5, "reason": "soft"}, {"op": "denoise", "value": 0.2}])
    b = validate([{"op": "sharpen", "value": 0.5, "reason": "other words"}, {"op": "denoise", "value": 0.2}])
    c = validate([{"op": "denoise", "value": 0.2}, {"op": "sharpen", "value": 0.5}])  # restore order is free
    plain = Variant(tiny.render)
    assert Variant(tiny.render, a.post_ops()).hash == Variant(tiny.render, b.post_ops()).hash
    assert len({plain.hash, Variant(tiny.render, a.post_ops()).hash, Variant(tiny.render, c.post_ops()).hash}) == 3
    assert plain.hash == tiny.render.hash  # renders without a plan keep their old hash


def test_replies_are_read_as_lists_objects_or_successive_steps():
    assert parse_reply('Plan: [{"op": "denoise", "value": 0.3, "reason": "noisy"}]').ops() == ("denoise",)
    assert parse_reply('{"plan": [{"op": "exposure", "value": 1}]}').ops() == ("exposure",)
    twice = '{"op": "exposure", "value": 0.8}\nThis is {"op": "exposure", "value": 0.8} and {"op": "tint", "value": 0.1}'
    assert parse_reply(twice).pairs() == [("exposure", 0.8), ("tint", 0.1)]
    for bad in ["", "no plan here", "[1, 2", '[{"op": "exposure", "value": 9}]']:
        with pytest.raises(PlanError):
            parse_reply(bad)


# -- measures -----------------------------------------------------------------------------------


def test_measures_see_exposure_noise_and_the_full_reference_metrics_agree_with_scikit_image():
    from skimage.metrics import peak_signal_noise_ratio

    x = photo("astronaut")
    dark, grainy = apply_op("exposure", x[None], -1.5)[0], noisy(x, 0.08)
    m, d, g = describe(torch.stack([x, dark, grainy]))
    assert d["luminance_median"] < m["luminance_median"] and d["clipped_dark"] >= m["clipped_dark"]
    assert g["noise_sigma"] > 2 * m["noise_sigma"]
    assert psnr(x, x) == math.inf and ssim(x, x) == pytest.approx(1.0)
    ref = x.permute(1, 2, 0).double().numpy()
    assert psnr(grainy, x) == pytest.approx(peak_signal_noise_ratio(ref, grainy.permute(1, 2, 0).double().numpy(), data_range=1))
    assert ssim(grainy, x) < ssim(noisy(x, 0.02), x) < 1


# -- planner and search -------------------------------------------------------------------------


def test_search_never_ends_below_the_input_on_its_objective_and_keeps_the_guard(objective):
    x = apply_op("exposure", photo("chelsea")[None], -2.0)[0]
    [(out, o)] = retouch_images([x], None, objective, RetouchSettings(mode="search", trials=16, seed=3))
    assert o.source == "search" and o.trials == 16 and o.planner["status"] == "skipped"
    assert o.objective_after >= o.objective_before
    assert o.ssim_to_input >= 0.6 and o.plan.steps
    assert all(s.reason for s in o.plan.steps)
    assert torch.allclose(out, apply_steps(x[None], o.plan.pairs())[0], atol=1e-6)  # the plan replays the image


def test_rule_planner_explains_a_dark_noisy_photograph_and_the_search_improves_on_the_reference(objective):
    clean = photo("coffee")
    x = noisy(apply_op("exposure", clean[None], -2.0)[0], 0.03)
    [(_, p)] = retouch_images([x], RulePlanner(), objective, RetouchSettings(mode="planner"))
    assert p.source == "planner" and {"denoise", "exposure"} <= set(p.plan.ops())
    assert all("noise" in s.reason or "luminance" in s.reason or "cast" in s.reason for s in p.plan.steps)
    [(both, b)] = retouch_images([x], RulePlanner(), objective, RetouchSettings(mode="planner+search", trials=16))
    assert b.source == "planner+search" and set(b.plan.ops()) == set(p.plan.ops())
    assert psnr(both, clean) > psnr(x, clean) + 2  # measured against the clean photograph it never saw


def test_a_malformed_plan_falls_back_to_the_search_and_is_recorded(objective):
    llm = ScriptedLLM(lambda r: '[{"op": "glow", "value": 9, "reason": "why not"}]')
    [(_, o)] = retouch_images([photo("rocket")], llm, objective, RetouchSettings(mode="planner", trials=8))
    assert o.source == "fallback-search" and o.planner["status"] == "malformed"
    assert "unknown operation 'glow'" in o.planner["error"] and "glow" in o.planner["reply"]


def test_a_plan_that_breaks_the_identity_guard_is_not_applied(objective):
    x = photo("coffee")
    llm = ScriptedLLM(lambda r: '[{"op": "exposure", "value": 2, "reason": "brighter"}, {"op": "saturation", "value": -1}]')
    [(out, o)] = retouch_images([x], llm, objective, RetouchSettings(mode="planner", min_ssim=0.95))
    assert o.source == "guard" and not o.plan.steps and torch.equal(out, x)
    assert "below 0.95" in o.planner["guard"]


def test_a_vision_model_receives_the_image_with_the_statistics(monkeypatch, objective):
    import base64
    import io

    from PIL import Image

    from .openai_server import ScriptedServer
    from .test_llm import openai_llm

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with ScriptedServer(reply='[{"op": "exposure", "value": 0.5, "reason": "a bit dark"}]') as server:
        [(_, o)] = retouch_images([photo("chelsea")], openai_llm(server.url), objective,
                                  RetouchSettings(mode="planner", vision=True))
    assert o.source == "planner" and o.plan.pairs() == [("exposure", 0.5)]
    content = server.requests[0]["body"]["messages"][-1]["content"]
    assert content[0]["type"] == "text" and "luminance_median" in content[0]["text"]
    url = content[1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size == (128, 96)


# -- the command --------------------------------------------------------------------------------


def _save(image, path):
    from promptevo.images import save_png

    save_png(image, path)
    return str(path)


def test_retouch_command_with_the_offline_llm_writes_the_image_and_an_explainable_plan(tmp_path):
    from PIL import Image

    clean = photo("chelsea", size=(120, 180))
    src = _save(noisy(apply_op("exposure", clean[None], -1.0)[0], 0.03), tmp_path / "dark.png")
    r = runner.invoke(app, ["retouch", src, "--out", str(tmp_path / "out"), "--trials", "8", "--json", "--mode", "planner+search",
                            "--objective", "brisque=1,exposure=1,contrast=1,colourfulness=1,noise=1"])
    assert r.exit_code == 0, r.output
    [row] = json.loads(r.stdout)
    sidecar = json.loads((tmp_path / "out" / "retouched-0000.json").read_text())
    assert sidecar["planner_model"].endswith(".gguf")  # SmolLM2, the tiny profile's LLM
    assert sidecar["planner"]["status"] in ("ok", "malformed") and sidecar["source"] == row["source"]
    assert sidecar["plan"] and all({"op", "value", "reason"} <= set(s) for s in sidecar["plan"])
    assert sidecar["measures_before"]["luminance_median"] < 0.45 and sidecar["objective_after"] >= sidecar["objective_before"] - 1e-9
    assert Image.open(tmp_path / "out" / "retouched-0000.png").size == (180, 120)
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(sidecar["plan"]))
    again = runner.invoke(app, ["retouch", src, "--plan", str(plan), "--out", str(tmp_path / "replay"), "--json"])
    assert again.exit_code == 0, again.output
    a = np.asarray(Image.open(tmp_path / "out" / "retouched-0000.png"))
    b = np.asarray(Image.open(tmp_path / "replay" / "retouched-0000.png"))
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # the plan replays the result


def test_hostile_images_get_one_line_each_and_never_stop_the_batch(tmp_path):
    from PIL import Image

    good = _save(photo("coffee", size=(48, 64)), tmp_path / "good.png")
    rgb = (photo("rocket", size=(40, 60)).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray((np.linspace(0, 65535, 40 * 60).reshape(40, 60)).astype(np.uint16)).save(tmp_path / "deep.png")
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "alpha.png")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "palette.png")
    Image.new("RGB", (1, 1), "red").save(tmp_path / "dot.png")
    Image.new("RGB", (20000, 16), "grey").save(tmp_path / "wide.png")
    whole = (tmp_path / "good.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "notes.png").write_text("not an image at all")
    files = [tmp_path / n for n in ["truncated.png", "cmyk.jpg", "deep.png", "alpha.png", "palette.png", "dot.png",
                                    "wide.png", "notes.png", "missing.png"]] + [good]
    r = runner.invoke(app, ["retouch", *map(str, files), "--out", str(tmp_path / "out"), "--planner", "rules", "--mode", "planner+search",
                            "--trials", "4", "--max-side", "4096", "--json"])
    assert r.exit_code == 0, r.output
    rows = {row["input"].rsplit("/", 1)[-1]: row for row in json.loads(r.stdout)}
    assert set(rows) == {f.name for f in map(__import__("pathlib").Path, files)}
    skipped = {n: row["error"] for n, row in rows.items() if "error" in row}
    assert set(skipped) == {"truncated.png", "dot.png", "wide.png", "notes.png", "missing.png"}
    assert "truncated" in skipped["truncated.png"] and "too small" in skipped["dot.png"]
    assert "--max-side" in skipped["wide.png"] and "not an image" in skipped["notes.png"]
    assert "Traceback" not in r.output and r.stderr.count("skipped") >= 5
    for name in ["cmyk.jpg", "deep.png", "alpha.png", "palette.png", "good.png"]:
        assert Image.open(rows[name]["output"]).mode == "RGB", name
    deep = json.loads((tmp_path / "out" / "retouched-0002.json").read_text())
    assert "greyscale" in deep["converted"] and deep["measures_before"]["luminance_p99"] > 0.9  # 16 bits kept their range


def test_retouch_command_refuses_bad_input_with_one_line(tmp_path):
    src = _save(photo("coffee", size=(32, 32)), tmp_path / "a.png")
    (tmp_path / "bad.json").write_text('[{"op": "exposure", "value": 5}]')
    for args, message in [
        (["retouch", src, "--plan", str(tmp_path / "bad.json"), "--out", str(tmp_path / "o")], "outside [-2, 2]"),
        (["retouch", src], "--out DIR is needed"),
        (["retouch", src, "--out", str(tmp_path / "o"), "--mode", "magic"], "--mode is one of"),
        (["retouch", src, "--out", str(tmp_path / "o"), "--objective", "hps=-1"], "must be finite and >= 0"),
        (["retouch", str(tmp_path / "nothing.png"), "--out", str(tmp_path / "o"), "--mode", "search"], "0 retouched"),
    ]:
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, (args, r.output)
    bad = runner.invoke(app, ["optimize", "a fox", "a cat", "--retouch", str(tmp_path / "bad.json"), "--db", str(tmp_path / "x.db")])
    assert bad.exit_code == 2 and "outside [-2, 2]" in bad.output and not (tmp_path / "x.db").exists()
    listed = runner.invoke(app, ["retouch", "--list-ops", "--json"])
    assert listed.exit_code == 0 and len(json.loads(listed.stdout)) == len(OPS)


# -- in optimisation ----------------------------------------------------------------------------


def retouch_script(request):
    from .scripted import script

    if request.role == "retouch_planner":
        return '[{"op": "contrast", "value": 0.3, "reason": "flat"}, {"op": "saturation", "value": 0.2, "reason": "dull"}]'
    return script(request)


def test_optimize_with_retouch_plans_once_and_reuses_retouched_images_on_resume(tmp_path, tiny, evaluator):
    from promptevo.evaluation.evaluator import CachedEvaluator
    from promptevo.optimise.optimizer import Optimizer
    from promptevo.optimise.run_config import OptimizeConfig, create_run
    from promptevo.storage.repository import RunRepository
    from promptevo.storage.store import Store

    class Counting:
        """The evaluator, counting what it renders."""

        def __init__(self, inner):
            self.inner, self.rendered = inner, []
            for name in ("reward_names", "reward_versions", "search_variant", "final_variant"):
                setattr(self, name, getattr(inner, name))

        def evaluate(self, jobs):
            self.rendered += list(jobs)
            return self.inner.evaluate(jobs)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    prompts = ["a red fox", "a lighthouse", "a bowl of ramen", "a desert road", "an old tram"]
    config = OptimizeConfig(rounds=2, batch_size=2, eval_seeds=1, select_prompts=2, retouch="auto")
    stop = RuntimeError("stopped after round 1")

    def stop_after_first(progress):
        if progress.round == 1 and progress.stage == "round finished":
            raise stop

    with Store(tmp_path / "r.db") as store:
        run_id = create_run(store, tiny, config, prompts)
        first = Counting(evaluator)
        with pytest.raises(RuntimeError, match="stopped after round 1"):
            Optimizer(store, run_id, llm=ScriptedLLM(retouch_script), evaluator=first, on_progress=stop_after_first).run_all()
        repo = RunRepository(store)
        [event] = repo.events(run_id, "retouch_plan")
        assert event["data"]["source"] == "planner+search" and event["data"]["planner"]["status"] == "ok"
        plan_ops = [(s["op"], s["value"]) for s in event["data"]["plan"]]
        round1 = {(t.variant_hash, t.image_path) for t in repo.trials(run_id)}
        assert round1 and all(h != tiny.render.hash for h, _ in round1)  # every image is a retouched variant
        second = Counting(evaluator)
        summary = Optimizer(store, run_id, llm=ScriptedLLM(retouch_script), evaluator=second).run_all()
        assert summary["status"] == "finished" and summary["retouch"]["plan"] == event["data"]["plan"]
        assert len(repo.events(run_id, "retouch_plan")) == 1  # planned once
        assert len(repo.llm_calls(run_id, "retouch_planner")) == 1
        rerendered = {(j.variant.hash, j.text, j.seed) for j in second.rendered}
        first_keys = {(j.variant.hash, j.text, j.seed) for j in first.rendered}
        assert not rerendered & first_keys  # round 1's retouched images came from the cache
        assert all(j.variant.post_ops and [(p.op, p.value) for p in j.variant.post_ops] == plan_ops for j in second.rendered)
        fit = [j for j in first.rendered if not j.variant.post_ops]
        assert 0 < len(fit) <= 8  # the plan's fit: naive renders without the plan, kept in memory only
        retouched = [j for j in first.rendered if j.variant.post_ops]
        assert all(c.cached for c in CachedEvaluator(store, evaluator).evaluate(retouched))


# -- the benchmark --------------------------------------------------------------------------------


def test_degradations_are_seeded_and_the_oracle_inverts_them():
    from promptevo.lab.retouch_bench import degrade, oracle

    clean = photo("astronaut", size=(64, 64))
    for kind in ["underexpose", "cast", "low_contrast", "desaturate", "noise", "blur+noise"]:
        a, d = degrade(clean, kind, 2, seed=5)
        b, _ = degrade(clean, kind, 2, seed=5)
        assert torch.equal(a, b), kind  # the same degradation for the same seed
        assert psnr(oracle(a, d), clean) > psnr(a, clean), kind
    assert not torch.equal(degrade(clean, "noise", 2, seed=5)[0], degrade(clean, "noise", 2, seed=6)[0])


def test_the_retouch_benchmark_reports_every_arm_and_baseline_with_cis(tmp_path):
    config = tmp_path / "small.toml"
    config.write_text('kind = "retouch"\nname = "small"\nphotos = ["coffee", "sklearn:flower"]\nsize = 64\n'
                      'degradations = ["underexpose", "cast+low_contrast"]\nstrengths = [1, 3]\ntrials = 4\n')
    r = runner.invoke(app, ["experiment", "run", str(config), "--out", str(tmp_path / "out"), "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    arms = [row["arm"] for row in summary["table"]]
    assert arms == ["none", "CLAHE", "grey-world", "white-patch", "shades-of-grey", "grey-edge", "auto-enhance", "oracle",
                    "planner", "search", "planner+search", "detect"]
    assert summary["images"] == 8 and all(row["n"] == 8 for row in summary["table"])
    # the clean photographs are their own class: doing nothing leaves them, the detect arm too here
    assert summary["clean_images"] == 2 and summary["clean"]["none"]["changed"] == 0
    assert summary["aims"]["best_arm"] in arms and set(summary["aims"]["against"]) == {"CLAHE", "auto-enhance"}
    for row in summary["table"]:
        assert row["psnr"]["ci_low"] <= row["psnr"]["mean"] <= row["psnr"]["ci_high"]
    oracle_row = next(row for row in summary["table"] if row["arm"] == "oracle")
    assert oracle_row["psnr_vs_none"]["mean"] > 0
    text = (tmp_path / "out" / "results.md").read_text()
    assert all(f"| {a} |" in text for a in arms) and "planner+search - search" in text and "Aims, for the best arm" in text
    rows = list(__import__("csv").DictReader(open(tmp_path / "out" / "results.csv")))
    assert len(rows) == (8 + 2) * len(arms)
    from PIL import Image

    assert Image.open(tmp_path / "out" / "contact.jpg").size[0] >= 7 * 64


def test_a_retouch_objective_uses_the_profiles_kind_of_model(tmp_path):
    """The objective's rewards follow the profile: toy stand-ins on tiny, the real weights on any
    other (here missing offline, said in one line instead of scoring with a random toy)."""
    from PIL import Image

    from promptevo.config import TINY
    from promptevo.rewards.objective import weighted_objective

    assert weighted_objective("aesthetic=1", tiny=True)[0]["aesthetic"].version == TINY
    assert weighted_objective("aesthetic=1", tiny=False)[0]["aesthetic"].version == "v2"
    Image.new("RGB", (64, 64), (90, 120, 150)).save(tmp_path / "photo.png")
    r = runner.invoke(app, ["retouch", str(tmp_path / "photo.png"), "--out", str(tmp_path / "out"), "--objective", "aesthetic=1",
                            "--profile", "gpu", "--device", "cpu", "--planner", "rules"])
    assert r.exit_code == 2, r.output
    assert "cannot load CLIP ViT-L-14 weights" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# -- detection before action ----------------------------------------------------------------------


def test_detection_finds_strong_degradations_with_confidence_and_nothing_on_clean_photographs():
    from promptevo.lab.retouch_bench import degrade, load_photo
    from promptevo.retouch.detect import ACT_AT, acted, detect, statistics

    for name in ("coffee", "sklearn:china", "camera"):
        clean = load_photo(name, 192)
        assert not acted(detect(statistics(clean[None])[0])), name  # a good photograph: nothing to do
        for kind, op in [("noise", "denoise"), ("low_contrast", "contrast"), ("blur", "deblur")]:
            degraded, _ = degrade(clean, kind, 3, seed=0)
            findings = detect(statistics(degraded[None])[0])
            assert op in [f.op for f in acted(findings)], (name, kind, findings)
            assert all(0 < f.confidence <= 1 and f.evidence for f in findings)
            assert all(f.confidence >= ACT_AT for f in acted(findings))


def test_detect_mode_leaves_a_clean_photograph_bit_identical_and_says_why(tmp_path):
    """`retouch --mode detect`: no LLM, a clean photograph comes out with the same pixels and the
    sidecar names what was measured; a noisy one is denoised, and only denoised."""
    from PIL import Image

    from promptevo.lab.retouch_bench import load_photo

    clean = load_photo("sklearn:china", 192)
    src = _save(clean, tmp_path / "clean.png")
    dirty = _save(noisy(clean, 0.06), tmp_path / "noisy.png")
    r = runner.invoke(app, ["retouch", src, dirty, "--mode", "detect", "--trials", "8", "--out", str(tmp_path / "out"), "--json"])
    assert r.exit_code == 0, r.output
    first, second = json.loads(r.stdout)
    assert first["source"] == "nothing detected" and first["steps"] == 0
    before, after = np.asarray(Image.open(src)), np.asarray(Image.open(tmp_path / "out" / "retouched-0000.png"))
    assert np.array_equal(before, after)  # bit-identical
    sidecar = json.loads((tmp_path / "out" / "retouched-0000.json").read_text())
    assert sidecar["planner"]["status"] == "nothing detected" and "noise_sigma" in sidecar["planner"]["statistics"]
    assert second["source"] == "detect" and [s["op"] for s in json.loads((tmp_path / "out" / "retouched-0001.json").read_text())["plan"]] == ["denoise"]
    assert second["objective_after"] >= second["objective_before"]
    noisy_sidecar = json.loads((tmp_path / "out" / "retouched-0001.json").read_text())
    assert any(d["degradation"] == "noise" and d["confidence"] >= 0.5 for d in noisy_sidecar["planner"]["detected"])
    assert "noise detected (confidence" in noisy_sidecar["plan"][0]["reason"]


def test_a_result_the_objective_scores_below_the_untouched_image_is_never_applied():
    """Whatever the planner says (here: an exposure push on a well exposed photograph, which the
    exposure band scores lower), the untouched image is kept and the sidecar says why."""
    from promptevo.retouch.plan import Plan, Step
    from promptevo.retouch.planner import complete_plan

    clean = photo("coffee")[None]
    objective = RetouchObjective.from_weights("exposure=1")
    bad = (Plan((Step("exposure", 2.0, "brighter"),)), {"status": "ok"})
    after, outcome = complete_plan(clean, bad, lambda b, m: objective.values(b), RetouchSettings(mode="planner", min_ssim=0.0))
    assert outcome.source == "objective guard" and not outcome.plan.steps and torch.equal(after, clean)
    assert "below" in outcome.planner["objective_guard"] and outcome.objective_after == outcome.objective_before


def test_cast_estimators_are_neutral_at_zero_and_grey_edge_undoes_a_cast_best():
    """White-patch, shades-of-grey and grey-edge in linear light; on real photographs with a known
    cast, grey-edge recovers the most (the measurement behind the detect mode's choice)."""
    from promptevo.lab.retouch_bench import degrade, load_photo

    gains = {}
    for name in ("astronaut", "coffee", "sklearn:china", "motorcycle_left"):
        clean = load_photo(name, 128)
        for s in (2, 3):
            cast, _ = degrade(clean, "cast", s, seed=0)
            for op in ("white_balance", "white_patch", "shades_of_grey", "grey_edge"):
                assert torch.allclose(apply_op(op, cast[None], 0.0)[0], cast, atol=1e-5)
                gains.setdefault(op, []).append(psnr(apply_op(op, cast[None], 1.0)[0], clean) - psnr(cast, clean))
    mean = {op: sum(v) / len(v) for op, v in gains.items()}
    assert mean["grey_edge"] > mean["white_balance"], mean  # grey-world loses most
