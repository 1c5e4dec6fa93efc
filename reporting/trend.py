"""Reading the trend tables for people: rows for the terminal table and the HTML report."""

from __future__ import annotations

from typing import Any

from psycopg import Connection
from rich.table import Table

_TREND = """
SELECT t.*, coalesce(d.sent, 0) AS sent, coalesce(d.delivered, 0) AS delivered,
       coalesce(d.human_opens, 0) AS human_opens, coalesce(d.unique_opens, 0) AS unique_opens,
       coalesce(d.unique_clicks, 0) AS unique_clicks, coalesce(d.bounces, 0) AS bounces,
       coalesce(d.complaints, 0) AS complaints
  FROM reporting.flow_trends t
  LEFT JOIN (SELECT day, flow, sum(sent) AS sent, sum(delivered) AS delivered, sum(human_opens) AS human_opens,
                    sum(unique_opens) AS unique_opens, sum(unique_clicks) AS unique_clicks,
                    sum(hard_bounces + soft_bounces) AS bounces, sum(complaints) AS complaints
               FROM reporting.flow_daily GROUP BY day, flow) d USING (day, flow)
 WHERE (%(flow)s::text IS NULL OR t.flow = %(flow)s)
   AND t.day > (SELECT max(day) FROM reporting.flow_trends) - %(days)s
 ORDER BY t.flow, t.day
"""


def trend_rows(conn: Connection[Any], *, flow: str | None = None, days: int = 7) -> list[dict[str, Any]]:
    """One row per flow and day for the last ``days`` days of data, with that day's figures."""
    rows: list[dict[str, Any]] = conn.execute(_TREND, {"flow": flow, "days": days}).fetchall()
    return rows


def _pct(value: Any) -> str:
    return "—" if value is None else f"{float(value):.1%}"


def _points(value: Any) -> str:
    if value is None:
        return "—"
    points = float(value) * 100
    colour = "green" if points > 0 else "red" if points < 0 else "white"
    return f"[{colour}]{points:+.1f} pt[/]"


def trend_table(rows: list[dict[str, Any]]) -> Table:
    """The rich table ``declic report trend`` prints; human and raw open rates side by side."""
    table = Table(title="Déclic — email trends (open rates: human / raw incl. machine opens)")
    for name in ("flow", "day", "sent", "deliv.", "opens 7d human", "opens 7d raw", "clicks 7d",
                 "bounce 7d", "complaint 7d", "opens WoW", "clicks WoW", "sent 28d"):
        table.add_column(name, justify="left" if name in ("flow", "day") else "right")
    for r in rows:
        table.add_row(
            r["flow"], r["day"].isoformat(), str(r["sent"]), str(r["delivered"]),
            _pct(r["human_open_rate_7d"]), _pct(r["open_rate_7d"]), _pct(r["click_rate_7d"]),
            _pct(r["bounce_rate_7d"]), _pct(r["complaint_rate_7d"]),
            _points(r["human_open_rate_wow"]), _points(r["click_rate_wow"]), str(r["sent_28d"]),
        )
    return table
