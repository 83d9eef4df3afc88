"""Noise-free diagnostics of a SYNTHETIC experiment's runs (see promptevo.lab.synthetic.noise_free_runs).

    .venv/bin/python experiments/noise_free.py experiments/results/gradient

Prints, per arm, the scorer's expected held-out gain (no seeded noise) of the best seed
instruction, the best instruction the runs created, the one they chose, and their new
instructions on average, and writes it to RESULTS/noise_free.md.
"""

import sys
from pathlib import Path

import numpy as np

from promptevo.lab.synthetic import noise_free_runs


def main(out_dir: str) -> None:
    runs = noise_free_runs(out_dir)
    table = []
    for arm in dict.fromkeys(r["arm"] for r in runs):
        mine = [r for r in runs if r["arm"] == arm]
        table.append({"arm": arm, "runs": len(mine),
                      **{k: float(np.mean([r[k] for r in mine])) for k in ("best_seed", "best_found", "chosen", "new_mean")},
                      "found_better_than_seeds": sum(r["best_found"] > r["best_seed"] for r in mine)})
    lines = ["# Noise-free gains (SYNTHETIC: the hidden scorer without its seeded noise)", "",
             "Means over runs, held-out prompts, synthetic points over the naive prompt.", "",
             "| arm | runs | best seed | best created | chosen | created, mean | runs that created one better than every seed |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in table:
        lines.append(f"| {r['arm']} | {r['runs']} | {r['best_seed']:+.2f} | {r['best_found']:+.2f} | {r['chosen']:+.2f} "
                     f"| {r['new_mean']:+.2f} | {r['found_better_than_seeds']} of {r['runs']} |")
    text = "\n".join(lines) + "\n"
    Path(out_dir, "noise_free.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1], "runs").is_dir():
        sys.exit("usage: python experiments/noise_free.py experiments/results/NAME (a results folder with runs/)")
    main(sys.argv[1])
