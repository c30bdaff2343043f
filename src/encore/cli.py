"""The `encore` command line: serve, worker, db, import, demo, users, clients and keys."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from encore.auth.models import Role
from encore.config import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

app = typer.Typer(
    help="Encore, an open-source music streaming backend.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
users_app = typer.Typer(help="Accounts: create, change roles, disable, list.", no_args_is_help=True)
app.add_typer(users_app, name="users")
clients_app = typer.Typer(
    help="OAuth clients: the applications allowed to ask for tokens.", no_args_is_help=True
)
app.add_typer(clients_app, name="clients")
keys_app = typer.Typer(help="The keys that sign access and id tokens.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
recommend_app = typer.Typer(
    help="Recommendation models: train, evaluate, refresh playlists.", no_args_is_help=True
)
app.add_typer(recommend_app, name="recommend")
report_app = typer.Typer(help="Insights as tables: engagement, an artist.", no_args_is_help=True)
app.add_typer(report_app, name="report")
media_app = typer.Typer(help="Media delivery: the nginx edge's key file.", no_args_is_help=True)
app.add_typer(media_app, name="media")

console = Console(stderr=True)
# Results (tables) go to stdout, so they can be piped apart from the progress messages.
output = Console()

_Result = TypeVar("_Result")


def _settings(**overrides: object) -> Settings:
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:
        console.print(f"[red]encore: {exc}[/red]")
        raise typer.Exit(2) from None


def _fail(message: str) -> NoReturn:
    console.print(f"[red]encore: {escape(message)}[/red]", soft_wrap=True)
    raise typer.Exit(1)


async def _require_migrated(engine: AsyncEngine) -> None:
    from encore.db import database_revision
    from encore.problems import Problem

    current, head = await database_revision(engine)
    if current is None:
        raise Problem("the database has no tables yet; run `encore db upgrade` first")
    if current != head:
        raise Problem(
            f"the database is at revision {current}, this Encore needs {head}; "
            "run `encore db upgrade` first"
        )


def _run_in_session(
    settings: Settings, work: Callable[[AsyncSession], Awaitable[_Result]]
) -> _Result:
    """Run `work` in one session on a migrated database and commit; a Problem exits 1."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    from encore.db import create_engine, create_session_factory
    from encore.problems import Problem

    async def run() -> _Result:
        engine = create_engine(settings)
        try:
            await _require_migrated(engine)
            async with create_session_factory(engine)() as db_session:
                result = await work(db_session)
                await db_session.commit()
                return result
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except Problem as exc:
        _fail(exc.detail)
    except (OSError, OperationalError, InterfaceError) as exc:
        # Driver errors run to many lines of SQL; the first one says what went wrong.
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        _fail(f"cannot use the database: {first_line}")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (ENCORE_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (ENCORE_PORT).")] = None,
) -> None:
    """Run the API (and, as they arrive, the workers) in one process."""
    import uvicorn

    from encore.app import create_app
    from encore.auth.secrets import load_master_key
    from encore.observability import configure_logging

    settings = _settings(host=host, port=port)
    try:
        # Checked before the server starts, so a bad key is one clear line, not a traceback.
        load_master_key(settings)
    except SettingsError as exc:
        console.print(f"[red]encore: {exc}[/red]")
        raise typer.Exit(2) from None
    if settings.http_server == "granian":
        _serve_with_granian(settings, host=host, port=port)
        return
    configure_logging(settings)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        proxy_headers=False,
        server_header=False,
        # Encore writes its own access log line (with the route and request id).
        access_log=False,
    )


