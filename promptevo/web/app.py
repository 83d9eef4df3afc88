"""`promptevo serve`: a local web page over a run database (Starlette, served by uvicorn).

It reads the database a running optimiser writes (SQLite's WAL: neither blocks the other) and
writes only judgements, in short transactions. What the pages show is untrusted (prompts, LLM
text), so every value goes through the templates' autoescaping and the pages allow no inline
script (Content-Security-Policy). A state-changing request needs the per-session token its page
carries; images are found by content hash in the database, so no path from a request reaches the
file system; only the Host names the server was started for are answered (DNS rebinding).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import math
import re
import secrets
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from promptevo.display import visible_value
from promptevo.errors import UserError
from promptevo.storage.repository import RunRepository
from promptevo.storage.store import Store
from promptevo.web import pages

SESSION_COOKIE = "promptevo_session"
TOKEN_HEADER = "x-promptevo-token"
HASH = re.compile(r"[0-9a-f]{64}")
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; img-src 'self'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
LOOPBACK = ("127.0.0.1", "localhost")
WRITE_WAIT_S, WRITE_TRIES = 1.5, 3  # a judgement waits at most about 5 s for an optimiser's write lock


class Server:
    """The app's state: the database (a read-only connection for pages, a writable one opened on
    the first judgement), the session secret, and who judges."""

    def __init__(self, db: Path, judge: str):
        self.db, self.judge = db, judge
        self.reader = RunRepository(Store(db, readonly=True))
        self._writer: RunRepository | None = None
        self.secret = secrets.token_bytes(32)
        self.templates = Environment(loader=PackageLoader("promptevo", "web/templates"),
                                     autoescape=select_autoescape(default=True, default_for_string=True),
                                     finalize=visible_value)
        self.rng = np.random.default_rng()

    @property
    def writer(self) -> RunRepository:
        if self._writer is None:
            self._writer = RunRepository(Store(self.db, create=False, busy_timeout=WRITE_WAIT_S))
        return self._writer

    def add_judgement(self, run_id: str, left: int, right: int, choice: str) -> int | None:
        """Store a judgement (called off the event loop): a few short waits for an optimiser's
        write lock, then None (busy) rather than a request that hangs for the full 30 s."""
        for attempt in range(WRITE_TRIES):
            try:
                return self.writer.add_judgement(run_id, left, right, choice, self.judge)
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                time.sleep(0.2 * (attempt + 1))
        return None

    def close(self) -> None:
        self.reader.store.close()
        if self._writer is not None:
            self._writer.store.close()

    def token(self, session: str) -> str:
        return hmac.new(self.secret, session.encode(), hashlib.sha256).hexdigest()

    def page(self, request: Request, template: str, **context: Any) -> HTMLResponse:
        """A page with the session's token; a new session gets its cookie here."""
        session = request.cookies.get(SESSION_COOKIE) or secrets.token_urlsafe(24)
        html = self.templates.get_template(template).render(token=self.token(session), **context)
        response = HTMLResponse(html, headers=SECURITY_HEADERS)
        if request.cookies.get(SESSION_COOKIE) != session:
            response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="strict")
        return response

    def authorised(self, request: Request) -> bool:
        session = request.cookies.get(SESSION_COOKIE)
        sent = request.headers.get(TOKEN_HEADER, "")
        return bool(session) and hmac.compare_digest(sent, self.token(session or ""))


def _finite(value: Any) -> Any:
    """JSON has no infinities: an interval over one value (-inf, inf) becomes null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class JSON(JSONResponse):
    """JSON for scripts and the page's poll: non-finite numbers as null, the security headers."""

    def __init__(self, content: Any, status_code: int = 200):
        super().__init__(content, status_code, headers=SECURITY_HEADERS)

    def render(self, content: Any) -> bytes:
        return json.dumps(_finite(content), ensure_ascii=False, default=str, separators=(",", ":")).encode()


def _run_id(server: Server, request: Request) -> str | None:
    run_id = request.path_params["run_id"]
    return run_id if server.reader.run(run_id) else None


