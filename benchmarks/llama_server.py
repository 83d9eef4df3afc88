"""Tokens per second of SmolLM2-135M (the tiny profile's LLM): llama.cpp's server (the xllamacpp
wheel) at 1 and 2 threads and 1 or 4 parallel slots, against the in-process transformers backend,
on the same batch of generator requests, in one run on one machine. Writes
results/llama-server.json and prints the ratios.

    .venv/bin/python benchmarks/llama_server.py [--requests 8] [--tokens 96]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from promptevo.config import LLMConfig
from promptevo.llms.templates import template
from promptevo.registry import Request, build_llm

PROMPTS = ["a waterfall", "a samurai", "a lighthouse at night", "a fox in the snow", "an old library",
           "a city street in the rain", "a desert at dawn", "a robot in a garden"]


def requests(n: int) -> list[Request]:
    tpl = template("generator")
    fields = [{"instruction": "Add the light, the colours and the lens.", "prompt": PROMPTS[i % len(PROMPTS)]} for i in range(n)]
    return [Request("generator", tpl.messages(**f), f) for f in fields]


def measure(config: LLMConfig, reqs: list[Request]) -> dict:
    t0 = time.perf_counter()
    llm = build_llm(config)
    load_s = time.perf_counter() - t0
    llm.complete(reqs[:1], seed=0)  # warm
    t0 = time.perf_counter()
    out = llm.complete(reqs, seed=1)
    wall = time.perf_counter() - t0
    tokens = sum(c.completion_tokens or 0 for c in out)
    if hasattr(llm, "close"):
        llm.close()
    served = config.backend == "llamacpp"
    return {"backend": config.backend, "threads": config.server_threads if served else "torch", "parallel": config.server_parallel if served else "-",
            "load_s": round(load_s, 2), "wall_s": round(wall, 2), "completion_tokens": tokens,
            "tokens_per_s": round(tokens / wall, 1), "errors": sum(1 for c in out if not c.ok)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=96)
    args = parser.parse_args()
    reqs = requests(args.requests)
    base = dict(model="smollm2", max_new_tokens=args.tokens, temperature=0.8)
    arms = [LLMConfig(backend="local", **base)]
    arms += [LLMConfig(backend="llamacpp", server_threads=t, server_parallel=p, **base) for t, p in ((1, 1), (1, 4), (2, 1), (2, 4))]
    rows = []
    for config in arms:
        rows.append(measure(config, reqs))
        print(json.dumps(rows[-1]), flush=True)
    local = rows[0]["tokens_per_s"]
    for r in rows:
        r["ratio_vs_local"] = round(r["tokens_per_s"] / local, 2) if local else None
    out = Path(__file__).with_name("results") / "llama-server.json"
    out.write_text(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(), "requests": args.requests,
                               "max_new_tokens": args.tokens, "rows": rows}, indent=2) + "\n")
    print(f"\n{'backend':10} {'threads':>7} {'slots':>5} {'tok/s':>7} {'x local':>8} {'load s':>7}")
    for r in rows:
        print(f"{r['backend']:10} {r['threads']:>7} {r['parallel']:>5} {r['tokens_per_s']:>7} {r['ratio_vs_local']:>8} {r['load_s']:>7}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