def _serve_with_granian(settings: Settings, *, host: str | None, port: int | None) -> None:
    from granian import Granian
    from granian.constants import Interfaces, Loops
    from granian.log import LogLevels

    # Granian builds the app in its worker process, from the environment: the command line's
    # overrides go there too, so both processes see the same settings.
    if host is not None:
        os.environ["ENCORE_HOST"] = host
    if port is not None:
        os.environ["ENCORE_PORT"] = str(port)
    Granian(
        "encore.app:create_app_from_environment",
        factory=True,
        interface=Interfaces.ASGI,
        address=settings.host,
        port=settings.port,
        workers=1,
        loop=Loops.auto,
        websockets=False,
        # Encore writes its own access log line (with the route and request id).
        log_access=False,
        log_level=LogLevels(settings.log_level),
    ).serve()


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
    process: Annotated[
        bool,
        typer.Option(
            "--process/--no-process",
            help="Transcode the new tracks here and wait (default), or leave the jobs to the "
            "workers of `encore serve` / `encore worker`.",
        ),
    ] = True,
) -> None:
    """Import a folder of music (mp3, flac, ogg/opus, m4a/aac, wav) into the catalog."""
    from encore.catalog.importer import run_import_command

    settings = _settings(import_workers=workers)
    report = asyncio.run(
        run_import_command(settings=settings, root=path, console=console, process=process)
    )
    if report.imported == 0 and report.failed and not report.already_known:
        raise typer.Exit(1)


@app.command()
def demo(
    if_empty: Annotated[
        bool, typer.Option("--if-empty", help="Do nothing when the catalog has tracks.")
    ] = False,
) -> None:
    """Load a small demo library of synthesized, tagged audio, and make demo accounts."""
    from encore.catalog.demo import run_demo_command

    settings = _settings()
    asyncio.run(run_demo_command(settings=settings, console=console, only_if_empty=if_empty))


@app.command()
def worker(
    count: Annotated[
        int | None,
        typer.Option(min=1, max=64, help="Jobs run at once (default: ENCORE_WORKERS, at least 1)."),
    ] = None,
) -> None:
    """Run job workers only (no HTTP) until SIGINT or SIGTERM; a second signal stops at once."""
    import signal

    from sqlalchemy.exc import InterfaceError, OperationalError

    from encore.bus import WorkerPool
    from encore.bus.event_log import EventConsumerPool, open_event_log
    from encore.db import create_engine, create_session_factory
    from encore.events.tasks import event_consumers
    from encore.observability import configure_logging
    from encore.problems import Problem
    from encore.storage import open_blob_store

    settings = _settings()
    configure_logging(settings)

    async def run() -> None:
        engine = create_engine(settings)
        try:
            await _require_migrated(engine)
            session_factory = create_session_factory(engine)
            store = open_blob_store(settings)
            pool = WorkerPool.from_settings(
                settings=settings,
                session_factory=session_factory,
                store=store,
                # ENCORE_WORKERS=0 means "no workers inside `encore serve`", not none here.
                count=count or max(settings.workers, 1),
            )
            # The event log's consumers (counts, history, rollups, the lake) run here too.
            event_log = await open_event_log(settings, session_factory)
            consumers = EventConsumerPool(
                event_log,
                event_consumers(settings=settings, store=store, log_source=event_log.source),
            )
            stop = asyncio.Event()

            def on_signal() -> None:
                if stop.is_set():
                    console.print("encore worker: stopping now; running jobs go back to the queue")
                    pool.abort()
                else:
                    console.print("encore worker: stopping after the running jobs finish")
                    stop.set()

            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, on_signal)
            await pool.start()
            await consumers.start()
            console.print(
                f"encore worker: {len(pool.worker_ids)} workers running jobs of kinds "
                f"{', '.join(pool.kinds) or '(none)'}, and the event consumers"
            )
            try:
                await stop.wait()
            finally:
                await consumers.stop()
                await pool.stop()
                await event_log.close()
                for signum in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(signum)
        finally:
            await engine.dispose()

    try:
        asyncio.run(run())
    except Problem as exc:
        _fail(exc.detail)
    except (OSError, OperationalError, InterfaceError) as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        _fail(f"cannot use the database: {first_line}")
    console.print("encore worker: stopped")


