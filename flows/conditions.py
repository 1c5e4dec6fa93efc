"""Flow conditions: Jinja2 expressions evaluated in a sandbox over plain values.

A condition such as ``event.data.total > 100 and contact.counters.purchases >= 5`` is
compiled once by a :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` (no attribute
escapes, no mutation of the values it sees) — never ``eval``. Unknown names are errors, so
a misspelt field fails ``declic flows check`` rather than silently being false.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined)


class ConditionError(ValueError):
    """A condition that does not compile, or failed on the values it was given."""


@lru_cache(maxsize=1024)
def compile_condition(source: str) -> Callable[..., Any]:
    """Compile once; raise ConditionError with Jinja's own message for a syntax error."""
    try:
        return _ENV.compile_expression(source, undefined_to_none=False)
    except TemplateError as exc:
        raise ConditionError(f"condition {source!r} does not compile: {exc}") from exc


def evaluate(source: str | None, values: Mapping[str, Any]) -> bool:
    """True when there is no condition, else the condition's truth over ``values``."""
    if source is None:
        return True
    expression = compile_condition(source)
    try:
        return bool(expression(**values))
    except TemplateError as exc:  # includes SecurityError and UndefinedError
        raise ConditionError(f"condition {source!r} failed: {exc}") from exc
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise ConditionError(f"condition {source!r} failed: {exc}") from exc
