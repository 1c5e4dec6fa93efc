"""When date and inactivity triggers fire, and quiet hours: pure time arithmetic.

All inputs are aware datetimes or plain dates; all outputs are UTC. Local wall-clock times
follow the contact's IANA time zone, with the two daylight-saving rules users expect: a
time that does not exist (the spring-forward gap) moves forward by the gap, and a time that
exists twice (the autumn fall-back) takes its first occurrence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from flows.model import DateTrigger, QuietHours

# "1990-12-03", "1990-12-03T…", "--12-03" (ISO 8601 without year) or "12-03".
_DATE = re.compile(r"^(?:(\d{4})-|--)?(\d{2})-(\d{2})(?:$|T)")


@dataclass(frozen=True)
class StoredDate:
    """A contact's date attribute: month and day, and the year when it is known."""

    year: int | None
    month: int
    day: int


def parse_stored_date(value: object) -> StoredDate | None:
    """``1990-12-03``, ``1990-12-03T…`` or ``--12-03``/``12-03`` (no year); None if unusable."""
    if not isinstance(value, str):
        return None
    match = _DATE.match(value.strip())
    if not match:
        return None
    year = int(match.group(1)) if match.group(1) else None
    month, day = int(match.group(2)), int(match.group(3))
    try:
        date(year or 2000, month, day)  # 2000 is a leap year: --02-29 is valid
    except ValueError:
        return None
    return StoredDate(year, month, day)


def occurrence_in(stored: StoredDate, year: int) -> date:
    """The date's occurrence in a year; 29 February falls on 28 February in other years."""
    try:
        return date(year, stored.month, stored.day)
    except ValueError:
        return date(year, 2, 28)


def local_to_utc(day: date, at: time, zone: ZoneInfo) -> datetime:
    """A local wall-clock time as UTC, moving a gap time forward and taking an ambiguous one's first."""
    naive = datetime.combine(day, at)
    # fold=0 applies the offset in force *before* a transition: for a gap time that lands
    # after the gap (02:30 → 03:30 when clocks jump at 02:00), for a repeated time it is the
    # first of the two.
    return naive.replace(tzinfo=zone, fold=0).astimezone(UTC)


@dataclass(frozen=True)
class DateFiring:
    occurrence: date  # the anniversary itself (the send key's date)
    due_at: datetime  # UTC moment to send: occurrence + offset, at the local time
    years: int | None


def firings_between(
    trigger: DateTrigger, stored: StoredDate, zone: ZoneInfo, start: datetime, end: datetime
) -> list[DateFiring]:
    """The firings whose due time falls in [start, end), in order."""
    found: list[DateFiring] = []
    for year in range(start.year - 1, end.year + 2):
        occurrence = occurrence_in(stored, year)
        fire_day = occurrence + timedelta(days=trigger.offset.days)
        due = local_to_utc(fire_day, trigger.at, zone) + timedelta(seconds=trigger.offset.seconds)
        if start <= due < end:
            years = None if stored.year is None else year - stored.year
            found.append(DateFiring(occurrence, due, years))
    return found


def quiet_until(quiet: QuietHours, now: datetime, zone: ZoneInfo) -> datetime | None:
    """If ``now`` is inside the contact's quiet hours, the UTC moment they end; else None."""
    local = now.astimezone(zone)
    if not quiet.contains(local.time()):
        return None
    end_day = local.date()
    if quiet.start > quiet.end and local.time() >= quiet.start:
        end_day += timedelta(days=1)  # the window spans midnight: it ends tomorrow morning
    return local_to_utc(end_day, quiet.end, zone)


def zone_where_it_is_past(at: time, now: datetime) -> str:
    """A fixed-offset zone where the local time at ``now`` is between ``at`` and two hours after it."""
    for offset in range(-12, 15):  # Etc/GMT-14 to Etc/GMT+12 cover every hour of the day
        name = f"Etc/GMT{-offset:+d}" if offset else "UTC"
        local = now.astimezone(ZoneInfo(name))
        start = datetime.combine(local.date(), at, tzinfo=local.tzinfo)
        if start <= local < start + timedelta(hours=2):
            return name
    return "UTC"


def daytime_zone(now: datetime | None = None) -> str:
    """A fixed-offset zone where it is now midday: no quiet hours hold a demo's or a test's mail."""
    return zone_where_it_is_past(time(12), now or datetime.now(UTC))


def inactive_since(last_activity_at: datetime | None, after: timedelta, now: datetime) -> bool:
    """True when the contact has been inactive for at least ``after``."""
    return last_activity_at is not None and now - last_activity_at >= after
