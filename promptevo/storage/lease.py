"""One owner per run: the process that works on a run holds a lease on it, refreshed by a
heartbeat, as optuna's RUNNING trials are. A second process refuses (or waits with --wait) while
the owner lives; an owner that died is noticed at once on the same machine (its process is gone)
and by its stale heartbeat from anywhere else, and the run is taken over with no manual step."""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import time
from typing import Any

from promptevo.errors import UserError
from promptevo.storage.repository import RunRepository

HEARTBEAT_S = 5.0  # how often the owner says it is alive
STALE_S = 60.0  # an owner silent this long (on another machine) is taken for dead


class RunBusy(UserError):
    """Another live process owns the run."""


def this_owner() -> str:
    return f"{os.getpid()}@{socket.gethostname()}"


def _age_s(stamp: str | None) -> float:
    if not stamp:
        return float("inf")
    return (dt.datetime.now(dt.timezone.utc) - dt.datetime.fromisoformat(stamp)).total_seconds()


def owner_alive(owner: str | None, heartbeat_at: str | None, stale_after: float = STALE_S) -> bool:
    """Whether the recorded owner still works on the run: on this machine, whether its process
    exists; elsewhere, whether its heartbeat is recent."""
    if not owner:
        return False
    pid, _, host = owner.partition("@")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # exists, owned by someone else
        return _age_s(heartbeat_at) < stale_after or int(pid) == os.getpid()
    return _age_s(heartbeat_at) < stale_after


def status_of(run: dict[str, Any]) -> str:
    """The status to show: a run marked running whose owner is gone was interrupted."""
    if run["status"] == "running" and not owner_alive(run.get("owner"), run.get("heartbeat_at")):
        return "interrupted"
    return run["status"]


def busy_message(run: dict[str, Any]) -> str:
    pid, _, host = (run.get("owner") or "?@?").partition("@")
    age = _age_s(run.get("heartbeat_at"))
    beat = f"{age:.0f} s ago" if age != float("inf") else "never"
    return (f"run {run['id']} is being worked on by process {pid} on {host} (last heartbeat {beat}); "
            "wait for it to finish, or pass --wait to start when it does")


def check_free(repo: RunRepository, run_id: str) -> None:
    """Refuse at once when another live process owns the run (before any model loads)."""
    run = repo.require_run(run_id)
    if run.get("owner") not in (None, this_owner()) and owner_alive(run.get("owner"), run.get("heartbeat_at")):
        raise RunBusy(busy_message(run))


class RunLease:
    """`with RunLease(repo, run_id):` owns the run for the block. On exit the run is marked
    finished (if the block finished it) or interrupted, and the lease is released."""

    def __init__(self, repo: RunRepository, run_id: str, *, wait: bool = False, poll_s: float = 1.0,
                 heartbeat_s: float = HEARTBEAT_S, stale_after: float = STALE_S):
        self.repo, self.run_id, self.wait, self.poll_s = repo, run_id, wait, poll_s
        self.heartbeat_s, self.stale_after = heartbeat_s, stale_after
        self.owner = this_owner()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RunLease:
        while not self.repo.claim(self.run_id, self.owner, lambda o, h: owner_alive(o, h, self.stale_after)):
            if not self.wait:
                raise RunBusy(busy_message(self.repo.require_run(self.run_id)))
            time.sleep(self.poll_s)
        self._thread = threading.Thread(target=self._beat, name="promptevo-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.repo.heartbeat(self.run_id, self.owner)
            except Exception:  # noqa: BLE001 - a missed beat must never kill the run
                pass

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.repo.release(self.run_id, self.owner)