# ---------------------------------------------------------------------------------------------
# Users

RoleOption = Annotated[
    list[Role],
    typer.Option("--role", help="A role (repeat for several); listener is always included."),
]


@users_app.command("create")
def users_create(
    username: Annotated[
        str, typer.Argument(help="Sign-in name: 3-32 letters, digits, '.', '_' or '-'.")
    ],
    email: Annotated[str, typer.Option(help="Email address.")],
    password: Annotated[
        str | None,
        typer.Option(
            help="Password; asked for (hidden) when omitted, which keeps it out of "
            "your shell history."
        ),
    ] = None,
    role: RoleOption = [Role.listener],  # noqa: B006 (only ever read)
    display_name: Annotated[
        str | None, typer.Option(help="Name shown to others (default: the username).")
    ] = None,
) -> None:
    """Create an account."""
    from encore.auth import service as auth_service
    from encore.problems import Problem

    settings = _settings()
    try:
        auth_service.check_username(username)
    except Problem as exc:
        _fail(exc.detail)
    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    # Narrowed to str for the closure below, which would not see the narrowing of `password`.
    chosen = password

    async def work(db_session: AsyncSession) -> list[str]:
        user = await auth_service.create_user(
            db_session=db_session,
            username=username,
            email=email,
            password=chosen,
            display_name=display_name,
            roles=role,
        )
        return list(user.roles)

    roles = _run_in_session(settings, work)
    console.print(f"created user {escape(username)} ({', '.join(roles)})")


@users_app.command("set-role")
def users_set_role(
    username: Annotated[str, typer.Argument(help="The account.")],
    role: RoleOption,
) -> None:
    """Give an account exactly these roles (listener always included)."""
    from encore.auth import service as auth_service

    settings = _settings()

    async def work(db_session: AsyncSession) -> list[str]:
        user = await auth_service.set_roles(db_session=db_session, username=username, roles=role)
        return list(user.roles)

    roles = _run_in_session(settings, work)
    console.print(f"{escape(username)} now has the roles: {', '.join(roles)}")


def _set_disabled(username: str, *, disabled: bool) -> Settings:
    from encore.auth import service as auth_service

    settings = _settings()

    async def work(db_session: AsyncSession) -> None:
        await auth_service.set_disabled(db_session=db_session, username=username, disabled=disabled)

    _run_in_session(settings, work)
    return settings


@users_app.command("disable")
def users_disable(username: Annotated[str, typer.Argument(help="The account.")]) -> None:
    """Stop an account from signing in, and sign it out everywhere."""
    settings = _set_disabled(username, disabled=True)
    console.print(
        f"{escape(username)} is disabled and signed out everywhere (access tokens already "
        f"issued expire within {settings.access_token_minutes} minutes)"
    )


@users_app.command("enable")
def users_enable(username: Annotated[str, typer.Argument(help="The account.")]) -> None:
    """Let a disabled account sign in again."""
    _set_disabled(username, disabled=False)
    console.print(f"{escape(username)} is enabled")


@users_app.command("list")
def users_list() -> None:
    """List every account."""
    from rich.table import Table

    from encore.auth import service as auth_service

    settings = _settings()

    async def work(db_session: AsyncSession) -> list[tuple[str, str, str, bool]]:
        rows: list[tuple[str, str, str, bool]] = []
        cursor: str | None = None
        while True:
            page = await auth_service.list_users(db_session=db_session, limit=100, cursor=cursor)
            rows.extend(
                (user.username, user.email, ", ".join(user.roles), user.disabled)
                for user in page.items
            )
            if page.next_cursor is None:
                return rows
            cursor = page.next_cursor

    rows = _run_in_session(settings, work)
    table = Table()
    for column in ("username", "email", "roles", "disabled"):
        # Folded, never cut short: a truncated name cannot be typed back.
        table.add_column(column, overflow="fold")
    for username, email, roles, disabled in rows:
        table.add_row(escape(username), escape(email), roles, "yes" if disabled else "")
    output.print(table)
    console.print(f"{len(rows)} users")