def create_app(db: Path, *, judge: str = "local", hosts: tuple[str, ...] = LOOPBACK) -> Starlette:
    server = Server(db, judge)

    def not_found(what: str) -> HTMLResponse:
        return HTMLResponse(server.templates.get_template("missing.html").render(what=what), 404, headers=SECURITY_HEADERS)

    def index(request: Request):
        return server.page(request, "runs.html", runs=pages.runs(server.reader), version=pages.fingerprint(server.reader),
                           db=str(db))

    def run(request: Request):
        run_id = _run_id(server, request)
        if run_id is None:
            return not_found("run")
        return server.page(request, "run.html", run_id=run_id, view=pages.run_page(server.reader, run_id),
                           version=pages.fingerprint(server.reader, run_id))

    def judge_page(request: Request):
        run_id = _run_id(server, request)
        if run_id is None:
            return not_found("run")
        return server.page(request, "judge.html", run_id=run_id, view=pages.judge_page(server.reader, run_id, server.rng),
                           judge=server.judge, version=pages.fingerprint(server.reader, run_id))

    def image(request: Request):
        digest = request.path_params["digest"]
        stored = server.reader.image_file(digest) if HASH.fullmatch(digest) else None
        path = server.reader.store.artifact_file(stored)
        if path is None:
            return Response("no such image", 404, headers=SECURITY_HEADERS)
        return FileResponse(path, media_type="image/png",
                            headers={**SECURITY_HEADERS, "cache-control": "max-age=31536000, immutable"})

    def version(request: Request):
        run_id = request.query_params.get("run")
        return JSON({"version": pages.fingerprint(server.reader, run_id)})

    def api_runs(request: Request):
        return JSON(pages.runs(server.reader))

    def api_run(request: Request):
        run_id = _run_id(server, request)
        if run_id is None:
            return JSON({"error": "no such run"}, 404)
        view = pages.run_page(server.reader, run_id)
        return JSON({**view["summary"], "objective_weights": view["objective"],
                     "human": [{"arm": i["id"], "value": i["human"], "judgements": i["judgements"]}
                               for i in view["summary"]["instructions"]]})

    async def add_judgement(request: Request):
        if not server.authorised(request):
            return JSON({"error": "missing or wrong session token; reload the page"}, 403)
        run_id = await run_in_threadpool(_run_id, server, request)
        if run_id is None:
            return JSON({"error": "no such run"}, 404)
        try:
            body = await request.json()
            left, right, choice = int(body["left"]), int(body["right"]), str(body["choice"])
        except (ValueError, KeyError, TypeError):
            return JSON({"error": "send JSON {left: trial id, right: trial id, choice}"}, 400)
        try:  # blocking database work runs in a worker thread: pages keep loading meanwhile
            judgement = await run_in_threadpool(server.add_judgement, run_id, left, right, choice)
        except UserError as exc:
            return JSON({"error": str(exc)}, 400)
        if judgement is None:
            return JSON({"error": "the database is busy (an optimiser is writing a round); your judgement was not saved: try again"}, 503)
        return JSON({"id": judgement})

    static = Path(__file__).with_name("static")
    routes = [
        Route("/", index), Route("/favicon.ico", lambda request: Response(status_code=204)), Route("/runs/{run_id}", run), Route("/runs/{run_id}/judge", judge_page),
        Route("/image/{digest}", image), Route("/api/version", version), Route("/api/runs", api_runs),
        Route("/api/runs/{run_id}", api_run), Route("/api/runs/{run_id}/judgements", add_judgement, methods=["POST"]),
        Mount("/static", StaticFiles(directory=static), name="static"),
    ]
    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        server.close()

    app = Starlette(routes=routes, middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=list(hosts))],
                    lifespan=lifespan, max_body_size=64 * 1024)
    app.state.server = server
    return app


WILDCARD_BINDS = ("0.0.0.0", "::", "")


def machine_names() -> list[str]:
    """This machine's host names and the addresses they resolve to (what a browser on the local
    network types to reach a server bound to every interface)."""
    names = [socket.gethostname(), socket.getfqdn()]
    for name in list(names):
        with contextlib.suppress(OSError):
            _, aliases, addresses = socket.gethostbyname_ex(name)
            names += [*aliases, *addresses]
    return [n for n in names if n]


def allowed_hosts(host: str, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The Host names to answer, on every bind (DNS rebinding): loopback names, the bound
    address, the machine's own names and addresses when bound to every interface, and what the
    user allows with --allow-host. Never "*"."""
    bound = machine_names() if host in WILDCARD_BINDS else [host]
    return tuple(dict.fromkeys(h.lower() for h in [*LOOPBACK, *bound, *extra] if h and h != "*"))
