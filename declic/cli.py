"""The ``declic`` command line: run the pieces, check flows, preview, inspect dead letters."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from declic.settings import get_settings

if TYPE_CHECKING:
    from workers.rendering import Renderer

app = typer.Typer(help="Déclic: triggered and transactional email through Amazon SES.", no_args_is_help=True)
flows_app = typer.Typer(help="Check the flow catalogue.", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead letters: what could not be processed, and why.", no_args_is_help=True)
suppress_app = typer.Typer(help="The suppression list: addresses never mailed.", no_args_is_help=True)
sends_app = typer.Typer(help="Sends in the ledger.", no_args_is_help=True)
app.add_typer(flows_app, name="flows")
app.add_typer(dlq_app, name="dlq")
app.add_typer(suppress_app, name="suppress")
app.add_typer(sends_app, name="sends")
console = Console()
err = Console(stderr=True)


def _renderer() -> Renderer:
    from workers.rendering import Renderer
    from workers.runtime import brand

    settings = get_settings()
    return Renderer(settings.templates_dir, brand(settings))


@app.command()
def migrate() -> None:
    """Create or update the database schema (idempotent)."""
    from workers.migrate import migrate as run

    applied = run(get_settings().database_url)
    console.print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))


@app.command()
def worker(
    queues: Annotated[str, typer.Option(help="Comma-separated queues, in priority order.")] = (
        "events.critical,events,send.critical,send.transactional,send.bulk"
    ),
    concurrency: Annotated[int, typer.Option(help="Threads (or processes) per worker.")] = 32,
    pool: Annotated[str, typer.Option(help="threads, prefork, solo")] = "threads",
    loglevel: Annotated[str, typer.Option()] = "INFO",
) -> None:
    """Run a Celery worker (same as ``celery -A workers.app worker``)."""
    from workers.app import app as celery_app

    celery_app.worker_main([
        "worker", "-Q", queues, "--pool", pool, "--concurrency", str(concurrency),
        "--without-gossip", "--without-mingle", "-l", loglevel,
    ])


@app.command()
def beat(loglevel: Annotated[str, typer.Option()] = "INFO") -> None:
    """Run Celery beat: the periodic reporting tasks (SQS ingest, aggregation)."""
    import tempfile

    from workers.app import app as celery_app

    schedule = Path(tempfile.gettempdir()) / "declic-beat-schedule"
    celery_app.start(["beat", "-l", loglevel, "--schedule", str(schedule)])


@app.command()
def dispatcher(
    interval: Annotated[float, typer.Option(help="Seconds between looks at the schedule")] = 0.5,
    scan_every: Annotated[float, typer.Option(help="Seconds between date and inactivity scans")] = 60.0,
) -> None:
    """Run the dispatcher: due scheduled sends to the broker, date and inactivity scans."""
    import signal
    import threading

    from declic.logs import configure
    from events.publisher import Publisher
    from workers.dispatcher import Dispatcher, OutboxSweep
    from workers.runtime import deps
    from workers.tasks import enqueue

    settings = get_settings()
    configure(settings.log_level, settings.log_format)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    running = deps()
    outbox_sweep = None
    if settings.uses_outbox:
        publisher = Publisher(settings.broker_url, critical_types=frozenset(settings.critical_event_types))
        assert publisher.outbox is not None
        outbox_sweep = OutboxSweep(publisher.outbox, running.store, publisher, settings.outbox_grace_s)
    Dispatcher(running.store, running.catalogue, enqueue, default_tz=settings.default_timezone,
               interval_s=interval, scan_every_s=scan_every, lost_after_s=settings.lost_after_s,
               outbox_sweep=outbox_sweep).run(stop)


@suppress_app.command("add")
def suppress_add(email: str, reason: Annotated[str, typer.Option()] = "manual") -> None:
    """Never mail this address again (any flow, critical included)."""
    from workers.store import Store

    store = Store.connect(get_settings().database_url, max_size=1)
    store.suppress(email, reason, source="cli")
    store.close()
    console.print(f"suppressed {email} ({reason})")


@suppress_app.command("remove")
def suppress_remove(email: str) -> None:
    """Allow mail to this address again."""
    from workers.store import Store

    store = Store.connect(get_settings().database_url, max_size=1)
    removed = store.unsuppress(email)
    store.close()
    console.print(f"removed {email}" if removed else f"{email} was not suppressed")
    if not removed:
        raise typer.Exit(1)


@suppress_app.command("list")
def suppress_list(limit: Annotated[int, typer.Option()] = 1000) -> None:
    """The suppressed addresses, newest first."""
    from workers.store import Store

    store = Store.connect(get_settings().database_url, max_size=1)
    rows = store.suppressions(limit)
    store.close()
    table = Table("address", "reason", "source", "since")
    for row in rows:
        table.add_row(row["email"], row["reason"], row["source"] or "", f"{row['created_at']:%Y-%m-%d %H:%M}")
    console.print(table)
    console.print(f"{len(rows)} suppressed address(es)")


@sends_app.command("cancel")
def sends_cancel(
    event: Annotated[str | None, typer.Option(help="Cancel what this event still has to send")] = None,
    contact: Annotated[str | None, typer.Option(help="Cancel what this contact still has to receive")] = None,
) -> None:
    """Cancel pending and scheduled sends of an event or a contact (sent mail is untouched)."""
    from workers.store import Store

    if (event is None) == (contact is None):
        err.print("give --event ID or --contact ID")
        raise typer.Exit(2)
    store = Store.connect(get_settings().database_url, max_size=1)
    count = store.cancel_pending(event_id=event, contact_id=contact)
    store.close()
    console.print(f"cancelled {count} send(s)")


@flows_app.command("check")
def flows_check(
    flows_dir: Annotated[Path | None, typer.Option(help="Default: DECLIC_FLOWS_DIR")] = None,
    templates_dir: Annotated[Path | None, typer.Option(help="Default: DECLIC_TEMPLATES_DIR")] = None,
) -> None:
    """Load every flow and render it in every locale and variant from its sample event."""
    from declic.checks import check_catalogue
    from workers.rendering import Renderer
    from workers.runtime import brand

    settings = get_settings()
    tdir = templates_dir or settings.templates_dir
    report = check_catalogue(flows_dir or settings.flows_dir, tdir, Renderer(tdir, brand(settings)))
    if not report.ok:
        err.print(f"[bold red]{len(report.problems)} problem(s) in the flow catalogue:[/]")
        for problem in report.problems:
            err.print(f"  [red]✗[/] {problem.file}: [bold]{problem.field}[/]: {problem.message}")
        err.print("Fix the named fields and run `declic flows check` again.")
        raise typer.Exit(1)
    assert report.catalogue is not None
    table = Table("flow", "trigger", "category", "locales", "variants", "steps")
    for flow in report.catalogue:
        table.add_row(flow.name, flow.trigger_type, flow.category.value, ", ".join(flow.locales),
                      ", ".join(v.name for v in flow.variants), ", ".join(s.name for s in flow.all_steps))
    console.print(table)
    console.print(f"[green]✓[/] {len(report.catalogue)} flows, {report.rendered} renders, no problems")


@app.command()
def preview(
    flow: str,
    event: Annotated[Path | None, typer.Option(help="Event JSON file; default: the flow's sample")] = None,
    locale: Annotated[str | None, typer.Option(help="e.g. fr or fr-CA; default: the event's")] = None,
    variant: Annotated[str | None, typer.Option()] = None,
    step: Annotated[str | None, typer.Option(help="A follow-up step; default: the first")] = None,
    out: Annotated[Path | None, typer.Option(help="Where to write the HTML")] = None,
) -> None:
    """Render a flow to an HTML file, from its sample event or from --event FILE."""
    from events.envelope import EventInvalid, parse_event
    from flows.loader import load_catalogue
    from workers.rendering import RenderError, build_context

    catalogue = load_catalogue(get_settings().flows_dir)
    if flow not in catalogue.flows:
        err.print(f"no flow {flow!r}; known flows: {', '.join(sorted(catalogue.flows))}")
        raise typer.Exit(2)
    definition = catalogue[flow]
    try:
        parsed = parse_event(event.read_bytes() if event else definition.sample)
    except EventInvalid as exc:
        err.print(f"[red]the event is invalid:[/] {exc}")
        raise typer.Exit(2) from exc
    context = build_context(parsed.to_json(), parsed.contact.model_dump(mode="json"), "preview")
    chosen_locale = locale or parsed.contact.locale
    try:
        email = _renderer().render(
            definition, definition.step(step) if step else definition.all_steps[0], locale=chosen_locale,
            variant=variant or definition.variants[0].name, context=context,
        )
    except RenderError as exc:
        err.print(f"[red]rendering failed:[/] {exc}")
        raise typer.Exit(1) from exc
    target = out or Path(f"{flow}.{email.locale}.html")
    target.write_text(email.html, encoding="utf-8")
    console.print(f"subject:   {email.subject}\npreheader: {email.preheader}\nwrote {target}")


@app.command("send-test")
def send_test(
    flow: str,
    to: Annotated[str, typer.Option(help="Recipient address")],
    locale: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Send a flow's sample once through the configured SES (no ledger, tagged as a test)."""
    from flows.loader import load_catalogue
    from workers.payload import OutgoingEmail, build_send_request
    from workers.rendering import build_context
    from workers.ses import SesSender

    settings = get_settings()
    definition = load_catalogue(settings.flows_dir)[flow]
    from events.envelope import parse_event

    sample = parse_event(definition.sample)
    contact = {**sample.contact.model_dump(mode="json"), "email": to}
    context = build_context(sample.to_json(), contact, "send-test")
    step = definition.all_steps[0]
    email = _renderer().render(definition, step, locale=locale or sample.contact.locale,
                               variant=definition.variants[0].name, context=context)
    request = build_send_request(OutgoingEmail(
        sender_email=definition.sender.email, sender_name=definition.sender.name, to=to,
        subject=email.subject, html=email.html, text=email.text, reply_to=definition.reply_to,
        configuration_set=settings.ses_configuration_set,
        tags={"flow": definition.name, "step": step.name, "variant": definition.variants[0].name,
              "send_id": "send-test"},
    ))
    message_id = SesSender(timeout_s=settings.ses_timeout_s).send(request)
    console.print(f"sent {flow!r} to {to}: SES message id {message_id}", soft_wrap=True)


