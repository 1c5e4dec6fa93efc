"""Insights: flagged conditions with their evidence and a suggested action.

Each kind is a pure function from plain rows (read from the trend tables) to :class:`Insight`
values; :func:`refresh_insights` reads the rows, calls them, and upserts the results by a
stable key, so refreshing twice on the same data changes nothing (rows are rewritten only when
their content differs, and a condition that is no longer true is removed from its scope).

Kinds:

- ``repeated_password_resets`` — contacts asking for more than N reset links in a day, with
  the daily trend of such contacts: the login page or the reset email is not working for them.
- ``engagement_drop`` — a flow whose human open rate or click rate over the last 7 days fell
  below its own baseline (the 28 days before), significantly (two-proportion z-test), shown
  with the subject and preheader the recipients saw.
- ``bounce_rate`` / ``complaint_rate`` — above the levels at which AWS reviews an account
  (bounces 5 %, complaints 0.1 %) or pauses it (10 %, 0.5 %), per flow and overall.
  https://docs.aws.amazon.com/ses/latest/dg/faqs-enforcement.html
- ``variant_winner`` — a subject/preheader variant whose open rate beats the others with
  p < alpha.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from psycopg import Connection
from psycopg.types.json import Jsonb

from reporting.copy import PreheaderLookup
from reporting.stats import enough_for_test, two_proportion_z


@dataclass(frozen=True)
class InsightSettings:
    reset_threshold: int = 3  # more than this many requests in a day is "repeated"
    min_delivered: int = 30  # below this, rates are noise
    drop_ratio: float = 0.8  # current < 80 % of baseline …
    alpha: float = 0.05  # … and significant at this level
    bounce_warning: float = 0.05
    bounce_critical: float = 0.10
    complaint_warning: float = 0.001
    complaint_critical: float = 0.005
    min_sent_for_rates: int = 20
    preheaders: PreheaderLookup | None = None


@dataclass(frozen=True)
class Insight:
    key: str
    kind: str
    severity: str
    day: date
    flow: str | None
    title: str
    evidence: dict[str, Any]
    suggested_action: str


@dataclass
class Scope:
    """What one refresh evaluated: insights in these (kind, flow, day) not re-found are removed."""

    kinds: list[str] = field(default_factory=list)
    flows: list[str] = field(default_factory=list)
    days: list[date] = field(default_factory=list)

    def add(self, kind: str, flow: str | None, day: date) -> None:
        self.kinds.append(kind)
        self.flows.append(flow or "")
        self.days.append(day)


def _rate(num: Any, den: Any) -> float | None:
    return round(float(num) / float(den), 4) if den else None


# -- pure rules ----------------------------------------------------------------------------------


def password_reset_insights(rows: Sequence[dict[str, Any]], top: Sequence[dict[str, Any]],
                            settings: InsightSettings) -> list[Insight]:
    """``rows``: (day, contacts_over, max_requests) for recent days, oldest first; ``top``: the worst contacts."""
    trend = [{"day": r["day"].isoformat(), "contacts": int(r["contacts_over"])} for r in rows]
    found = []
    for r in rows:
        if not r["contacts_over"]:
            continue
        day: date = r["day"]
        worst = [{"contact_id": t["contact_id"], "requests": int(t["requests"])} for t in top if t["day"] == day]
        found.append(Insight(
            key=f"repeated_password_resets:{day.isoformat()}",
            kind="repeated_password_resets",
            severity="warning" if r["contacts_over"] < 10 else "critical",
            day=day, flow="password_reset",
            title=f"{r['contacts_over']} customer(s) asked for more than {settings.reset_threshold} "
                  f"password resets on {day.isoformat()}",
            evidence={"threshold": settings.reset_threshold, "contacts": int(r["contacts_over"]),
                      "max_requests": int(r["max_requests"]), "top_contacts": worst,
                      "trend": [t for t in trend if t["day"] <= day.isoformat()][-14:]},
            suggested_action="Check that reset emails arrive within seconds and that the link works on "
                             "mobile; review what the login page says when a password is refused.",
        ))
    return found


def engagement_insights(row: dict[str, Any], subjects: Sequence[dict[str, Any]],
                        settings: InsightSettings) -> list[Insight]:
    """One flow's last 7 days against its 28-day baseline, for human opens and clicks."""
    found = []
    for metric, cur_key, base_key in (("human_open_rate", "cur_opens", "base_opens"),
                                      ("click_rate", "cur_clicks", "base_clicks")):
        n_cur, n_base = int(row["cur_delivered"] or 0), int(row["base_delivered"] or 0)
        x_cur, x_base = int(row[cur_key] or 0), int(row[base_key] or 0)
        if n_cur < settings.min_delivered or n_base < settings.min_delivered:
            continue
        if not enough_for_test(x_base, n_base):
            continue
        test = two_proportion_z(x_cur, n_cur, x_base, n_base)
        if not (test.rate_a < test.rate_b * settings.drop_ratio and test.significant(settings.alpha)):
            continue
        copy = []
        for s in subjects:
            preheader = settings.preheaders(row["flow"], s["variant"], s["locale"]) if settings.preheaders else None
            copy.append({"variant": s["variant"], "locale": s["locale"], "subject": s["subject"],
                         "preheader": preheader, "messages": int(s["n"])})
        day: date = row["day"]
        label = "open rate (human)" if metric == "human_open_rate" else "click rate"
        found.append(Insight(
            key=f"engagement_drop:{row['flow']}:{metric}:{day.isoformat()}",
            kind="engagement_drop", severity="warning", day=day, flow=row["flow"],
            title=f"{row['flow']}: {label} fell to {test.rate_a:.1%} from a baseline of {test.rate_b:.1%}",
            evidence={"metric": metric, "current": round(test.rate_a, 4), "baseline": round(test.rate_b, 4),
                      "delivered_7d": n_cur, "delivered_baseline": n_base, "z": round(test.z, 3),
                      "p_value": round(test.p_value, 5), "copy": copy,
                      "preheader_source": "the flow's preheader template rendered with its sample event"},
            suggested_action="Rethink the subject line and preheader (test a new variant); check the "
                             "send time and that the email still renders in the main clients.",
        ))
    return found


