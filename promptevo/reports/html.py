"""One self-contained HTML page per run: images are inlined, plots are inline SVG, so the file
can be mailed or archived on its own."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptevo.display import visible
from promptevo.optimise.summary import decision_rows, round_rewards, summarize
from promptevo.reports.plots import line_plot, scatter_plot
from promptevo.rewards.objective import describe, run_objective
from promptevo.storage.repository import RunRepository
from promptevo.storage.store import Store

_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:14px;vertical-align:top}
.grid{display:flex;flex-wrap:wrap;gap:12px}.cell{width:260px;font-size:12px}.cell img{width:256px;image-rendering:pixelated}
.lineage ul{margin:0 0 0 1.2rem}.missing{width:256px;height:96px;background:#eee;color:#666;display:flex;align-items:center;justify-content:center}.retired{color:#888}
pre.critique{white-space:pre-wrap;background:#f6f6f6;padding:8px;font-size:13px}
"""


def _e(x: Any) -> str:
    return html.escape(visible(str(x)))


MISSING_IMAGE = '<div class="missing">image file missing</div>'


def _img(store: Store, rel: str, missing: list[str]) -> str:
    """The image inlined, or a placeholder (counted in `missing`) when its file is absent or its
    stored path leads outside the artifacts folder."""
    path = store.artifact_file(rel)
    if path is None:
        missing.append(rel)
        return MISSING_IMAGE
    return f'<img alt="image" src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}">'


@dataclass(frozen=True)
class Report:
    path: Path
    images: int
    missing: int


def write_report(store: Store, run_id: str, path: Path) -> Report:
    """The report written to `path`, with how many images it shows and how many files were missing."""
    repo = RunRepository(store)
    missing: list[str] = []
    objective = run_objective(repo, run_id)
    summary = summarize(repo, run_id, objective)
    items = {i["id"]: i for i in summary["instructions"]}
    children: dict[int | None, list[int]] = {}
    for i in summary["instructions"]:
        children.setdefault(i["parent_id"], []).append(i["id"])

    def lineage(parent: int | None) -> str:
        if parent not in children:
            return ""
        lis = []
        for iid in children[parent]:
            i = items[iid]
            mean = "-" if i["mean_reward"] is None else f"{i['mean_reward']:+.3f}"
            cls = ' class="retired"' if i["retired_round"] else ""
            lis.append(f"<li{cls}><b>#{iid}</b> ({i['origin']}, round {i['created_round']}, pulls {i['pulls']}, "
                       f"mean gain {mean}{', retired' if i['retired_round'] else ''}): {_e(i['text'])}{lineage(iid)}</li>")
        return "<ul>" + "".join(lis) + "</ul>"

    rewards = round_rewards(repo, run_id, objective)
    series: dict[str, list[tuple[int, float]]] = {}
    best_by_round: dict[int, float] = {}
    for row in rewards:
        series.setdefault(f"#{row['arm']}", []).append((row["round"], row["reward"]))
        best_by_round[row["round"]] = max(best_by_round.get(row["round"], float("-inf")), row["reward"])
    running, best_curve = float("-inf"), []
    for rnd in sorted(best_by_round):
        running = max(running, best_by_round[rnd])
        best_curve.append((rnd, running))
    series["best so far"] = best_curve

    heldout_rows = "".join(
        f"<tr><td>{_e(r['arm'])}</td><td>{_e(r['instruction_id'] or '-')}</td><td>{r['score_mean']:.3f}</td>"
        f"<td>[{r['score_ci_low']:.2f}, {r['score_ci_high']:.2f}]</td>"
        + (f"<td>{r['diff_vs_naive']['mean']:+.3f}</td><td>[{r['diff_vs_naive']['ci_low']:+.3f}, {r['diff_vs_naive']['ci_high']:+.3f}]</td>"
           if r["diff_vs_naive"] else "<td>-</td><td>-</td>") + "</tr>"
        for r in summary["heldout"]
    )

    # per prompt: the naive image next to the best-scoring rewrite, from the evaluation round
    texts = repo.prompt_texts([p["id"] for p in repo.prompts(run_id)])
    trials = sorted(repo.trials(run_id), key=lambda t: (t.phase != "evaluation", -t.round, -objective.score(t.scores)))
    grids = []
    seen: set[str] = set()
    for t in trials:
        if t.prompt_id in seen:
            continue
        seen.add(t.prompt_id)
        naive = next((x for x in trials if x.prompt_id == t.prompt_id and x.arm == "naive" and x.seed == t.seed), None)
        best = next((x for x in trials if x.prompt_id == t.prompt_id and x.arm != "naive"), None)
        cells = []
        for label, shown in (("naive prompt", naive), ("best rewrite", best)):
            if shown:
                cells.append(f'<div class="cell">{_img(store, shown.image_path, missing)}<br><b>{label}</b> · score {objective.score(shown.scores):.3f}'
                             f' · seed {shown.seed}<br>{_e(shown.rendered)}</div>')
        grids.append(f"<h3>{_e(texts[t.prompt_id])}</h3><div class=\"grid\">{''.join(cells)}</div>")

    best = summary["best_instruction"]
    page_sections = (_variants(summary) + _rewards(summary) + _agent(summary) + _critiques(repo, run_id) + _references(repo, run_id, store)
                     + _budget(repo, run_id, summary, best_by_round) + _timings(repo, run_id) + _parse_rates(summary))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>promptevo run {_e(run_id)}</title>