@dlq_app.command("list")
def dlq_list(
    flow: Annotated[str | None, typer.Option()] = None,
    reason: Annotated[str | None, typer.Option(help="Substring of the reason")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Include replayed ones")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    limit: Annotated[int, typer.Option()] = 100,
) -> None:
    """List dead letters, newest last."""
    from workers.store import Store

    store = Store.connect(get_settings().database_url, max_size=1)
    rows = store.dead_letters(include_replayed=all_, flow=flow, reason=reason, limit=limit)
    store.close()
    if as_json:
        json.dump(rows, sys.stdout, default=str, indent=2)
        return
    table = Table("id", "kind", "ref", "flow", "reason", "created", "replayed")
    for row in rows:
        table.add_row(str(row["id"]), row["kind"], row["ref"] or "", row["flow"] or "",
                      row["reason"][:100], f"{row['created_at']:%Y-%m-%d %H:%M:%S}",
                      "yes" if row["replayed_at"] else "")
    console.print(table)
    console.print(f"{len(rows)} dead letter(s)")


@dlq_app.command("replay")
def dlq_replay(
    id_: Annotated[list[int] | None, typer.Option("--id", help="Dead letter id (repeatable)")] = None,
    flow: Annotated[str | None, typer.Option()] = None,
    reason: Annotated[str | None, typer.Option(help="Substring of the reason")] = None,
) -> None:
    """Process dead letters again; a send already sent is never sent twice."""
    from workers.store import Store
    from workers.tasks import enqueue, ingest

    if not (id_ or flow or reason):
        err.print("choose what to replay: --id N, --flow F or --reason TEXT")
        raise typer.Exit(2)
    store = Store.connect(get_settings().database_url, max_size=1)
    rows = store.dead_letters(ids=id_ or (), flow=flow, reason=reason, limit=10_000)
    replayed = 0
    for row in rows:
        if row["kind"] == "send" and row["ref"]:
            item = store.reopen_send(row["id"], row["ref"])
            if item:
                enqueue([item])
                replayed += 1
        elif row["kind"] == "event" and isinstance(row["payload"], dict):
            ingest.apply_async(args=(row["payload"],), queue="events")
            store.mark_replayed(row["id"])
            replayed += 1
    store.close()
    console.print(f"replayed {replayed} of {len(rows)} dead letter(s)")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Where to write the rendered emails")] = Path("out/demo"),
) -> None:
    """Run the whole pipeline on embedded services and show every catalogue flow sent."""
    from declic.demo import run_demo

    raise typer.Exit(run_demo(out))


def _register_parts() -> None:
    """The commands of the other packages: the API, reporting and the benchmarks."""
    from api.cli import register as register_api
    from bench.cli import register as register_bench
    from reporting.cli import register as register_reporting

    register_bench(app)  # first: it makes `declic bench` itself run the pipeline benchmark
    register_api(app)
    register_reporting(app)


_register_parts()


def main() -> None:
    app()
