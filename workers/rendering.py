"""Rendering an email from its templates: subject, preheader, HTML and text parts.

Templates live in ``templates/<template>/<locale>/`` (``subject.txt``, ``preheader.txt``,
``body.html``, optional ``body.txt`` and per-variant ``subject.<variant>.txt``). They run in a
Jinja2 :class:`~jinja2.sandbox.SandboxedEnvironment` with autoescaping for HTML and
``StrictUndefined``, are compiled once per process, and the HTML gets its CSS inlined for
email clients. Any failure raises :class:`RenderError`: never a blank or half-rendered email.

    renderer = Renderer(Path("templates"), brand={...})
    email = renderer.render(flow, flow.all_steps[0], locale="fr-CA", variant="a", context={...})
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import css_inline
from babel import Locale
from babel.dates import format_date, format_datetime
from babel.numbers import format_currency, format_decimal
from inscriptis import get_text
from inscriptis.model.config import ParserConfig
from jinja2 import FileSystemLoader, StrictUndefined, TemplateError, pass_context, select_autoescape
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict

from flows.model import Flow, Step

_WHITESPACE = re.compile(r"\s+")


class RenderError(Exception):
    """A template failed for this send; permanent: retrying renders the same failure."""


class RenderedEmail(BaseModel):
    model_config = ConfigDict(frozen=True)

    subject: str
    preheader: str
    html: str
    text: str
    locale: str


def build_context(event: Mapping[str, Any], contact: Mapping[str, Any], send_id: str) -> dict[str, Any]:
    """The values every template sees besides brand, locale and flow names."""
    attributes = dict(contact.get("attributes") or {})
    person = {**contact, "attributes": attributes, "first_name": attributes.get("first_name")}
    return {"event": event, "data": event.get("data", {}), "contact": person, "send_id": send_id}


def locale_candidates(requested: str | None, flow: Flow) -> list[str]:
    """``fr-CA`` → ``fr-CA``, ``fr``, then the flow's default; only locales the flow has."""
    wanted: list[str] = []
    if requested:
        tag = requested.replace("_", "-")
        wanted += [tag, tag.split("-")[0]]
    wanted.append(flow.default_locale)
    available = {loc.lower(): loc for loc in flow.locales}
    seen: list[str] = []
    for tag in wanted:
        match = available.get(tag.lower())
        if match and match not in seen:
            seen.append(match)
    return seen


def _babel_locale(ctx: Context) -> Locale:
    return _parse_locale(str(ctx.get("locale") or "en"))


@lru_cache(maxsize=256)
def _parse_locale(tag: str) -> Locale:
    return Locale.parse(tag.replace("-", "_"))


def _as_decimal(value: Any) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation as exc:
        raise ValueError(f"{value!r} is not an amount") from exc


@pass_context
def _money(ctx: Context, value: Any, currency: str) -> str:
    return _format_money(str(_as_decimal(value)), currency, str(ctx.get("locale") or "en"))


@pass_context
def _number(ctx: Context, value: Any) -> str:
    return _format_number(str(_as_decimal(value)), str(ctx.get("locale") or "en"))


# Babel formats an amount in tens of microseconds (it looks up the currency's plural names
# even when the pattern does not use them), several times per email; prices, shipping fees
# and small totals repeat across emails, so the formatted text is kept per amount and locale.
@lru_cache(maxsize=8192)
def _format_money(amount: str, currency: str, locale: str) -> str:
    return format_currency(Decimal(amount), currency, locale=_parse_locale(locale))


@lru_cache(maxsize=4096)
def _format_number(amount: str, locale: str) -> str:
    return format_decimal(Decimal(amount), locale=_parse_locale(locale))


def _line_total(item: Mapping[str, Any]) -> Decimal:
    """unit_price × quantity, exactly: templates never multiply money as floats."""
    return _as_decimal(item["unit_price"]) * int(item["quantity"])


def _as_datetime(value: Any) -> datetime | date:
    if isinstance(value, datetime | date):
        return value
    text = str(value)
    return datetime.fromisoformat(text) if "T" in text else date.fromisoformat(text)


def _contact_zone(ctx: Context) -> ZoneInfo:
    contact = ctx.get("contact") or {}
    return ZoneInfo(contact.get("timezone") or "UTC")


@pass_context
def _date(ctx: Context, value: Any, format: str = "long") -> str:
    moment = _as_datetime(value)
    if isinstance(moment, datetime) and moment.tzinfo is not None:
        moment = moment.astimezone(_contact_zone(ctx))  # the customer's calendar day, not UTC's
    return format_date(moment, format=format, locale=_babel_locale(ctx))


@pass_context
def _datetime(ctx: Context, value: Any, format: str = "medium") -> str:
    moment = _as_datetime(value)
    if not isinstance(moment, datetime):
        moment = datetime(moment.year, moment.month, moment.day)
    return format_datetime(moment, format=format, tzinfo=_contact_zone(ctx), locale=_babel_locale(ctx))


