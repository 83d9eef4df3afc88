"""What the web tests share: synthetic runs to look at, `promptevo serve` in its own process,
and Debian's Chromium driven by Playwright (its own browser download is not used)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Chromium on a machine without a network or a screen: no sandbox (root), no background traffic.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
PROMPTS = ["a waterfall", "a samurai", "a lighthouse at night", "a fox in the snow", "an old library",
           "a city street in the rain", "a desert at dawn", "a robot in a garden", "a castle on a hill"]


def steering_config(**changes):
    """Two seed instructions, one pulled per round (round 1 the first, round 2 the second, then
    greedy by mean gain), no new instructions: round 3's pick is decided by what rounds 1-2 and
    the judgements say. Objective: the synthetic reward plus the human reward at weight 3."""
    from promptevo.lab.synthetic import synthetic_profile
    from promptevo.optimise.run_config import OptimizeConfig
    from promptevo.registry import reward_name
    from promptevo.rewards.objective import weighted_spec

    spec = weighted_spec({"synthetic": 1, "human": 3}, {}, {"synthetic": reward_name(synthetic_profile().scorer), "human": "human"})
    return OptimizeConfig(**{"rounds": 3, "population": 2, "arms_per_round": 1, "new_per_gradient": 0, "selector": "greedy",
                             "batch_size": 6, "seed": 11, "eval_seeds": 1, "objective": spec, **changes})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(db: Path, *extra: str):
    """`promptevo serve --db DB` in its own process; yields its base URL once it answers."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "promptevo", "serve", "--db", str(db), "--port", str(port), "--judge", "tester",
                             *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(url + "/api/runs", timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise AssertionError(f"serve exited: {proc.stdout.read()}") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@contextlib.contextmanager
def chromium():
    """A headless Chromium page; a page that raises or opens a dialog (alert) fails the test."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            raise AssertionError("CI needs Debian's chromium (scripts/setup.sh --test installs it)")
        pytest.skip("Debian's chromium is not installed (scripts/setup.sh --test installs it)")
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
        page.on("dialog", lambda d: (errors.append(f"dialog: {d.message}"), d.dismiss()))
        try:
            yield page
        finally:
            browser.close()
    assert not errors, errors