def rate_insights(row: dict[str, Any], settings: InsightSettings) -> list[Insight]:
    """Bounce and complaint rates over 7 days against AWS's review and pause levels."""
    found: list[Insight] = []
    sent, delivered = int(row["sent_7d"] or 0), int(row["delivered_7d"] or 0)
    if sent < settings.min_sent_for_rates:
        return found
    flow = row["flow"]
    scope = flow or "all flows"
    day: date = row["day"]
    for kind, rate, warn, crit, action in (
        ("bounce_rate", _rate(row["bounces_7d"], sent), settings.bounce_warning, settings.bounce_critical,
         "Find where these addresses come from (sign-up typos, old imports); confirm addresses at sign-up. "
         "Hard bounces are already suppressed."),
        ("complaint_rate", _rate(row["complaints_7d"], delivered), settings.complaint_warning,
         settings.complaint_critical,
         "Make sure this email is expected (consent, frequency) and that unsubscribing is one click."),
    ):
        if rate is None or rate <= warn:
            continue
        found.append(Insight(
            key=f"{kind}:{flow or '*'}:{day.isoformat()}", kind=kind,
            severity="critical" if rate > crit else "warning", day=day, flow=flow,
            title=f"{scope}: {kind.replace('_', ' ')} {rate:.2%} over 7 days (safe level {warn:.1%})",
            evidence={"rate_7d": rate, "sent_7d": sent, "delivered_7d": delivered,
                      "bounces_7d": int(row["bounces_7d"] or 0), "complaints_7d": int(row["complaints_7d"] or 0),
                      "warning_level": warn, "critical_level": crit},
            suggested_action=action,
        ))
    return found