# ---------------------------------------------------------------------------------------------
# OAuth clients

# Short names for grant types whose official names are URNs.
_GRANT_ALIASES = {"device_code": "urn:ietf:params:oauth:grant-type:device_code"}


def _grant_label(grant: str) -> str:
    return next((short for short, full in _GRANT_ALIASES.items() if full == grant), grant)


@clients_app.command("create")
def clients_create(
    name: Annotated[str, typer.Argument(help="Name shown to users when they sign in.")],
    redirect_uri: Annotated[
        list[str] | None,
        typer.Option("--redirect-uri", help="Where sign-ins return to (repeatable)."),
    ] = None,
    confidential: Annotated[
        bool, typer.Option("--confidential", help="A server that can keep a secret.")
    ] = False,
    first_party: Annotated[
        bool, typer.Option("--first-party", help="Ours: users are not asked for consent.")
    ] = False,
    grant: Annotated[
        list[str] | None,
        typer.Option(
            "--grant",
            help="Grant type (repeatable): authorization_code, refresh_token, "
            "client_credentials, device_code. Default: authorization_code and refresh_token.",
        ),
    ] = None,
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", help="A scope the client may ask for (repeatable)."),
    ] = None,
    client_id: Annotated[
        str | None, typer.Option("--client-id", help="Its client_id (default: random).")
    ] = None,
) -> None:
    """Register an OAuth client; prints its client_id (and secret, this once)."""
    from encore.auth import service as auth_service

    settings = _settings()
    options: dict[str, list[str]] = {}
    if grant:
        options["grant_types"] = [_GRANT_ALIASES.get(entry, entry) for entry in grant]
    if scope:
        options["scopes"] = scope

    async def work(db_session: AsyncSession) -> auth_service.NewClient:
        return await auth_service.create_client(
            db_session=db_session,
            name=name,
            redirect_uris=redirect_uri or (),
            confidential=confidential,
            first_party=first_party,
            client_id=client_id,
            **options,
        )

    created = _run_in_session(settings, work)
    console.print(f"created client {escape(created.client.name)}")
    # Plain lines on stdout: scripts read these.
    typer.echo(f"client_id: {created.client.client_id}")
    if created.secret is not None:
        typer.echo(f"client_secret: {created.secret}")
        console.print(
            "[yellow]the client secret is shown only now: Encore keeps just a hash of it. "
            "Store it safely.[/yellow]"
        )


@clients_app.command("list")
def clients_list() -> None:
    """List the registered OAuth clients."""
    from rich.table import Table

    from encore.auth import service as auth_service

    settings = _settings()

    async def work(db_session: AsyncSession) -> list[tuple[str, ...]]:
        return [
            (
                client.client_id,
                client.name,
                "yes" if client.confidential else "",
                "yes" if client.first_party else "",
                "\n".join(_grant_label(grant) for grant in client.grant_types),
                "\n".join(client.redirect_uris),
            )
            for client in await auth_service.list_clients(db_session=db_session)
        ]

    rows = _run_in_session(settings, work)
    table = Table()
    for column in ("client_id", "name", "confidential", "first_party", "grants", "redirect uris"):
        # Folded, never cut short: a truncated client_id cannot be typed back.
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    output.print(table)
    console.print(f"{len(rows)} clients")


@clients_app.command("delete")
def clients_delete(client_id: Annotated[str, typer.Argument(help="Its client_id.")]) -> None:
    """Remove an OAuth client and every sign-in made through it."""
    from encore.auth import service as auth_service

    settings = _settings()

    async def work(db_session: AsyncSession) -> None:
        await auth_service.delete_client(db_session=db_session, client_id=client_id)

    _run_in_session(settings, work)
    console.print(
        f"deleted client {escape(client_id)}; its access tokens already issued expire within "
        f"{settings.access_token_minutes} minutes"
    )


