"""The `encore` command line: serve, db, import and demo."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from encore.config import Settings, SettingsError, load_settings

app = typer.Typer(
    help="Encore, an open-source music streaming backend.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")

console = Console(stderr=True)


def _settings(**overrides: object) -> Settings:
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:
        console.print(f"[red]encore: {exc}[/red]")
        raise typer.Exit(2) from None


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (ENCORE_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (ENCORE_PORT).")] = None,
) -> None:
    """Run the API (and, as they arrive, the workers) in one process."""
    import uvicorn

    from encore.app import create_app
    from encore.observability import configure_logging

    settings = _settings(host=host, port=port)
    configure_logging(settings)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        proxy_headers=False,
        server_header=False,
    )


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply pending migrations."""
    from encore.db import create_engine, database_revision, upgrade_database

    settings = _settings()

    async def run() -> tuple[str | None, str | None]:
        engine = create_engine(settings)
        try:
            await upgrade_database(engine, revision)
            return await database_revision(engine)
        finally:
            await engine.dispose()

    current, _head = asyncio.run(run())
    console.print(f"database at revision {current}")


@db_app.command("current")
def db_current() -> None:
    """Show the applied and the newest migration revision."""
    from encore.db import create_engine, database_revision

    settings = _settings()

    async def run() -> tuple[str | None, str | None]:
        engine = create_engine(settings)
        try:
            return await database_revision(engine)
        finally:
            await engine.dispose()

    current, head = asyncio.run(run())
    console.print(f"applied: {current or '(none)'}  newest: {head}")
    if current != head:
        raise typer.Exit(1)


@app.command("import")
def import_command(
    path: Annotated[
        Path,
        typer.Argument(exists=True, file_okay=False, dir_okay=True, help="Folder to scan."),
    ],
    workers: Annotated[
        int | None, typer.Option(min=1, max=64, help="Scanning processes (default: one per core).")
    ] = None,
) -> None:
    """Import a folder of music (mp3, flac, ogg/opus, m4a/aac, wav) into the catalog."""
    from encore.catalog.importer import run_import_command

    settings = _settings(import_workers=workers)
    report = asyncio.run(run_import_command(settings=settings, root=path, console=console))
    if report.imported == 0 and report.failed and not report.already_known:
        raise typer.Exit(1)


@app.command()
def demo(
    if_empty: Annotated[
        bool, typer.Option("--if-empty", help="Do nothing when the catalog has tracks.")
    ] = False,
) -> None:
    """Write a small demo library of synthesized, tagged audio and import it."""
    from encore.catalog.demo import run_demo_command

    settings = _settings()
    asyncio.run(run_demo_command(settings=settings, console=console, only_if_empty=if_empty))


if __name__ == "__main__":
    app()