def variant_insights(rows: Sequence[dict[str, Any]], settings: InsightSettings) -> list[Insight]:
    """``rows``: one flow and step's variants over 28 days; the best against the runner-up."""
    ranked = sorted((r for r in rows if int(r["delivered"] or 0) >= settings.min_delivered),
                    key=lambda r: (-(int(r["human_opens"]) / int(r["delivered"])), r["variant"]))
    if len(ranked) < 2:
        return []
    best, second = ranked[0], ranked[1]
    test = two_proportion_z(int(best["human_opens"]), int(best["delivered"]),
                            int(second["human_opens"]), int(second["delivered"]))
    if not (test.significant(settings.alpha) and enough_for_test(int(second["human_opens"]), int(second["delivered"]))):
        return []
    day: date = best["day"]
    return [Insight(
        key=f"variant_winner:{best['flow']}:{best['step']}:{day.isoformat()}",
        kind="variant_winner", severity="info", day=day, flow=best["flow"],
        title=f"{best['flow']}: variant {best['variant']} opens at {test.rate_a:.1%} vs "
              f"{test.rate_b:.1%} for {second['variant']} (p={test.p_value:.3f})",
        evidence={"step": best["step"], "winner": best["variant"], "runner_up": second["variant"],
                  "z": round(test.z, 3), "p_value": round(test.p_value, 5),
                  "variants": [{"variant": r["variant"], "delivered": int(r["delivered"]),
                                "human_opens": int(r["human_opens"]), "clicks": int(r["clicks"]),
                                "human_open_rate": _rate(r["human_opens"], r["delivered"]),
                                "subject": r["subject"]} for r in ranked]},
        suggested_action=f"Give variant {best['variant']} all the weight, then test a new challenger.",
    )]


# -- reading and writing -------------------------------------------------------------------------

_RESETS = """
WITH latest AS (SELECT max(day) AS d FROM reporting.password_resets_daily)
SELECT day, count(*) FILTER (WHERE requests > %(t)s) AS contacts_over, max(requests) AS max_requests
  FROM reporting.password_resets_daily, latest
 WHERE day > latest.d - 14
 GROUP BY day ORDER BY day
"""
_RESETS_TOP = """
SELECT day, contact_id, requests FROM (
    SELECT day, contact_id, requests,
           row_number() OVER (PARTITION BY day ORDER BY requests DESC, contact_id) AS r
      FROM reporting.password_resets_daily
     WHERE requests > %(t)s AND day > (SELECT max(day) FROM reporting.password_resets_daily) - 7
) x WHERE r <= 10
"""
_ENGAGEMENT = """
WITH latest AS (SELECT flow, max(day) AS d FROM reporting.flow_daily WHERE flow <> 'unknown' GROUP BY flow)
SELECT f.flow, l.d AS day,
       sum(delivered) FILTER (WHERE f.day > l.d - 7) AS cur_delivered,
       sum(human_opens) FILTER (WHERE f.day > l.d - 7) AS cur_opens,
       sum(unique_clicks) FILTER (WHERE f.day > l.d - 7) AS cur_clicks,
       sum(delivered) FILTER (WHERE f.day <= l.d - 7) AS base_delivered,
       sum(human_opens) FILTER (WHERE f.day <= l.d - 7) AS base_opens,
       sum(unique_clicks) FILTER (WHERE f.day <= l.d - 7) AS base_clicks
  FROM reporting.flow_daily f JOIN latest l USING (flow)
 WHERE f.day > l.d - 35
 GROUP BY f.flow, l.d ORDER BY f.flow
"""
_SUBJECTS = """
SELECT coalesce(variant, 'unknown') AS variant, coalesce(locale, 'unknown') AS locale, subject,
       count(DISTINCT ses_message_id) AS n
  FROM reporting.email_events
 WHERE flow = %(flow)s AND sent_day > %(day)s::date - 7 AND sent_day <= %(day)s AND subject IS NOT NULL
 GROUP BY 1, 2, 3 ORDER BY n DESC, 1, 2, 3 LIMIT 6
"""
_RATES = """
WITH latest AS (SELECT max(day) AS d FROM reporting.flow_daily),
per_flow AS (
    SELECT flow, l.d AS day, sum(sent) AS sent_7d, sum(delivered) AS delivered_7d,
           sum(hard_bounces + soft_bounces) AS bounces_7d, sum(complaints) AS complaints_7d
      FROM reporting.flow_daily, latest l WHERE day > l.d - 7 GROUP BY flow, l.d
)
SELECT * FROM per_flow
UNION ALL
SELECT NULL, day, sum(sent_7d), sum(delivered_7d), sum(bounces_7d), sum(complaints_7d) FROM per_flow GROUP BY day
"""
_VARIANTS = """
WITH latest AS (SELECT flow, max(day) AS d FROM reporting.flow_daily WHERE flow <> 'unknown' GROUP BY flow)
SELECT f.flow, f.step, f.variant, l.d AS day, sum(delivered) AS delivered, sum(human_opens) AS human_opens,
       sum(unique_clicks) AS clicks,
       (SELECT subject FROM reporting.email_events e
         WHERE e.flow = f.flow AND e.variant = f.variant AND e.sent_day > l.d - 28 AND e.subject IS NOT NULL
         GROUP BY subject ORDER BY count(*) DESC, subject LIMIT 1) AS subject
  FROM reporting.flow_daily f JOIN latest l USING (flow)
 WHERE f.day > l.d - 28
 GROUP BY f.flow, f.step, f.variant, l.d ORDER BY f.flow, f.step, f.variant
"""
_UPSERT = """
INSERT INTO reporting.insights AS i (key, kind, severity, day, flow, title, evidence, suggested_action)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (key) DO UPDATE SET severity = excluded.severity, title = excluded.title,
       evidence = excluded.evidence, suggested_action = excluded.suggested_action, updated_at = now()
 WHERE (i.severity, i.title, i.evidence, i.suggested_action)
       IS DISTINCT FROM (excluded.severity, excluded.title, excluded.evidence, excluded.suggested_action)
RETURNING i.id
"""
_PRUNE = """
DELETE FROM reporting.insights i
 USING unnest(%(kinds)s::text[], %(flows)s::text[], %(days)s::date[]) AS s(kind, flow, day)
 WHERE i.kind = s.kind AND coalesce(i.flow, '') = s.flow AND i.day = s.day AND i.key <> ALL(%(keys)s::text[])
"""


