"""``declic report html``: one self-contained HTML file with a chart per flow and the insights.

Charts are drawn by matplotlib (Agg, no display needed) and inlined as SVG, so the file opens
anywhere — mail it, attach it to a ticket — without fetching anything. Every value that
comes from data is HTML-escaped.
"""

from __future__ import annotations

import html
import io
import json
from collections import defaultdict
from datetime import date, datetime
from typing import Any

# The colours the headless-browser test looks for in the screenshot.
COLOUR_SENT = "#1f6feb"
COLOUR_HUMAN = "#d62728"
COLOUR_RAW = "#ff9f1c"
COLOUR_CLICKS = "#2ca02c"

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#1b1f24;background:#fff}
h1{font-size:1.6rem} h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9rem} td,th{padding:.3rem .6rem;border-bottom:1px solid #eee;text-align:right}
td:first-child,th:first-child{text-align:left}
.insight{border-left:4px solid #888;padding:.4rem .8rem;margin:.6rem 0;background:#fafafa}
.critical{border-color:#b00020}.warning{border-color:#e69500}.info{border-color:#1f6feb}
.chart svg{max-width:100%;height:auto} .muted{color:#666;font-size:.85rem}
pre{white-space:pre-wrap;font-size:.8rem}
"""


def flow_chart_svg(flow: str, rows: list[dict[str, Any]]) -> str:
    """Volume (bars) and human/raw open and click rates (lines) over time for one flow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = [r["day"] for r in rows]
    # Several SVGs inline in one page share one id space: salt the ids per flow.
    with matplotlib.rc_context({"svg.hashsalt": f"declic-{flow}"}):
        return _draw(plt, matplotlib, flow, days, rows)


def _draw(plt: Any, matplotlib: Any, flow: str, days: list[date], rows: list[dict[str, Any]]) -> str:
    fig, (volume, rates) = plt.subplots(2, 1, figsize=(8, 4.6), sharex=True, height_ratios=(1, 1.3))
    try:
        volume.bar(days, [int(r["sent"]) for r in rows], color=COLOUR_SENT, label="sent")
        volume.set_ylabel("emails")
        volume.set_title(flow, loc="left", fontsize=11)
        for key, colour, label in (("human", COLOUR_HUMAN, "opens (human)"), ("raw", COLOUR_RAW, "opens (raw)"),
                                   ("clicks", COLOUR_CLICKS, "clicks")):
            values = [_rate(r, key) for r in rows]
            rates.plot(days, values, color=colour, marker="o", linewidth=2.5, label=label)
        rates.set_ylabel("rate of delivered")
        rates.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        rates.set_ylim(bottom=0)
        rates.legend(loc="upper left", fontsize=8, ncols=3)
        fig.autofmt_xdate()
        fig.tight_layout()
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg", metadata={"Date": None})  # same data, same file
    finally:
        plt.close(fig)
    svg = buffer.getvalue()
    return svg[svg.index("<svg"):]  # drop the XML prolog and DOCTYPE: inline SVG needs neither


def _rate(row: dict[str, Any], key: str) -> float | None:
    delivered = int(row["delivered"] or 0)
    if not delivered:
        return None
    numerator = {"human": row["human_opens"], "raw": row["unique_opens"], "clicks": row["unique_clicks"]}[key]
    return float(numerator) / delivered


def _pct(value: Any) -> str:
    return "—" if value is None else f"{float(value):.1%}"


def _json(value: Any) -> str:
    def default(item: Any) -> Any:
        return item.isoformat() if isinstance(item, date | datetime) else str(item)

    return json.dumps(value, indent=2, default=default, ensure_ascii=False)


def render_report(rows: list[dict[str, Any]], insights: list[dict[str, Any]], generated_at: datetime) -> str:
    """The whole HTML document from trend rows (:func:`reporting.trend.trend_rows`) and insights."""
    by_flow: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_flow[r["flow"]].append(r)
    e = html.escape
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width,initial-scale=1'>",
        f"<title>Déclic email report</title><style>{_CSS}</style></head><body>",
        "<h1>Déclic — how customers react to our emails</h1>",
        f"<p class='muted'>Generated {e(generated_at.isoformat(timespec='seconds'))}. Rates are of delivered "
        "emails; <b>human</b> opens leave out privacy-proxy prefetches and opens within seconds of delivery, "
        "<b>raw</b> opens count every open.</p>",
        "<h2 id='insights'>Insights</h2>",
    ]
    if not insights:
        parts.append("<p class='muted'>Nothing flagged.</p>")
    for i in insights:
        parts.append(
            f"<div class='insight {e(i['severity'])}'><b>{e(i['title'])}</b> "
            f"<span class='muted'>({e(i['kind'])}, {e(str(i['day']))})</span>"
            f"<p>{e(i['suggested_action'])}</p>"
            f"<details><summary>evidence</summary><pre>{e(_json(i['evidence']))}</pre></details></div>"
        )
    parts.append("<h2 id='flows'>Flows</h2>")
    summary = ["<table><tr><th>flow</th><th>sent 7d</th><th>opens human</th><th>opens raw</th>"
               "<th>clicks</th><th>bounces</th><th>complaints</th></tr>"]
    for flow, flow_rows in sorted(by_flow.items()):
        last = flow_rows[-1]
        summary.append(
            f"<tr><td><a href='#flow-{e(flow)}'>{e(flow)}</a></td><td>{int(last['sent_7d'])}</td>"
            f"<td>{_pct(last['human_open_rate_7d'])}</td><td>{_pct(last['open_rate_7d'])}</td>"
            f"<td>{_pct(last['click_rate_7d'])}</td><td>{_pct(last['bounce_rate_7d'])}</td>"
            f"<td>{_pct(last['complaint_rate_7d'])}</td></tr>"
        )
    summary.append("</table>")
    parts.extend(summary)
    for flow, flow_rows in sorted(by_flow.items()):
        chart = flow_chart_svg(flow, flow_rows)
        parts.append(f"<h2 id='flow-{e(flow)}'>{e(flow)}</h2><div class='chart'>{chart}</div>")
    parts.append("</body></html>")
    return "\n".join(parts)
