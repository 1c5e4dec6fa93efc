"""structlog, configured once: JSON in production, readable on a terminal.

Log events are past-tense facts (``email_sent``, ``send_skipped``). Recipients appear only
as :func:`recipient_hash`; tokens and payloads never appear.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from typing import Any

import structlog

from events.encoding import json_bytes


def recipient_hash(address: str) -> str:
    """A short, stable, non-reversible handle for an address, for logs and metrics."""
    return hashlib.sha256(address.strip().lower().encode()).hexdigest()[:16]


def mask_address(address: str) -> str:
    """``jane.doe@example.com`` → ``j•••@example.com``, for tables shown to people."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}•••@{domain}" if domain else "•••"


# Valid in JSON strings, left raw by orjson, yet line breaks to str.splitlines (U+0085) and
# to JavaScript (U+2028, U+2029): escaped, so a log line is one line for every reader even
# when an event id or a payload carries one.
_LINE_BREAKS_IN_JSON = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _json_line(value: Any, **kw: Any) -> str:
    """orjson, a tenth of the standard library's time a line (json_bytes keeps ``json`` for what
    orjson refuses); ``default`` is structlog's fallback for values JSON has no type for."""
    encoded = json_bytes(value, default=kw.get("default"))
    line = encoded.decode()
    # Their UTF-8 starts C2 85 or E2 80: most lines have neither, and skip the (slower) translate.
    return line.translate(_LINE_BREAKS_IN_JSON) if b"\xc2\x85" in encoded or b"\xe2\x80" in encoded else line


def configure(level: str = "INFO", fmt: str = "auto") -> None:
    """Set up structlog and the standard library root logger in one go."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    # No log line says where in the source it was written, so the standard library need not
    # walk the stack to find out on every call (its documented switch for this).
    logging._srcfile = None
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(serializer=_json_line)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # Through the standard library's handler: one lock for structlog's lines and those of
        # Celery and friends, so lines from concurrent threads never interleave.
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format="%(message)s", force=True)
    # Celery's own "Task ... received" and "... succeeded in" lines at INFO repeat what
    # Déclic's event_ingested and email_sent lines say, at two lines of CPU per task; its
    # warnings and errors (a failed or retried task) still show. DEBUG keeps them all.
    quiet = logging.WARNING if logging.getLevelName(level.upper()) == logging.INFO else logging.NOTSET
    for name in ("celery.app.trace", "celery.worker.strategy"):
        logging.getLogger(name).setLevel(quiet)
