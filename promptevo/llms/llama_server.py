"""llama.cpp's own HTTP server (the `xllamacpp` wheel) as a child process promptevo starts and
owns, serving a local GGUF file on 127.0.0.1 through the same OpenAI-compatible client every
remote server uses.

The child never outlives promptevo: it asks the kernel for SIGKILL when its parent dies
(PR_SET_PDEATHSIG) and also watches its parent's pid, so Ctrl-C, SIGTERM and a SIGKILL of
promptevo leave no server behind. A server that dies mid-run is started again by the backend
(`LlamaCppLLM`) and the batch retried. A missing wheel, a missing or corrupt GGUF and a port in
use are one line each (UserError) before any rendering.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from promptevo.config import LLMConfig
from promptevo.errors import ModelNotFound, UserError
from promptevo.registry import Completion, Request, register_llm

GGUF_MAGIC = b"GGUF"
START_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class ServerSettings:
    """How the server runs. Two generation threads serve SmolLM2 about twice as fast as one on
    an idle 2-core machine; parallel slots add nothing at that size (benchmarks/README.md)."""

    threads: int = 2
    parallel: int = 1  # one request at a time: as fast as 4 slots here, and a reply never depends on its batch-mates
    ctx: int = 8192  # tokens shared by the slots: 2,048 each at 4 slots
    port: int = 0  # 0: a free one
    poll: int = 0  # ggml's busy-wait level for idle worker threads (0: sleep; llama.cpp's default is 50)


def check_gguf(path: Path) -> None:
    """A readable GGUF file, or one clear line."""
    if not path.is_file():
        raise ModelNotFound(f"GGUF file {path} does not exist; pass --llm-model PATH.gguf")
    with open(path, "rb") as fh:
        if fh.read(4) != GGUF_MAGIC:
            raise UserError(f"{path} is not a GGUF file (or it is corrupted): llama.cpp cannot serve it")


def _free_port(port: int) -> int:
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
            return s.getsockname()[1]
    except OSError as exc:
        raise UserError(f"the llama.cpp server cannot listen on 127.0.0.1:{port} ({exc.strerror or exc}); "
                        "pass another port or 0 for a free one") from None


class LlamaServer:
    """One child process serving `model`; `url` is its OpenAI-compatible base URL once started."""

    def __init__(self, model: Path, settings: ServerSettings = ServerSettings(), log: Path | None = None):
        self.model, self.settings, self.log = Path(model), settings, log
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None
        self.starts = 0

    def start(self) -> str:
        import importlib.util

        if importlib.util.find_spec("xllamacpp") is None:
            raise UserError("the llama.cpp server comes from the xllamacpp package: `pip install xllamacpp` "
                            "(the README's set-up command installs it)")
        check_gguf(self.model)
        port = _free_port(self.settings.port)
        args = {"model": str(self.model), "port": port, "threads": self.settings.threads,
                "parallel": self.settings.parallel, "ctx": self.settings.ctx, "poll": self.settings.poll, "parent": os.getpid()}
        log = open(self.log, "ab") if self.log else subprocess.DEVNULL  # llama.cpp logs a lot: never the terminal
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "promptevo.llms.llama_child", json.dumps(args)],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, text=True)
        finally:
            if self.log:
                log.close()  # type: ignore[union-attr]
        atexit.register(self.stop)
        self.starts += 1
        ready = self.proc.stdout.readline() if self.proc.stdout else ""  # the child says "ready URL" or "error MESSAGE"
        if not ready.startswith("ready "):
            self.stop()
            why = ready.removeprefix("error ").strip() or "it exited while loading"
            raise UserError(f"the llama.cpp server could not serve {self.model.name}: {why}")
        self.url = ready.split(" ", 1)[1].strip()
        self._wait_healthy()
        return self.url

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if not self.alive():
                raise UserError(f"the llama.cpp server for {self.model.name} exited while starting")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5) as r:
                    if json.loads(r.read() or b"{}").get("status") == "ok":
                        return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(0.1)
        self.stop()
        raise UserError(f"the llama.cpp server for {self.model.name} did not answer /health in {START_TIMEOUT_S:.0f} s")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def restart(self) -> str:
        self.stop()
        return self.start()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()


class LlamaCppLLM:
    """The `llamacpp` backend: a local GGUF served by a llama.cpp server this process owns, asked
    through the OpenAI-compatible client. A server found dead after a batch is started again and
    the failed requests retried once; a second death is an unusable server (LLMUnavailable)."""

    def __init__(self, config: LLMConfig, *, log: Path | None = None):
        from promptevo.llms.backends import resolve_local_model
        from promptevo.model_cache import cache_dir

        source, gguf = resolve_local_model(config)
        path = Path(source) / gguf if gguf else Path(source)
        if path.suffix != ".gguf":
            raise UserError(f"the llamacpp backend serves a local .gguf file (got {config.model!r}); "
                            "use --llm-base-url for a server you run, or the local backend for a hub model")
        self.config = config
        self.model_name = f"{path.parent.name}/{path.name}"
        settings = ServerSettings(threads=config.server_threads, parallel=config.server_parallel, ctx=config.server_ctx)
        self.server = LlamaServer(path, settings, log=log or cache_dir() / "logs" / "llama-server.log")
        self.server.log.parent.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
        self._client = self._connect(self.server.start())

    def _connect(self, url: str):
        from dataclasses import replace

        from promptevo.llms.backends import OpenAIChatLLM

        # The model name is informational for llama.cpp; requests retry as for any server. No
        # prompt cache: a reply must not depend on which request the slot served before (with
        # one slot and a seed per request, a run's replies are the same run after run).
        return OpenAIChatLLM(replace(self.config, backend="openai", base_url=f"{url}/v1",
                                     max_concurrency=max(1, self.config.server_parallel)),
                             extra_body={"cache_prompt": False})

    def complete(self, requests: Sequence[Request], *, temperature: float | None = None, seed: int | None = None) -> list[Completion]:
        out = self._client.complete(requests, temperature=temperature, seed=seed)
        failed = [i for i, c in enumerate(out) if not c.ok]
        if failed and not self.server.alive():
            self._client = self._connect(self.server.restart())
            temp = self.config.temperature if temperature is None else temperature
            client = self._client  # each request keeps the seed it had in the batch (seed + its index)
            futures = {i: client._pool.submit(client._one, list(requests[i].messages), temp, None if seed is None else seed + i,
                                              requests[i].role) for i in failed}
            for i, future in futures.items():
                out[i] = future.result()
        return [Completion(c.text, self.model_name, c.prompt_tokens, c.completion_tokens, c.latency_s, c.attempts, c.error)
                for c in out]

    def close(self) -> None:
        self.server.stop()


@register_llm("llamacpp")
def build_llamacpp(config: LLMConfig) -> LlamaCppLLM:
    return LlamaCppLLM(config)
