"""``declic api``, ``declic keys create|list|revoke`` and ``declic bench api``.

:func:`register` adds them to the main ``declic`` app; ``python -m api`` runs them alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

console = Console()
err = Console(stderr=True)

if TYPE_CHECKING:
    from api.keys import KeyStore


@contextmanager
def _key_store() -> Iterator[KeyStore]:
    from api.keys import KeyStore, open_pool
    from declic.settings import get_settings

    pool = open_pool(get_settings().database_url, max_size=1)
    try:
        yield KeyStore(pool)
    finally:
        pool.close()


def register(app: typer.Typer) -> None:
    """Add the API's commands to ``app``."""
    keys_app = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)
    app.add_typer(keys_app, name="keys")

    @app.command()
    def api(
        host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="TCP port")] = 8000,
        workers: Annotated[int, typer.Option(help="uvicorn worker processes")] = 1,
    ) -> None:
        """Serve the HTTP API with uvicorn (OpenAPI at /docs)."""
        import uvicorn

        from declic.logs import configure
        from declic.settings import get_settings

        settings = get_settings()
        configure(settings.log_level, settings.log_format)
        uvicorn.run("api.app:app_from_environment", factory=True, host=host, port=port, workers=workers,
                    access_log=False, log_level=settings.log_level.lower())

    @keys_app.command("create")
    def keys_create(
        name: Annotated[str, typer.Option(help="Who or what uses the key")],
        scope: Annotated[list[str], typer.Option(help="events:write or integrations (repeatable)")],
        rate: Annotated[int | None, typer.Option(help="Requests a minute; default DECLIC_API_RATE_PER_MINUTE")] = None,
    ) -> None:
        """Create a key; it is printed once, alone on the last line, and never shown again."""
        from api.keys import KeyError_

        try:
            with _key_store() as store:
                key, record = store.create(name, scope, rate)
        except KeyError_ as exc:
            err.print(f"[red]{exc}[/]")
            raise typer.Exit(2) from exc
        err.print(f"created key {record.id} ({record.name}) with {', '.join(record.scopes)}; store it now:")
        print(key)

    @keys_app.command("list")
    def keys_list(all_: Annotated[bool, typer.Option("--all", help="Include revoked keys")] = False) -> None:
        """List keys (their prefix, never the key)."""
        with _key_store() as store:
            rows = store.list(include_revoked=all_)
        table = Table("id", "name", "prefix", "scopes", "rate/min", "created", "revoked")
        for k in rows:
            table.add_row(str(k.id), k.name, k.prefix + "…", ", ".join(k.scopes),
                          str(k.rate_per_minute or "default"), f"{k.created_at:%Y-%m-%d %H:%M}",
                          f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "")
        console.print(table)

    @keys_app.command("revoke")
    def keys_revoke(ref: Annotated[str, typer.Argument(help="The key's id, its prefix, or the key")]) -> None:
        """Revoke a key; API processes stop accepting it within DECLIC_API_KEY_CACHE_S seconds."""
        from api.keys import KeyError_

        try:
            with _key_store() as store:
                record = store.revoke(ref)
        except KeyError_ as exc:
            err.print(f"[red]{exc}[/]")
            raise typer.Exit(1) from exc
        console.print(f"revoked key {record.id} ({record.name})")

    bench_app = _bench_group(app)

    @bench_app.command("api")
    def bench_api(
        events: Annotated[int, typer.Option(help="Events per measured run")] = 2000,
        batch_size: Annotated[int, typer.Option(help="Events per batch call")] = 100,
        concurrency: Annotated[int, typer.Option(help="Concurrent client connections")] = 16,
        repeats: Annotated[int, typer.Option(help="Runs per case; the median is reported")] = 3,
        processes: Annotated[int, typer.Option(help="uvicorn worker processes")] = 1,
        clients: Annotated[int, typer.Option(min=1, help="Load-generating processes sharing the connections")] = 2,
    ) -> None:
        """Drive the API over loopback: events/s and latency, single vs batch, beside a baseline."""
        from api.bench import run_api_bench

        report = run_api_bench(events=events, batch_size=batch_size, concurrency=concurrency,
                               repeats=repeats, processes=processes, clients=clients)
        console.print(report.table())


def _bench_group(app: typer.Typer) -> typer.Typer:
    """The app's ``bench`` group, created when the main app does not have one yet."""
    for group in app.registered_groups:
        if group.name == "bench" and group.typer_instance is not None:
            return group.typer_instance
    bench_app = typer.Typer(help="Benchmarks.", no_args_is_help=True)
    app.add_typer(bench_app, name="bench")
    return bench_app