<style>{_CSS}</style></head><body>
<h1>promptevo run {_e(run_id)}</h1>
<p>Status: {_e(summary['status'])} · profile {_e(summary['profile'])} · config {_e(summary['config_hash'])}</p>
<p>Objective: {_e(describe(summary['objective']))}</p>
<h2>Best instruction</h2><p>{_e(best['text']) if best else '-'}</p>{_retired(best)}
<h2>Held-out comparison (fresh seeds)</h2>
<p>Measured on each held-out image: {_e(describe(summary.get('heldout_objective') or summary['objective']))}.{_verdict(summary)}</p>
<table><tr><th>arm</th><th>instruction</th><th>mean objective</th><th>95% CI</th><th>gain vs naive</th><th>95% CI of gain</th></tr>{heldout_rows}</table>
{_judged(summary)}
<h2>Score curves</h2><p>Each instruction's mean gain over the naive prompt in the search rounds it was
evaluated in, and the best so far.</p>{line_plot(series, "search round", "gain over naive (objective)")}
<h2>Instruction lineage</h2><div class="lineage">{lineage(None)}</div>
{page_sections}
<h2>Images</h2>{''.join(grids)}
</body></html>"""
    path.write_text(page, encoding="utf-8")
    return Report(path, images=sum(g.count('class="cell"') for g in grids), missing=len(missing))


def _retired(best: dict | None) -> str:
    if not best or not best.get("retired_round"):
        return ""
    return f'<p class="retired">Retired in round {best["retired_round"]}: no longer searched, still the best measured.</p>'


def _verdict(summary: dict) -> str:
    v = summary.get("heldout_verdict")
    if not v:
        return ""
    ci = f"{v['gain']:+.3f} [{v['ci_low']:+.3f}, {v['ci_high']:+.3f}]"
    if v["verdict"] == "worse":
        instead = "use the plain prompts as they are" if v["use"] == "naive" else f"the {_e(v['use'])} baseline beat them"
        return f" <b>The answer is worse than the plain prompts here ({ci}): {instead}.</b>"
    return f" The answer {'beats' if v['verdict'] == 'better' else 'is not clearly better than'} the plain prompts here ({ci})."


def _parse_rates(summary: dict) -> str:
    rows = "".join(f"<tr><td>{_e(r['role'])}</td><td>{r['calls']}</td><td>{r['ok']}</td><td>{r['repaired']}</td>"
                   f"<td>{r['fallback']}</td><td>{100 * r['parsed']:.0f}%</td></tr>" for r in summary.get("parse_rates") or [])
    if not rows:
        return ""
    return ("<h2>LLM replies per role</h2><p>In the form asked, repaired by the tolerant parser, or unusable (promptevo "
            "then used its fallback: the naive prompt, the blind improvement, no new instruction).</p><table><tr><th>role</th>"
            f"<th>replies</th><th>as asked</th><th>repaired</th><th>fallback</th><th>usable</th></tr>{rows}</table>")


def _judged(summary: dict) -> str:
    """The judgement-based reward in its own table: an arm's fitted value, never held-out evidence."""
    j = summary.get("judged")
    if not j:
        return ""
    phases = ", ".join(f"{n} on {_e(p)} images" for p, n in j["images_judged_by_phase"].items()) or "none yet"
    rows = "".join(f"<tr><td>{_e(a['arm'])}</td><td>{a['value']:+.3f}</td><td>{a['judgements']}</td></tr>" for a in j["arms"])
    return (f"<h2>Judgements ({_e(j['reward'])} reward)</h2><p>{j['judgements']} judgements by {_e(', '.join(j['judges']) or '-')}; "
            f"{phases}. Each arm's value is fitted from judgements of its images; it is not held-out evidence.</p>"
            f"<table><tr><th>arm</th><th>value</th><th>judgements</th></tr>{rows}</table>")