# ---------------------------------------------------------------------------------------------
# Signing keys


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Make a new token signing key current and retire the old one."""
    from sqlalchemy import select

    from encore.auth.models import SigningKey
    from encore.auth.runtime import SIGNING_KEY_PURPOSE
    from encore.auth.secrets import SecretBox, load_master_key
    from encore.auth.tokens import create_signing_key

    settings = _settings()
    try:
        box = SecretBox.for_purpose(load_master_key(settings), SIGNING_KEY_PURPOSE)
    except SettingsError as exc:
        console.print(f"[red]encore: {escape(str(exc))}[/red]", soft_wrap=True)
        raise typer.Exit(2) from None

    async def work(db_session: AsyncSession) -> tuple[str, bool]:
        previous = await db_session.scalar(
            select(SigningKey.kid).where(SigningKey.retired_at.is_(None)).limit(1)
        )
        return await create_signing_key(db_session=db_session, box=box), previous is not None

    kid, retired_one = _run_in_session(settings, work)
    console.print(f"signing key {kid} is now current; every server signs with it within a minute")
    if retired_one:
        console.print(
            "the old key stays published at /oauth/jwks until the tokens it signed expire "
            f"({settings.access_token_minutes} minutes), so nobody is signed out"
        )


# ---------------------------------------------------------------------------------------------
# Media edge


@media_app.command("edge-keys")
def media_edge_keys() -> None:
    """Print the nginx key file of the media edge (deploy/nginx/keys.conf.example)."""
    from encore.auth.secrets import load_master_key
    from encore.streaming.service import media_signer

    settings = _settings()
    try:
        signer = media_signer(settings, load_master_key(settings))
    except SettingsError as exc:
        _fail(str(exc))
    # Secrets: printed to stdout for redirection into the file, never logged.
    output.print(signer.edge_keys_config(), end="", markup=False, highlight=False, soft_wrap=True)


# ---------------------------------------------------------------------------------------------
# Reports

_FromOption = Annotated[
    str | None, typer.Option("--from", help="First UTC day, YYYY-MM-DD (default: 29 days ago).")
]
_ToOption = Annotated[str | None, typer.Option("--to", help="Last UTC day (default: today).")]


def _print_report(tables: list[object]) -> None:
    # Piped into a file or another program there is no screen width to fit: never cut a figure.
    target = output if output.is_terminal else Console(width=max(output.width, 200))
    for table in tables:
        target.print(table)


def _report_window(from_text: str | None, to_text: str | None) -> tuple[date, date]:
    from encore.db import utcnow

    try:
        last = date.fromisoformat(to_text) if to_text else utcnow().date()
        first = date.fromisoformat(from_text) if from_text else last - timedelta(days=29)
    except ValueError as exc:
        _fail(f"dates are YYYY-MM-DD: {exc}")
    return first, last


@report_app.command("engagement")
def report_engagement(from_text: _FromOption = None, to_text: _ToOption = None) -> None:
    """DAU, WAU, MAU, new and returning listeners, sessions, streams per listener, per day."""
    from encore.analytics import report

    settings = _settings()
    first, last = _report_window(from_text, to_text)

    async def work(db_session: AsyncSession) -> list[object]:
        engagement = await report.compute_engagement(
            db_session=db_session, from_date=first, to_date=last
        )
        return list(report.engagement_tables(engagement))

    _print_report(_run_in_session(settings, work))


@report_app.command("artist")
def report_artist(
    name: Annotated[str, typer.Argument(help="The artist's name (accents and case ignored).")],
    from_text: _FromOption = None,
    to_text: _ToOption = None,
    granularity: Annotated[str, typer.Option(help="day, week or month buckets.")] = "week",
) -> None:
    """An artist's streams, listeners, saves, skip rate, top tracks and splits."""
    from encore.analytics import report
    from encore.analytics.schemas import Granularity

    settings = _settings()
    first, last = _report_window(from_text, to_text)
    try:
        buckets = Granularity(granularity)
    except ValueError:
        _fail("granularity is day, week or month")

    async def work(db_session: AsyncSession) -> list[object]:
        stats = await report.artist_stats_by_name(
            db_session=db_session, name=name, from_date=first, to_date=last, granularity=buckets
        )
        return list(report.artist_tables(stats))

    _print_report(_run_in_session(settings, work))


