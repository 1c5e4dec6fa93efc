"""Consent and the schedule over HTTP: one-click unsubscribe (RFC 8058) and cancellation.

``GET /v1/unsubscribe/{token}`` only shows a confirmation page — link scanners and mail
previews fetch links, and must not unsubscribe anyone. ``POST`` on the same URL (the
confirmation button, or a mail client honouring ``List-Unsubscribe-Post``) unsubscribes at
once. ``POST /v1/sends/cancel`` cancels what an event or a contact still has pending.
"""

from __future__ import annotations

import html

import structlog
from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.concurrency import run_in_threadpool

from api.guard import authorize, ratelimit_headers, state_of
from workers.unsubscribe import InvalidLink, Unsubscribe, UnsubscribeLinks

log = structlog.get_logger(__name__)
router = APIRouter(tags=["consent and schedule"])

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta name="robots" content="noindex"><title>{title}</title>
<style>body{{font-family:Georgia,serif;max-width:34rem;margin:4rem auto;padding:0 1rem;color:#2b2622}}
button{{font:inherit;padding:.7rem 1.4rem;background:#2b2622;color:#fff;border:0;border-radius:4px;cursor:pointer}}
p.fr{{color:#6b625b}}</style></head>
<body><h1>{brand}</h1><h2>{title}</h2>{body}</body></html>"""


def _page(request: Request, title: str, body: str, status: int = 200) -> HTMLResponse:
    brand = html.escape(state_of(request).settings.brand_name)
    return HTMLResponse(_PAGE.format(brand=brand, title=html.escape(title), body=body), status_code=status)


def _read(request: Request, token: str) -> Unsubscribe | HTMLResponse:
    settings = state_of(request).settings
    try:
        return UnsubscribeLinks(settings.require_secret_key(), settings.public_url).read(token)
    except InvalidLink as exc:
        log.info("unsubscribe_refused", reason="expired" if exc.expired else "invalid")
        body = (
            f"<p>{html.escape(str(exc))}. Use the link in a more recent email, or write to "
            f"{html.escape(settings.support_email)}.</p>"
            "<p class='fr'>Ce lien n'est plus valable : utilisez celui d'un e-mail plus récent.</p>"
        )
        return _page(request, "This link cannot be used", body, status=410 if exc.expired else 400)


@router.get("/v1/unsubscribe/{token}", response_class=HTMLResponse, summary="Confirm unsubscribing")
async def confirm_page(request: Request, token: str) -> HTMLResponse:
    """A page with one button; nothing changes until it is pressed."""
    found = _read(request, token)
    if isinstance(found, HTMLResponse):
        return found
    action = html.escape(str(request.url.path), quote=True)
    body = (
        "<p>Stop receiving marketing emails (offers, surveys, news)? Receipts and account emails "
        "will still reach you.</p><p class='fr'>Ne plus recevoir nos e-mails marketing ? Les reçus et "
        "e-mails de compte continueront de vous parvenir.</p>"
        f"<form method='post' action='{action}'><input type='hidden' name='List-Unsubscribe' value='One-Click'>"
        "<button type='submit'>Unsubscribe · Me désabonner</button></form>"
    )
    return _page(request, "Unsubscribe", body)


@router.post("/v1/unsubscribe/{token}", response_class=HTMLResponse, summary="Unsubscribe at once (RFC 8058)")
async def unsubscribe(request: Request, token: str) -> HTMLResponse:
    """One-click: withdraws marketing consent and cancels pending marketing for the contact."""
    found = _read(request, token)
    if isinstance(found, HTMLResponse):
        return found
    done = await run_in_threadpool(state_of(request).store.unsubscribe, found.contact_id)
    log.info("contact_unsubscribed", flow=found.flow, known=done)
    body = (
        "<p>You will not receive marketing emails from us any more.</p>"
        "<p class='fr'>Vous ne recevrez plus nos e-mails marketing.</p>"
    )
    return _page(request, "You are unsubscribed", body)


class CancelRequest(BaseModel):
    """Exactly one of ``event_id`` or ``contact_id``."""

    model_config = ConfigDict(extra="forbid")

    # No NUL: Postgres cannot compare with it, and no id contains one.
    event_id: str | None = Field(default=None, min_length=1, max_length=255, pattern=r"^[^\x00]+$")
    contact_id: str | None = Field(default=None, min_length=1, max_length=255, pattern=r"^[^\x00]+$")

    @model_validator(mode="after")
    def _one(self) -> CancelRequest:
        if (self.event_id is None) == (self.contact_id is None):
            raise ValueError("give exactly one of event_id or contact_id")
        return self


class CancelResult(BaseModel):
    cancelled: int = Field(description="Sends moved from pending or scheduled to skipped: cancelled")


@router.post("/v1/sends/cancel", response_model=CancelResult, summary="Cancel pending sends")
async def cancel(request: Request, response: Response, body: CancelRequest) -> CancelResult:
    """Cancel what an event or a contact still has to send; sent mail is untouched."""
    await authorize(request, "events:write")
    store = state_of(request).store
    count = await run_in_threadpool(lambda: store.cancel_pending(event_id=body.event_id, contact_id=body.contact_id))
    log.info("sends_cancelled", count=count, by="event" if body.event_id else "contact")
    response.headers.update(ratelimit_headers(request))
    return CancelResult(cancelled=count)
