"""Date triggers, daylight saving, Feb 29 and quiet hours, on a controlled clock."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from flows.model import DateTrigger, QuietHours
from flows.schedules import (
    firings_between,
    inactive_since,
    local_to_utc,
    occurrence_in,
    parse_stored_date,
    quiet_until,
)

PARIS = ZoneInfo("Europe/Paris")
NY = ZoneInfo("America/New_York")
KIRITIMATI = ZoneInfo("Pacific/Kiritimati")  # UTC+14, west of the date line's far side
PAGO_PAGO = ZoneInfo("Pacific/Pago_Pago")  # UTC-11


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_stored_dates_in_every_accepted_form() -> None:
    """Full dates, datetimes and year-less dates parse; impossible ones do not."""
    assert parse_stored_date("1990-12-03") == parse_stored_date("1990-12-03T00:00:00Z")
    assert parse_stored_date("--02-29") is not None and parse_stored_date("--02-29").year is None  # type: ignore[union-attr]
    assert parse_stored_date("1990-02-30") is None
    assert parse_stored_date(19901203) is None


def test_feb_29_falls_on_feb_28_in_common_years() -> None:
    """A leap-day birthday is celebrated on 28 February in years without 29 February."""
    leap = parse_stored_date("1996-02-29")
    assert leap is not None
    assert occurrence_in(leap, 2027) == date(2027, 2, 28)
    assert occurrence_in(leap, 2028) == date(2028, 2, 29)


def test_birthday_at_nine_local_on_both_sides_of_the_date_line() -> None:
    """09:00 local is 19:00 UTC the day before in Kiritimati and 20:00 UTC the same day in Pago Pago."""
    trigger = DateTrigger(attribute="birthday", at=time(9))
    stored = parse_stored_date("1990-12-03")
    assert stored is not None
    window = (utc(2026, 12, 1), utc(2026, 12, 5))
    [east] = firings_between(trigger, stored, KIRITIMATI, *window)
    [west] = firings_between(trigger, stored, PAGO_PAGO, *window)
    assert east.due_at == utc(2026, 12, 2, 19)
    assert west.due_at == utc(2026, 12, 3, 20)
    assert east.occurrence == west.occurrence == date(2026, 12, 3)
    assert east.years == 36


def test_offset_three_days_before() -> None:
    """An offset of -3d fires three days before the date, keyed by the date itself."""
    trigger = DateTrigger(attribute="member_since", at=time(10), offset="-3d")  # type: ignore[arg-type]
    stored = parse_stored_date("2023-03-10")
    assert stored is not None
    [firing] = firings_between(trigger, stored, PARIS, utc(2026, 3, 1), utc(2026, 3, 20))
    assert firing.due_at == utc(2026, 3, 7, 9)  # 10:00 CET
    assert firing.occurrence == date(2026, 3, 10) and firing.years == 3


def test_spring_forward_gap_moves_forward() -> None:
    """02:30 does not exist in Paris on 29 March 2026: it fires at 03:30 CEST (01:30 UTC)."""
    assert local_to_utc(date(2026, 3, 29), time(2, 30), PARIS) == utc(2026, 3, 29, 1, 30)
    assert local_to_utc(date(2026, 3, 8), time(2, 30), NY) == utc(2026, 3, 8, 7, 30)


def test_fall_back_ambiguity_takes_the_first() -> None:
    """02:30 happens twice in Paris on 25 October 2026: the first one (CEST) is used."""
    assert local_to_utc(date(2026, 10, 25), time(2, 30), PARIS) == utc(2026, 10, 25, 0, 30)
    assert local_to_utc(date(2026, 11, 1), time(1, 30), NY) == utc(2026, 11, 1, 5, 30)


def test_daylight_saving_changes_the_utc_hour_not_the_local_one() -> None:
    """A 09:00 birthday is 08:00 UTC in winter and 07:00 UTC in summer in Paris."""
    trigger = DateTrigger(attribute="birthday", at=time(9))
    winter, summer = parse_stored_date("--01-15"), parse_stored_date("--07-15")
    assert winter is not None and summer is not None
    [w] = firings_between(trigger, winter, PARIS, utc(2027, 1, 1), utc(2027, 2, 1))
    [s] = firings_between(trigger, summer, PARIS, utc(2027, 7, 1), utc(2027, 8, 1))
    assert (w.due_at.hour, s.due_at.hour) == (8, 7)
    assert w.years is None


@pytest.mark.parametrize(
    ("local_now", "expected_local_end"),
    [
        (datetime(2026, 11, 27, 22, 15), datetime(2026, 11, 28, 8, 0)),  # evening: ends tomorrow
        (datetime(2026, 11, 27, 6, 0), datetime(2026, 11, 27, 8, 0)),  # early morning: today
        (datetime(2026, 11, 27, 12, 0), None),  # daytime: not quiet
    ],
)
def test_quiet_hours_hold_until_the_window_opens(local_now: datetime, expected_local_end: datetime | None) -> None:
    """Inside 21:00–08:00 local, a marketing step waits until 08:00 local."""
    quiet = QuietHours(start=time(21), end=time(8))
    held = quiet_until(quiet, local_now.replace(tzinfo=PARIS), PARIS)
    expected = None if expected_local_end is None else expected_local_end.replace(tzinfo=PARIS).astimezone(UTC)
    assert held == expected


def test_inactivity() -> None:
    """A contact is inactive once the duration has passed since the last activity, not before."""
    now = utc(2026, 11, 27)
    assert inactive_since(now - timedelta(days=91), timedelta(days=90), now)
    assert not inactive_since(now - timedelta(days=89), timedelta(days=90), now)
    assert not inactive_since(None, timedelta(days=90), now)
