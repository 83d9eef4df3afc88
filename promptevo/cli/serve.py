"""`promptevo serve`: the local web page (runs, a run live, pairwise judging)."""

from __future__ import annotations

import getpass
import ipaddress
import socket
from pathlib import Path
from typing import Annotated

import typer

from promptevo.cli.common import err
from promptevo.errors import UserError


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_port(host: str, port: int) -> int:
    """The port to serve on, checked now so a busy one is one line, not a server traceback
    (0: a free one)."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host, port))
            return s.getsockname()[1]
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pass another --port or --host") from None


def serve(
    db: Annotated[Path, typer.Option(help="The run database to show (the one `optimize --db` writes).")] = Path("promptevo.db"),
    host: Annotated[str, typer.Option(help="Address to listen on. Only this machine can reach the default; "
                                           "another address lets anyone who reaches it see your runs and judge.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free one).")] = 8765,
    judge: Annotated[str | None, typer.Option(help="Name stored with your judgements (default: your login name).")] = None,
    allow_host: Annotated[list[str] | None, typer.Option(help="Another Host name the page may be reached by (a DNS name of this machine, "
                                                             "a proxy's name). Repeatable. Every other name is refused, on any --host.")] = None,
):
    """A local web page over a run database: every run, a running run's arms, answer, objective
    and latest images refreshed as rounds finish, and pairwise judging (two images of one prompt
    and seed, keys left/right/up/down) whose judgements become the `human` reward: weigh it with
    `optimize --objective hps=1,human=2` and the run is steered by what you pick while it runs."""
    import uvicorn

    from promptevo.storage.store import Store
    from promptevo.web.app import allowed_hosts, create_app

    Store(db, readonly=True).close()  # a missing or foreign file is one line, before the server starts
    port = _check_port(host, port)
    who = judge or getpass.getuser() or "local"
    if any(h.strip() in ("", "*") for h in allow_host or []):
        raise UserError("--allow-host takes a host name or address; '*' would let any site's page reach this server (DNS rebinding)")
    hosts = allowed_hosts(host, tuple(h.strip() for h in allow_host or []))
    app = create_app(db, judge=who, hosts=hosts)
    if not _is_loopback(host):
        err.print(f"[yellow]warning:[/] listening on {host}: anyone who can reach it can see these runs and judge images. "
                  f"Only these Host names are answered: {', '.join(hosts)} (add one with --allow-host)", soft_wrap=True)
    shown = f"[{host}]" if ":" in host else host
    err.print(f"promptevo serve: http://{shown}:{port}/ ({db}); Ctrl-C stops it", soft_wrap=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def register(app: typer.Typer) -> None:
    app.command()(serve)