def _num(v: Any, fmt: str = "+.3f") -> str:
    return "-" if v is None else format(v, fmt)


def _variants(summary: dict) -> str:
    """Render variants with their cost, and the routing table (runs made with --variant)."""
    v = summary.get("variants")
    if not v:
        return ""
    rows = "".join(f"<tr><td>{_e(r['name'])}</td><td>{_e(r['status'] if not r['error'] else 'failed: ' + r['error'])}</td>"
                   f"<td>{r['pulls']}</td><td>{_num(r['mean_gain'])}</td><td>{_num(r['seconds_per_image'], '.3f')}</td>"
                   f"<td>{_num(r['gain_per_gpu_s'], '+.2f')}</td></tr>" for r in v["variants"])
    routes = "".join(f"<tr><td>{r['group']}</td><td>{_e('; '.join(r['examples']))}</td><td>#{r['instruction_id']}</td>"
                     f"<td>{_e(r['variant'])}</td><td>{_num(r['gain'])}</td><td>{r['n']}</td></tr>" for r in v["routing"])
    d = v.get("routed_vs_best")
    versus = (f"<p>Held-out: routed minus the best single arm ({_e(v['best_variant'] or '-')}) {d['mean']:+.3f} "
              f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] over {d['n']} (prompt, seed) pairs.</p>") if d else ""
    return (f"<h2>Render variants</h2><p>{_e(v['search'])} search; gains before cost, cost weight {v['cost_weight']:g}.</p>"
            "<table><tr><th>variant</th><th>status</th><th>pulls</th><th>mean gain</th><th>s/image</th><th>gain per GPU-s</th></tr>"
            f"{rows}</table><h2>Routing table</h2><table><tr><th>group</th><th>prompts like</th><th>instruction</th>"
            f"<th>variant</th><th>gain there</th><th>gains</th></tr>{routes}</table>{versus}")


def _agent(summary: dict) -> str:
    """The objective agent's decisions with their reasons, and the feedback it was given."""
    rows = ["<tr>" + "".join(f"<td>{_e(cell)}</td>" for cell in row) + "</tr>" for row in decision_rows(summary)]
    if not rows:
        return ""
    return ("<h2>Objective agent</h2><table><tr><th>round</th><th>what</th><th>weights</th><th>reason or feedback</th></tr>"
            + "".join(rows) + "</table>")


def _critiques(repo: RunRepository, run_id: str) -> str:
    """Every textual gradient: which instruction it critiqued, in which round, what it said and
    which improvements the updater was asked for."""
    rows = []
    for g in repo.gradients(run_id):
        improvements = "".join(f"<li>{_e(i)}</li>" for i in json.loads(g["improvements_json"]))
        rows.append(f"<h3>Round {g['round']}: critique of #{g['instruction_id']}</h3>"
                    f"<pre class=\"critique\">{_e(g['text'])}</pre><p>Improvements asked for:</p><ul>{improvements}</ul>")
    return "<h2>Critiques</h2>" + ("".join(rows) or "<p>No critique yet.</p>")


def _references(repo: RunRepository, run_id: str, store: Store) -> str:
    """The reference-database prompts the critic was shown, by round."""
    events = repo.events(run_id, "reference_prompts")
    if not events:
        return ""
    ref_db = repo.run_config(run_id)["optimize"].get("reference_db")
    texts: dict[str, str] = {}
    if ref_db and Path(ref_db).is_file():
        with Store(ref_db, readonly=True) as refs:
            texts = refs.prompt_texts([r["reference_id"] for e in events for r in e["data"]["references"]])
    names = repo.prompt_texts([r["prompt_id"] for e in events for r in e["data"]["references"]])
    rows = "".join(
        f"<tr><td>{e['round']}</td><td>{_e(names.get(r['prompt_id'], r['prompt_id']))}</td>"
        f"<td>{r['similarity']:.3f}</td><td>{_e(texts.get(r['reference_id'], r['reference_id']))}</td></tr>"
        for e in events for r in e["data"]["references"])
    return ("<h2>Reference prompts shown to the critic</h2><table><tr><th>round</th><th>short prompt</th>"
            f"<th>similarity</th><th>reference prompt</th></tr>{rows}</table>")


