"""The llama.cpp server process (started by `llama_server.LlamaServer`, never by hand): load the
GGUF into xllamacpp's embedded C++ HTTP server on 127.0.0.1, print "ready URL" (or "error
MESSAGE"), then serve until told to stop or until the parent is gone."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """SIGKILL from the kernel when the parent dies (Linux), and a watcher for any other system:
    a SIGKILLed promptevo leaves no server behind."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # it died before the request above took effect
        os._exit(0)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def main(spec: dict) -> None:
    die_with_parent(int(spec["parent"]))
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: promptevo stops us
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = spec["model"]
    params.n_ctx = int(spec["ctx"])
    params.n_parallel = int(spec["parallel"])
    params.cpuparams.n_threads = int(spec["threads"])
    params.cpuparams_batch.n_threads = int(spec["threads"])
    # Worker threads sleep instead of spinning while they wait (ggml's default polls at 50):
    # on a busy machine spinning threads fight everything else, and generation collapses.
    params.cpuparams.poll = int(spec.get("poll", 0))
    params.cpuparams_batch.poll = int(spec.get("poll", 0))
    params.hostnames = ["127.0.0.1"]
    params.port = int(spec["port"])
    params.warmup = False
    try:
        server = xllamacpp.Server(params)
    except Exception as exc:  # noqa: BLE001 - whatever llama.cpp says, as one line for the parent
        print(f"error {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", flush=True)
        sys.exit(3)
    print(f"ready {server.listening_address}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
