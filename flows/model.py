"""The flow model: what a flow definition (one YAML file) may say, checked by pydantic.

A flow is triggered by an event type (with an optional condition), sends its first step at
once and any follow-up step after its delay. Names follow one rule everywhere: a flow's name
is its YAML file's stem, its template folder and its SES ``flow`` tag.
"""

from __future__ import annotations

import re
from datetime import time, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator, model_validator

from flows.durations import parse_duration

TAG_SAFE = r"^[a-z][a-z0-9_-]{0,63}$"
"""Flow, step and variant names become SES tag values: ASCII letters, digits, _ and - only."""


class Category(StrEnum):
    """Why a flow mails someone, which decides consent and queue."""

    CRITICAL = "critical"  # security and account access: never waits, ignores marketing opt-in
    TRANSACTIONAL = "transactional"  # receipts, shipping, legal notices: ignore marketing opt-in
    MARKETING = "marketing"  # surveys, loyalty, onboarding: opt-in and one-click unsubscribe

    @property
    def queue(self) -> str:
        return {"critical": "send.critical", "transactional": "send.transactional"}.get(
            self.value, "send.bulk"
        )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


EVENT_TYPE = r"^[a-z][a-z0-9_.:-]{0,63}$"


def _as_duration(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("-"):
        return -parse_duration(value[1:])
    return parse_duration(value) if isinstance(value, str) else value


class DateTrigger(_Strict):
    """Fire on a date attribute of the contact (``birthday``) at a local time, once a year."""

    attribute: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    at: time = time(9, 0)
    offset: timedelta = timedelta(0)  # "-3d": three days before the date

    @field_validator("offset", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return _as_duration(value)


class InactivityTrigger(_Strict):
    """Fire once per inactive period, when a contact has shown no activity for ``after``."""

    after: timedelta

    @field_validator("after", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return _as_duration(value)


class Trigger(_Strict):
    """What starts the flow: exactly one of an event type, a date attribute, or inactivity."""

    event: str | None = Field(default=None, pattern=EVENT_TYPE)
    condition: str | None = Field(default=None, max_length=2000)
    date: DateTrigger | None = None
    inactivity: InactivityTrigger | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Trigger:
        kinds = [k for k in ("event", "date", "inactivity") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("give exactly one of event, date or inactivity")
        return self


class Exit(_Strict):
    """An event that cancels what the flow still has pending for the contact."""

    event: str = Field(pattern=EVENT_TYPE)
    # Sees ``event`` (the exit event) and ``trigger`` (the event that started the flow).
    condition: str | None = Field(default=None, max_length=2000)


class QuietHours(_Strict):
    """Local hours when marketing steps wait (e.g. 21:00 to 08:00 spans midnight)."""

    start: time
    end: time

    def contains(self, local: time) -> bool:
        if self.start <= self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end


class Sender(_Strict):
    email: EmailStr
    name: str | None = Field(default=None, max_length=100)

    @field_validator("name")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        if value is not None and re.search(r"[\r\n\x00]", value):
            raise ValueError("a sender name must fit on one line")
        return value


class Variant(_Strict):
    """A subject/preheader variant; its texts are ``subject.<name>.txt`` beside ``subject.txt``."""

    name: str = Field(pattern=TAG_SAFE)
    weight: int = Field(default=1, ge=1, le=1000)


class FrequencyCap(_Strict):
    max: int = Field(ge=1)
    per: timedelta

    @field_validator("per", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value) if isinstance(value, str) else value


class Step(_Strict):
    """One email of a flow. The first step goes out at once; later ones ``after`` a delay."""

    name: str = Field(pattern=TAG_SAFE)
    after: timedelta = timedelta(0)
    template: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{0,63}$")
    category: Category | None = None
    condition: str | None = Field(default=None, max_length=2000)

    @field_validator("after", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value) if isinstance(value, str) else value


class Flow(_Strict):
    """One flow definition. See the README's "Flows" section for every field."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    description: str = Field(default="", max_length=500)
    category: Category
    trigger: Trigger
    sender: Sender
    reply_to: EmailStr | None = None
    template: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{0,63}$")
    locales: list[str] = Field(default_factory=lambda: ["en"], min_length=1)
    default_locale: str = "en"
    variants: list[Variant] = Field(default_factory=lambda: [Variant(name="a")], min_length=1)
    freshness: timedelta | None = None
    frequency_cap: FrequencyCap | None = None
    attachments: list[str] = Field(
        default_factory=list, description="Keys of event data holding an attachment object."
    )
    bulk: bool = Field(default=False, description="Send through send.bulk whatever the category.")
    # False marks every link `ses:no-track`: SES must not rewrite a password-reset link, or a
    # link scanner following the tracking redirect could use up a one-time token.
    track_links: bool = True
    steps: list[Step] = Field(default_factory=list)
    exit: list[Exit] = Field(default_factory=list)
    quiet_hours: QuietHours | None = None
    sample: dict[str, Any] = Field(description="A complete sample event, rendered by the checks.")

    @field_validator("freshness", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> Flow:
        if self.default_locale not in self.locales:
            raise ValueError(f"default_locale {self.default_locale!r} is not in locales")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("variant names must be unique")
        step_names = [s.name for s in self.all_steps]
        if len(set(step_names)) != len(step_names):
            raise ValueError("step names must be unique")
        if self.sample.get("type") != self.trigger_type:
            raise ValueError(f"sample.type must be {self.trigger_type!r}, the type this flow's trigger produces")
        return self

    @property
    def trigger_type(self) -> str:
        """The event type that starts the flow; date and inactivity triggers make their own."""
        if self.trigger.date is not None:
            return f"date.{self.trigger.date.attribute}"
        if self.trigger.inactivity is not None:
            return "inactivity"
        assert self.trigger.event is not None
        return self.trigger.event

    @property
    def all_steps(self) -> list[Step]:
        """The steps in order; a flow without ``steps`` has one immediate step, ``main``."""
        if self.steps:
            return self.steps
        return [Step(name="main")]

    def step(self, name: str) -> Step:
        for step in self.all_steps:
            if step.name == name:
                return step
        raise KeyError(f"flow {self.name!r} has no step {name!r}")

    def template_for(self, step: Step) -> str:
        """The template folder for a step: its own, else the flow's, else the flow's name."""
        return step.template or self.template or self.name

    def category_for(self, step: Step) -> Category:
        return step.category or self.category

    def queue_for(self, step: Step) -> str:
        return "send.bulk" if self.bulk else self.category_for(step).queue
