"""Screenshots of `promptevo serve`'s pages for the docs, taken in Debian's headless Chromium.

    .venv/bin/python scripts/screenshots.py --db runs/demo.db --out docs

Serves the database on a free local port, opens the runs list, the newest run and its judging
page, and writes serve-runs.png, serve-run.png and serve-judge.png. Needs the test extras
(Playwright) and Debian's chromium (`scripts/setup.sh --test` installs both).
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "promptevo", "serve", "--db", str(args.db), "--port", str(port)])
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url + "/api/runs", timeout=2).close()
                break
            except OSError:
                time.sleep(0.1)
        args.out.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.goto(url + "/")
            page.screenshot(path=args.out / "serve-runs.png")
            page.click("#runs a")
            page.screenshot(path=args.out / "serve-run.png", full_page=True)
            page.goto(page.url + "/judge")
            page.screenshot(path=args.out / "serve-judge.png", full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=20)
    print(f"wrote {args.out}/serve-runs.png, serve-run.png, serve-judge.png")


if __name__ == "__main__":
    main()
