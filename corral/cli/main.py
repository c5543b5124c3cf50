"""The ``corral`` command.

    corral serve                          run the server (settings: flags > CORRAL_* env)
    corral template build NAME | ls       templates on this node
    corral sandbox create | ls | exec | shell | rm   sandboxes, through the HTTP API
    corral keys create | ls | revoke      API keys, in this node's store
    corral org create NAME | ls           orgs, in this node's store
    corral users add | ls | token         users and their JWTs, in this node's store
    corral killswitch on | off | status   stop creates and the gateway (--org NAME: one org)
    corral audit [SANDBOX]                the audit trail, through the HTTP API

Client commands take ``--url`` (env CORRAL_URL) and ``--api-key`` (env
CORRAL_API_KEY, else ``<data dir>/admin-key``). Failures print ``error: ...`` on
stderr and exit 1 (``corral sandbox exec`` exits with the command's exit code).
"""

from __future__ import annotations

import socket
from typing import Annotated

import typer

from corral.cli import audit, bindings, keys, killswitch, mcp, orgs, sandbox, template, users
from corral.cli.console import CliError, reported
from corral.cli.local import DatabaseOption, DataDirOption, local_settings
from corral.datadir import claim

app = typer.Typer(
    name="corral",
    help="corral: self-hostable sandboxes on runc, with an OpenComputer-compatible API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(sandbox.app, name="sandbox")
app.add_typer(template.app, name="template")
app.add_typer(keys.app, name="keys")
app.add_typer(bindings.app, name="bindings")
app.add_typer(orgs.app, name="org")
app.add_typer(users.app, name="users")
app.add_typer(killswitch.app, name="killswitch")
app.command("audit")(audit.audit)
app.command("mcp")(mcp.mcp)


@app.command()
def serve(
    host: Annotated[
        str | None,
        typer.Option(help="Address to listen on (env CORRAL_HOST; default 127.0.0.1).", show_default=False),
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (env CORRAL_PORT; default 8080).", show_default=False)
    ] = None,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            help="Seed the first owner key with this ek_<id>_<secret> when the store has none "
            "(env CORRAL_API_KEY; default: generate one into <data dir>/admin-key).",
            show_default=False,
        ),
    ] = None,
    runtime: Annotated[
        str | None,
        typer.Option(
            help="runc, or process (tests only, no isolation) (env CORRAL_RUNTIME).", show_default=False
        ),
    ] = None,
    public_url: Annotated[
        str | None,
        typer.Option(help="URL clients reach this server at (env CORRAL_PUBLIC_URL).", show_default=False),
    ] = None,
    access_log: Annotated[
        bool | None,
        typer.Option(
            "--access-log/--no-access-log",
            help="A line per HTTP request on stderr (env CORRAL_ACCESS_LOG; default off).",
            show_default=False,
        ),
    ] = None,
    fd: Annotated[
        int | None,
        typer.Option(
            "--fd",
            help="Serve on this inherited listening TCP socket (a file descriptor) instead of "
            "binding one; --host and --port default to its address.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the corral server in the foreground."""
    with reported():
        sock = _inherited(fd) if fd is not None else None
        if sock is not None:
            bound_host, bound_port = sock.getsockname()[:2]
            host, port = host or bound_host, port or bound_port
        settings = local_settings(
            host=host,
            port=port,
            data_dir=data_dir,
            database_url=database_url,
            api_key=api_key,
            runtime=runtime,
            public_url=public_url,
            access_log=access_log,
        )
        try:
            from corral.api.server import serve as run_server
        except ImportError as exc:
            raise CliError(f"the HTTP server is not available: {exc}") from exc
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        claim(settings.data_dir).release()  # another server here: said plainly, before uvicorn starts
        if sock is None:
            run_server(settings)
        else:
            run_server(settings, sock)


def _inherited(fd: int) -> socket.socket:
    """The listening TCP socket ``fd`` (a test or a supervisor bound it: no port race)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise CliError(f"--fd {fd} is not an open socket: {exc.strerror}") from exc
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise CliError(f"--fd {fd} is not a TCP socket")
    return sock


@app.command()
def version() -> None:
    """Print corral's version."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        typer.echo(package_version("corral"))
    except PackageNotFoundError:
        typer.echo("unknown")


if __name__ == "__main__":
    app()
