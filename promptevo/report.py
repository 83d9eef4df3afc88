"""One self-contained HTML page per run: images are inlined, plots are inline SVG, so the file
can be mailed or archived on its own."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from promptevo.objective import objective_for
from promptevo.repository import RunRepository
from promptevo.store import Store
from promptevo.summary import round_rewards, summarize

_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:14px;vertical-align:top}
.grid{display:flex;flex-wrap:wrap;gap:12px}.cell{width:260px;font-size:12px}.cell img{width:256px;image-rendering:pixelated}
.lineage ul{margin:0 0 0 1.2rem}.retired{color:#888}
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _img(store: Store, rel: str) -> str:
    data = (store.artifacts / rel).read_bytes()
    return f'<img alt="image" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _svg_curves(series: dict[str, list[tuple[int, float]]], width: int = 640, height: int = 260) -> str:
    points = [p for s in series.values() for p in s]
    if not points:
        return "<p>No finished rounds yet.</p>"
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(max(xs), min(xs) + 1)
    y0, y1 = min(ys + [0.0]), max(ys + [0.0])
    y1 = y1 if y1 > y0 else y0 + 1
    sx = lambda x: 40 + (x - x0) / (x1 - x0) * (width - 60)  # noqa: E731
    sy = lambda y: height - 30 - (y - y0) / (y1 - y0) * (height - 50)  # noqa: E731
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
             f'<line x1="40" x2="{width - 20}" y1="{sy(0):.1f}" y2="{sy(0):.1f}" stroke="#aaa" stroke-dasharray="4"/>',
             '<text x="4" y="14" font-size="11">gain over naive (HPS x100)</text>',
             f'<text x="{width - 60}" y="{height - 8}" font-size="11">round</text>',
             f'<text x="4" y="{sy(y1):.1f}" font-size="10">{y1:+.2f}</text><text x="4" y="{sy(y0):.1f}" font-size="10">{y0:+.2f}</text>']
    for n, (name, pts) in enumerate(sorted(series.items())):
        c = colours[n % len(colours)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in sorted(pts))
        parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="{path}"/>')
        for x, y in pts:
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{c}"><title>{_e(name)}: {y:+.3f}</title></circle>')
        parts.append(f'<text x="{width - 150}" y="{20 + 14 * n}" font-size="11" fill="{c}">{_e(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def write_report(store: Store, run_id: str, path: Path) -> Path:
    repo = RunRepository(store)
    objective = objective_for(repo.run_config(run_id))
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
        for label, row in (("naive prompt", naive), ("best rewrite", best)):
            if row:
                cells.append(f'<div class="cell">{_img(store, row.image_path)}<br><b>{label}</b> · score {objective.score(row.scores):.3f}'
                             f' · seed {row.seed}<br>{_e(row.rendered)}</div>')
        grids.append(f"<h3>{_e(texts[t.prompt_id])}</h3><div class=\"grid\">{''.join(cells)}</div>")

    best = summary["best_instruction"]
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>promptevo run {_e(run_id)}</title>
<style>{_CSS}</style></head><body>
<h1>promptevo run {_e(run_id)}</h1>
<p>Status: {_e(summary['status'])} · profile {_e(summary['profile'])} · config {_e(summary['config_hash'])}</p>
<h2>Best instruction</h2><p>{_e(best['text']) if best else '-'}</p>
<h2>Held-out comparison (fresh seeds)</h2>
<table><tr><th>arm</th><th>instruction</th><th>mean HPS</th><th>95% CI</th><th>gain vs naive</th><th>95% CI of gain</th></tr>{heldout_rows}</table>
<h2>Score curves</h2>{_svg_curves(series)}
<h2>Instruction lineage</h2><div class="lineage">{lineage(None)}</div>
<h2>Images</h2>{''.join(grids)}
</body></html>"""
    path.write_text(page, encoding="utf-8")
    return path