def _budget(repo: RunRepository, run_id: str, summary: dict, best_by_round: dict[int, float]) -> str:
    """What the result cost, and the gain against images: the best search-round gain so far
    after each round, at the images scored by then, and the held-out gain at the end."""
    b = summary["budget"]
    images: dict[int, set[int]] = {}
    for t in repo.trials(run_id, phase="search"):
        images.setdefault(t.round, set()).add(t.image_id)
    seen: set[int] = set()
    curve, running = [], float("-inf")
    for rnd in sorted(images):
        seen |= images[rnd]
        running = max(running, best_by_round.get(rnd, float("-inf")))
        curve.append((len(seen), running))
    series = {"best search-round gain so far": curve}
    best = next((r for r in summary["heldout"] if r["arm"] == "best" and r["diff_vs_naive"]), None)
    if best:
        series["held-out gain of the answer"] = [(b["search_images"], best["diff_vs_naive"]["mean"])]
    from promptevo.optimise.budget import describe

    return (f"<h2>Budget</h2><p>{_e(describe(b).removeprefix('budget: '))}.</p>{line_plot(series, 'images scored by the optimiser', 'gain over naive (objective)')}")


def _timings(repo: RunRepository, run_id: str) -> str:
    """Wall time per round (from its stored start and end) and the LLM calls by role."""
    import datetime as dt

    rows = []
    for r in repo.rounds(run_id):
        took = "-"
        if r["finished_at"]:
            took = f"{(dt.datetime.fromisoformat(r['finished_at']) - dt.datetime.fromisoformat(r['started_at'])).total_seconds():.1f} s"
        rows.append(f"<tr><td>{r['round']}</td><td>{_e(r['phase'])}</td><td>{_e(r['status'])}</td><td>{took}</td></tr>")
    calls = repo.llm_calls(run_id)
    by_role: dict[str, int] = {}
    for c in calls:
        by_role[c["role"]] = by_role.get(c["role"], 0) + 1
    tokens = sum((c["prompt_tokens"] or 0) + (c["completion_tokens"] or 0) for c in calls)
    return ("<h2>Timings</h2><table><tr><th>round</th><th>stage</th><th>status</th><th>wall time</th></tr>"
            f"{''.join(rows)}</table><p>{len(calls)} LLM calls ("
            + ", ".join(f"{n} {_e(role)}" for role, n in sorted(by_role.items())) + f"), {tokens:,} tokens.</p>")


def _rewards(summary: dict) -> str:
    """With several rewards: each one's held-out gain with its CI, and the trade-off per
    instruction (mean search-round gain on each reward side by side, the first two plotted)."""
    by_reward = summary.get("heldout_by_reward") or {}
    if len(by_reward) < 2:
        return ""
    names = list(by_reward)
    head = "".join(f"<th>{_e(n)}</th>" for n in names)
    rows = []
    for arm in [r["arm"] for r in by_reward[names[0]] if r["arm"] != "naive"]:
        cells = []
        for n in names:
            d = next((r["diff_vs_naive"] for r in by_reward[n] if r["arm"] == arm), None)
            cells.append(f"<td>{d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]</td>" if d else "<td>-</td>")
        rows.append(f"<tr><td>{_e(arm)}</td>{''.join(cells)}</tr>")
    gains = summary.get("reward_gains") or {}
    trade = "".join(
        f"<tr><td>#{_e(iid)}</td>" + "".join(f"<td>{g[n]:+.3f}</td>" if n in g else "<td>-</td>" for n in names) + "</tr>"
        for iid, g in sorted(gains.items(), key=lambda kv: int(kv[0])))
    points = [(g[names[0]], g[names[1]], f"#{iid}") for iid, g in gains.items() if names[0] in g and names[1] in g]
    return (f"<h2>Rewards</h2><p>Held-out gain over the naive prompt on each reward (95% CI), objective: "
            f"{_e(describe(summary['objective']))}</p><table><tr><th>arm</th>{head}</tr>{''.join(rows)}</table>"
            f"<h3>Trade-off per instruction (mean gain over search rounds)</h3><table><tr><th>instruction</th>{head}</tr>"
            f"{trade}</table>{scatter_plot(points, names[0] + ' gain', names[1] + ' gain')}")
