"""The retouch benchmark's written results: results.csv, summary.json, results.md (the tables,
the clean photographs apart, the aims) and the contact sheet."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any


def _ci(d: dict[str, Any], digits: int = 2) -> str:
    return f"{d['mean']:+.{digits}f} [{d['ci_low']:+.{digits}f}, {d['ci_high']:+.{digits}f}]"


def write_results(out: Path, cfg, rows, orders, llm_rows, summary) -> None:
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    lines = [f"# {cfg.name}: {summary['images']} degraded photographs, full-reference scores", "",
             cfg.description.strip(), "",
             f"Photographs: {', '.join(cfg.photos)} (longer side {cfg.size} px); degradations: "
             f"{', '.join(cfg.degradations)}; strengths {cfg.strengths}; the clean photographs apart; objective `{cfg.objective}`; "
             f"{cfg.trials} trials per search; SSIM guard {cfg.min_ssim}. Means with 95% CIs over images; "
             f"differences are paired on the same image. {summary['seconds']:.0f} s.", "",
             "| arm | PSNR (dB) | SSIM | PSNR vs none | SSIM vs none |", "| --- | --- | --- | --- | --- |"]
    for r in summary["table"]:
        lines.append(f"| {r['arm']} | {r['psnr']['mean']:.2f} [{r['psnr']['ci_low']:.2f}, {r['psnr']['ci_high']:.2f}] | "
                     f"{r['ssim']['mean']:.3f} [{r['ssim']['ci_low']:.3f}, {r['ssim']['ci_high']:.3f}] | "
                     f"{_ci(r['psnr_vs_none'])} | {_ci(r['ssim_vs_none'], 3)} |")
    lines += ["", "Paired differences:", "", "| comparison | PSNR (dB) | SSIM |", "| --- | --- | --- |"]
    for k, v in summary["pairs"].items():
        lines.append(f"| {k} | {_ci(v['psnr'])} | {_ci(v['ssim'], 3)} |")
    arms = [r["arm"] for r in summary["table"]]
    lines += ["", "Mean PSNR gain over the degraded image, by degradation (dB):", "",
              "| degradation | " + " | ".join(arms) + " |", "| --- |" + " --- |" * len(arms)]
    for kind, gains in summary["per_degradation_psnr_gain"].items():
        lines.append(f"| {kind} | " + " | ".join(_cell(gains[a]) for a in arms) + " |")
    lines += ["", "A cell in bold: the 95% CI lies below zero (the arm loses on that class).", "",
              f"Clean photographs ({summary['clean_images']}), left as they are by an arm that does no harm:", "",
              "| arm | changed | worst PSNR to the original (dB) | mean SSIM |", "| --- | --- | --- | --- |"]
    for a, c in summary["clean"].items():
        if c["images"]:
            lines.append(f"| {a} | {c['changed']} of {c['images']} | {c['worst_psnr']:.1f} | {c['mean_ssim']:.4f} |")
    lines += _aims(summary.get("aims") or {})
    ro = summary["restore_orders"]
    lines += ["", f"Restoration order (RestoreAgent), on the {ro['images']} images whose planner+search plan has two or "
              "more restoration tools, same values in each order:", ""]
    if ro["images"]:
        lines += ["| order | PSNR (dB) | SSIM |", "| --- | --- | --- |"]
        for k in [k for k in ro if k != "images"]:
            lines.append(f"| {k} | {_ci(ro[k]['psnr'])} | {_ci(ro[k]['ssim'], 3)} |")
    if summary["offline_llm"]:
        o = summary["offline_llm"]
        lines += ["", f"The offline LLM (SmolLM2-135M{', structured plans' if o.get('structured') else ''}) as the planner on {o['images']} of the images: "
                  f"{o['valid_plans']} valid plans; planner+search PSNR gain over the degraded image {_ci(o['psnr_gain'])} dB.", "",
                  "| photo | degradation | reply | its plan | result |", "| --- | --- | --- | --- | --- |"]
        for r in o["rows"]:
            lines.append(f"| {r['photo']} | {r['degradation']} x{r['strength']} | {r['status']} | "
                         f"{r['plan'] if r['plan'] is not None else '-'} | {r['source']}, PSNR {r['psnr_degraded']:.2f} -> {r['psnr']:.2f} |")
    (out / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def contact_sheet(rows: list[tuple[str, list[tuple[str, Any]]]]):
    """A grid for people: one row per example, one column per arm, labelled."""
    from PIL import Image, ImageDraw

    from promptevo.images import to_uint8

    cell_h = max(img.shape[-2] for _, cells in rows for _, img in cells)
    cell_w = max(img.shape[-1] for _, cells in rows for _, img in cells)
    cols = len(rows[0][1])
    label_h = 14
    sheet = Image.new("RGB", (cols * (cell_w + 4), len(rows) * (cell_h + 2 * label_h + 4) + label_h), "white")
    draw = ImageDraw.Draw(sheet)
    for c, (label, _) in enumerate(rows[0][1]):
        draw.text((c * (cell_w + 4) + 2, 1), label, fill="black")
    for r, (title, cells) in enumerate(rows):
        top = label_h + r * (cell_h + 2 * label_h + 4)
        draw.text((2, top), title, fill="black")
        for c, (_, img) in enumerate(cells):
            tile = Image.fromarray(to_uint8(img[None])[0].permute(1, 2, 0).numpy())
            sheet.paste(tile, (c * (cell_w + 4), top + label_h))
    return sheet


def _cell(ci: dict[str, Any]) -> str:
    text = f"{ci['mean']:+.2f}"
    return f"**{text}**" if ci["ci_high"] < 0 else text


def _aims(a: dict[str, Any]) -> list[str]:
    if not a:
        return []
    yes = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    against = "; ".join(f"{b}: PSNR {_ci(v['psnr'])}, SSIM {_ci(v['ssim'], 3)} ({yes(v['beats'])})" for b, v in a["against"].items())
    return ["", f"Aims, for the best arm that does not know the degradation ({a['best_arm']}, by PSNR gain):", "",
            f"- beats doing nothing on PSNR and SSIM, CIs above zero: {yes(a['beats_none_psnr_and_ssim'])}",
            f"- loses on no degradation class (a CI below zero): {yes(not a['classes_lost'])}"
            + (f" (loses on {', '.join(a['classes_lost'])})" if a["classes_lost"] else ""),
            f"- leaves the clean photographs unchanged: {yes(a['clean_unchanged'])} ({a['clean_changed']} of {a['clean_images']} changed)",
            f"- beats CLAHE and auto-enhance on both measures: {against}"]