def compute_insights(conn: Connection[Any], settings: InsightSettings) -> tuple[list[Insight], Scope]:
    """Every current insight, and the scopes evaluated to find them."""
    found: list[Insight] = []
    scope = Scope()
    params = {"t": settings.reset_threshold}
    resets = conn.execute(_RESETS, params).fetchall()
    found += password_reset_insights(resets, conn.execute(_RESETS_TOP, params).fetchall(), settings)
    for r in resets[-7:]:
        scope.add("repeated_password_resets", "password_reset", r["day"])
    for row in conn.execute(_ENGAGEMENT).fetchall():
        subjects = conn.execute(_SUBJECTS, {"flow": row["flow"], "day": row["day"]}).fetchall()
        found += engagement_insights(row, subjects, settings)
        scope.add("engagement_drop", row["flow"], row["day"])
    for row in conn.execute(_RATES).fetchall():
        found += rate_insights(row, settings)
        scope.add("bounce_rate", row["flow"], row["day"])
        scope.add("complaint_rate", row["flow"], row["day"])
    variants = conn.execute(_VARIANTS).fetchall()
    for key in sorted({(r["flow"], r["step"]) for r in variants}):
        group = [r for r in variants if (r["flow"], r["step"]) == key]
        found += variant_insights(group, settings)
        scope.add("variant_winner", key[0], group[0]["day"])
    return found, scope


def refresh_insights(conn: Connection[Any], settings: InsightSettings) -> int:
    """Upsert current insights and prune those no longer true; the number of rows changed."""
    found, scope = compute_insights(conn, settings)
    changed = 0
    for i in found:
        row = conn.execute(_UPSERT, (i.key, i.kind, i.severity, i.day, i.flow, i.title, Jsonb(i.evidence),
                                     i.suggested_action)).fetchone()
        changed += row is not None
    pruned = conn.execute(_PRUNE, {"kinds": scope.kinds, "flows": scope.flows, "days": scope.days,
                                   "keys": [i.key for i in found]})
    return changed + (pruned.rowcount or 0)


def recent(conn: Connection[Any], days: int = 28) -> list[dict[str, Any]]:
    """Insights of the last ``days`` days of data, most severe and newest first."""
    rows: list[dict[str, Any]] = conn.execute(
        "SELECT * FROM reporting.insights WHERE day > (SELECT max(day) FROM reporting.insights) - %s"
        " ORDER BY CASE severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END, day DESC, key",
        (days,),
    ).fetchall()
    return rows