def one_line(text: str) -> str:
    """Collapse all whitespace, newlines included, so a subject can never split a header."""
    return _WHITESPACE.sub(" ", text).strip()


# No plain dict has these attributes: a name outside them can only be a key.
_DICT_ATTRIBUTES = frozenset(dir(dict))


class _Sandbox(SandboxedEnvironment):
    """The sandbox, reading ``contact.first_name`` from a plain dict without a failed getattr first.

    Jinja2 tries the attribute, then the key; on a dict, for any name dict itself lacks, the
    attribute always fails, so the key is what it returns — looked up here directly, which
    spares an AttributeError on most lookups of a render. Everything else is the sandbox's.
    """

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


class Renderer:
    """Compiles templates once per process and renders emails from plain values."""

    def __init__(self, templates_dir: Path, brand: Mapping[str, str]) -> None:
        self.templates_dir = templates_dir
        self.brand = dict(brand)
        self.env = _Sandbox(
            loader=FileSystemLoader(str(templates_dir)),
            autoescape=select_autoescape(enabled_extensions=("html",), default=False),
            undefined=StrictUndefined,
            auto_reload=False,
            cache_size=4096,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(
            money=_money, number=_number, date=_date, datetime=_datetime, line_total=_line_total
        )
        self._inliner = css_inline.CSSInliner(keep_style_tags=True, load_remote_stylesheets=False)

    @lru_cache(maxsize=4096)  # noqa: B019 - one renderer per process; the cache is its point
    def _exists(self, name: str) -> bool:
        return (self.templates_dir / name).is_file()

    def _render(self, name: str, context: Mapping[str, Any]) -> str:
        return self.env.get_template(name).render(context)

    def render(
        self,
        flow: Flow,
        step: Step,
        *,
        locale: str | None,
        variant: str,
        context: Mapping[str, Any],
    ) -> RenderedEmail:
        """Render one email; raise RenderError naming the template and the cause."""
        template = flow.template_for(step)
        candidates = locale_candidates(locale, flow)
        chosen = next((c for c in candidates if self._exists(f"{template}/{c}/body.html")), None)
        if chosen is None:
            raise RenderError(f"no templates for {template!r} in locales {candidates}")
        base = f"{template}/{chosen}"
        values = {
            **context,
            "brand": self.brand,
            "locale": locale or chosen,
            "lang": (locale or chosen).split("-")[0].split("_")[0],
            "flow": flow.name,
            "step": step.name,
            "variant": variant,
        }
        values.setdefault("links", {"unsubscribe": None})
        current = ""
        try:
            current = self._variant_file(base, "subject", variant)
            subject = one_line(self._render(current, values))
            current = self._variant_file(base, "preheader", variant)
            preheader = one_line(self._render(current, values))
            current = f"{base}/body.html"
            html = self._render(current, {**values, "preheader": preheader})
            if not flow.track_links:
                html = untracked(html)
            html = self._inliner.inline(html)
            if self._exists(f"{base}/body.txt"):
                current = f"{base}/body.txt"
                text = self._render(current, values).strip() + "\n"
            else:
                text = html_to_text(html)
        except TemplateError as exc:
            raise RenderError(f"{current}: {exc.__class__.__name__}: {exc}") from exc
        except (ValueError, TypeError, ArithmeticError, KeyError) as exc:
            raise RenderError(f"{current}: {exc.__class__.__name__}: {exc}") from exc
        if not subject:
            raise RenderError(f"{base}: the subject rendered blank")
        if not text.strip():
            raise RenderError(f"{base}: the body rendered blank")
        return RenderedEmail(subject=subject, preheader=preheader, html=html, text=text, locale=chosen)

    def _variant_file(self, base: str, part: str, variant: str) -> str:
        specific = f"{base}/{part}.{variant}.txt"
        return specific if self._exists(specific) else f"{base}/{part}.txt"


# Links keep their URL in the text part ("Track your parcel [https://...]").
_TEXT_CONFIG = ParserConfig(display_links=True)
_ANCHOR = re.compile(r"<a\b(?![^>]*\bses:no-track\b)", re.I)


def untracked(html: str) -> str:
    """Every link marked ``ses:no-track``, which SES's click tracking leaves alone.

    https://docs.aws.amazon.com/ses/latest/dg/faqs-metrics.html (open and click tracking)
    """
    return _ANCHOR.sub("<a ses:no-track", html)


_HIDDEN_PREHEADER = re.compile(r"<div[^>]*display:\s*none[^>]*>.*?</div>", re.S | re.I)


def html_to_text(html: str) -> str:
    """A readable text part from the HTML, without the hidden preheader."""
    text = get_text(_HIDDEN_PREHEADER.sub("", html, count=1), _TEXT_CONFIG)
    lines = [line.rstrip() for line in text.splitlines()]
    compact = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return compact + "\n"
