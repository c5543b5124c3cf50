"""``corral sandbox ...``: sandboxes on a running server, through its HTTP API."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer
from rich.table import Table

from corral.cli.client import DEFAULT_URL as _DEFAULT_URL
from corral.cli.client import ApiClient, KeyOption, UrlOption
from corral.cli.console import CliError, out, parse_pairs, print_table, reported, when
from corral.cli.session import exit_status, stream_exec
from corral.cli.terminal import run_terminal

app = typer.Typer(help="Create, list, use and remove sandboxes on a corral server.", no_args_is_help=True)

SandboxId = Annotated[str, typer.Argument(help="Sandbox id (sb-...).", show_default=False)]
EnvOption = Annotated[
    list[str] | None,
    typer.Option("--env", metavar="KEY=VALUE", help="Environment variable (repeatable).", show_default=False),
]
MetadataOption = Annotated[
    list[str] | None,
    typer.Option("--metadata", metavar="KEY=VALUE", help="Metadata entry (repeatable).", show_default=False),
]


def client(url: str, api_key: str | None) -> ApiClient:
    """The API client every command here uses."""
    return ApiClient(url, api_key)


@app.command("create")
def create(
    template: Annotated[str | None, typer.Option(help="Template name (server default: base).")] = None,
    cpu: Annotated[int | None, typer.Option(help="CPU cores.", min=1)] = None,
    memory: Annotated[int | None, typer.Option(help="Memory limit in MB.", min=1)] = None,
    disk: Annotated[int | None, typer.Option(help="Disk limit in MB.", min=1)] = None,
    timeout: Annotated[int | None, typer.Option(help="Idle timeout in seconds; 0 = never.", min=0)] = None,
    env: EnvOption = None,
    metadata: MetadataOption = None,
    url: UrlOption = _DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Create a sandbox and print its id."""
    with reported():
        body: dict[str, Any] = {}
        if template is not None:
            body["templateID"] = template
        for name, value in (("cpuCount", cpu), ("memoryMB", memory), ("diskMB", disk), ("timeout", timeout)):
            if value is not None:
                body[name] = value
        if envs := parse_pairs(env, "--env"):
            body["envs"] = envs
        if meta := parse_pairs(metadata, "--metadata"):
            body["metadata"] = meta
        with client(url, api_key) as api:
            created = api.post("/sandboxes", body)
        sandbox_id = created.get("sandboxID") if isinstance(created, dict) else None
        if not isinstance(sandbox_id, str):
            raise CliError("the server did not return a sandbox id")
        out.print(sandbox_id)


@app.command("ls")
def ls(
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the ids.")] = False,
    url: UrlOption = _DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """List running sandboxes."""
    with reported():
        with client(url, api_key) as api:
            sandboxes = api.get("/sandboxes") or []
        if not isinstance(sandboxes, list):
            raise CliError("the server sent an unexpected sandbox list")
        if quiet:
            for sandbox in sandboxes:
                out.print(sandbox.get("sandboxID", ""))
            return
        if not sandboxes:
            out.print("no sandboxes")
            return
        table = Table(box=None, header_style="bold", pad_edge=False)
        table.add_column("ID", no_wrap=True, min_width=19)
        for column in ("TEMPLATE", "STATUS", "CPU", "MEMORY", "STARTED", "ENDS"):
            table.add_column(column, no_wrap=True)
        for s in sandboxes:
            memory = s.get("memoryMB")
            table.add_row(
                str(s.get("sandboxID", "")),
                str(s.get("templateID", "")),
                str(s.get("status", "")),
                str(s.get("cpuCount", "")),
                f"{memory} MB" if memory is not None else "-",
                when(s.get("startedAt")),
                when(s.get("endAt")),
            )
        print_table(table)


@app.command(
    "exec",
    context_settings={"allow_interspersed_args": False},
    no_args_is_help=True,
)
def exec_(
    sandbox_id: SandboxId,
    command: Annotated[
        list[str], typer.Argument(help="Command and arguments (after --).", show_default=False)
    ],
    env: EnvOption = None,
    cwd: Annotated[str | None, typer.Option(help="Working directory in the sandbox.")] = None,
    timeout: Annotated[int | None, typer.Option(help="Kill the command after this many seconds.")] = None,
    url: UrlOption = _DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Run a command in a sandbox, streaming its output; exit with its exit code.

    Example: corral sandbox exec sb-... -- sh -c 'echo $HOME'
    """
    with reported():
        envs = parse_pairs(env, "--env")
        if command and command[0] == "--":  # options end at the sandbox id; "--" is optional
            command = command[1:]
        if not command:
            raise CliError("no command given; usage: corral sandbox exec ID -- CMD [ARGS...]")
        with client(url, api_key) as api:
            code = stream_exec(api, sandbox_id, command[0], command[1:], envs=envs, cwd=cwd, timeout=timeout)
    raise typer.Exit(exit_status(code))


@app.command("shell")
def shell(sandbox_id: SandboxId, url: UrlOption = _DEFAULT_URL, api_key: KeyOption = None) -> None:
    """Open an interactive terminal in a sandbox (exit the shell to leave)."""
    with reported(), client(url, api_key) as api:
        asyncio.run(run_terminal(api, sandbox_id))


@app.command("rm")
def rm(
    sandbox_ids: Annotated[list[str], typer.Argument(help="Sandbox ids.", show_default=False)],
    url: UrlOption = _DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Kill and remove sandboxes."""
    with reported(), client(url, api_key) as api:
        for sandbox_id in sandbox_ids:
            api.delete(f"/sandboxes/{sandbox_id}")
            out.print(f"removed {sandbox_id}")