@recommend_app.command("train")
def recommend_train(
    engine: Annotated[
        str | None,
        typer.Option(
            help="Training engine: implicit (in this process) or spark (Spark MLlib ALS on "
            "ENCORE_RECOMMEND_SPARK_MASTER; needs the spark extra and Java). "
            "Default: ENCORE_RECOMMEND_ENGINE (implicit)."
        ),
    ] = None,
) -> None:
    """Train a recommendation model on the listening window and publish it to the store."""
    from typing import get_args

    from encore.config import TrainingEngineName
    from encore.recommend import service as recommend_service
    from encore.storage import open_blob_store

    if engine is not None and engine not in get_args(TrainingEngineName):
        _fail(f"unknown engine {engine!r}: choose implicit or spark")
    settings = _settings(recommend_engine=engine)
    if settings.recommend_engine == "spark":
        from encore.recommend.spark_training import SparkUnavailable, check_spark_available

        try:
            check_spark_available()
        except SparkUnavailable as exc:
            _fail(str(exc))

    async def train(db_session: AsyncSession) -> dict[str, Any] | None:
        artifact = await recommend_service.train_model(
            db_session=db_session, store=open_blob_store(settings), settings=settings
        )
        return None if artifact is None else {**artifact.metadata, "version": artifact.version}

    metadata = _run_in_session(settings, train)
    if metadata is None:
        output.print("no listening in the window yet: nothing to train on")
        return
    output.print(f"model {metadata['version']} (engine {metadata['engine']})")
    output.print(
        f"users {metadata['users']}, tracks {metadata['items']}, "
        f"interactions {metadata['interactions']}, {metadata['training_seconds']} s"
    )
    output.print(f"holdout metrics: {metadata['metrics']}")


@recommend_app.command("refresh-playlists")
def recommend_refresh_playlists() -> None:
    """Refresh every listener's generated playlists (Discover Weekly, Daily Mix) now."""
    from encore.db import create_engine, create_session_factory
    from encore.recommend.generated import refresh_generated_playlists
    from encore.recommend.model_store import load_newest_model
    from encore.storage import open_blob_store

    settings = _settings()

    async def refresh() -> tuple[int, str | None]:
        model = await load_newest_model(
            open_blob_store(settings), ann_min_items=settings.recommend_ann_min_items
        )
        engine = create_engine(settings)
        try:
            await _require_migrated(engine)
            count = await refresh_generated_playlists(
                session_factory=create_session_factory(engine), model=model
            )
        finally:
            await engine.dispose()
        return count, model.version if model else None

    count, version = asyncio.run(refresh())
    output.print(f"refreshed the generated playlists of {count} listeners (model {version})")


@recommend_app.command("evaluate")
def recommend_evaluate(
    hetrec: Annotated[
        Path, typer.Option(help="Folder of HetRec 2011 Last.fm 2k (user_artists.dat).")
    ],
) -> None:
    """Precision@10 and NDCG@10 of popularity, plain ALS and Encore's model on HetRec."""
    from rich.table import Table

    from encore.recommend.evaluation import evaluate_hetrec

    if not (hetrec / "user_artists.dat").is_file():
        _fail(f"{hetrec} has no user_artists.dat")
    table = Table("model", "precision@10", "NDCG@10")
    for row in evaluate_hetrec(hetrec):
        table.add_row(row.label, f"{row.precision_at_10:.4f}", f"{row.ndcg_at_10:.4f}")
    output.print(table)


if __name__ == "__main__":
    app()
