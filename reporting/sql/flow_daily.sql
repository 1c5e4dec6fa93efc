-- Recompute reporting.flow_daily for the cohort days (day, flow) listed in todo_days.
-- Parameter: %(too_fast_s)s — an open this many seconds or less after its delivery (or after
-- sending, when no delivery was seen) is a machine's: scanners and prefetchers fetch on arrival.
DELETE FROM reporting.flow_daily d USING todo_days t WHERE d.day = t.day AND d.flow = t.flow;

INSERT INTO reporting.flow_daily (
    day, flow, step, variant, locale, sent, delivered, hard_bounces, soft_bounces, complaints,
    rejects, delivery_delays, rendering_failures, unique_opens, human_opens, machine_opens,
    unique_clicks, unsubscribes, delivery_rate, bounce_rate, complaint_rate, open_rate,
    human_open_rate, click_rate, click_to_open_rate, unsubscribe_rate)
WITH ev AS (
    SELECT e.*, coalesce(e.flow, 'unknown') AS f,
           min(e.occurred_at) FILTER (WHERE e.event_type = 'delivery') OVER w AS delivered_at,
           min(e.sent_at) OVER w AS message_sent_at
      FROM reporting.email_events e
      JOIN todo_days t ON e.sent_day = t.day AND coalesce(e.flow, 'unknown') = t.flow
    WINDOW w AS (PARTITION BY e.ses_message_id, e.recipient)
),
message AS (  -- one row per message and recipient
    SELECT sent_day AS day, f AS flow,
           coalesce(max(step), 'unknown') AS step,
           coalesce(max(variant), 'unknown') AS variant,
           coalesce(max(locale), 'unknown') AS locale,
           bool_or(event_type = 'delivery') AS delivered,
           bool_or(event_type = 'bounce' AND bounce_type = 'permanent') AS hard,
           bool_or(event_type = 'bounce' AND bounce_type IS DISTINCT FROM 'permanent') AS soft,
           bool_or(event_type = 'complaint') AS complained,
           bool_or(event_type = 'reject') AS rejected,
           bool_or(event_type = 'delivery_delay') AS delayed,
           bool_or(event_type = 'rendering_failure') AS render_failed,
           bool_or(event_type = 'open') AS opened,
           bool_or(event_type = 'open' AND machine_reason IS NULL
                   AND occurred_at > coalesce(delivered_at, message_sent_at, occurred_at - interval '1 day')
                                     + make_interval(secs => %(too_fast_s)s)) AS human_opened,
           -- Following the unsubscribe link is not engagement; it is counted as an unsubscribe.
           bool_or(event_type = 'click' AND link !~* 'unsubscribe') AS clicked,
           bool_or(unsubscribed OR (event_type = 'click' AND link ~* 'unsubscribe')) AS unsubscribed
      FROM ev
     GROUP BY sent_day, f, ses_message_id, recipient
),
counts AS (
    SELECT day, flow, step, variant, locale,
           count(*) AS sent,
           count(*) FILTER (WHERE delivered) AS delivered,
           count(*) FILTER (WHERE hard) AS hard_bounces,
           count(*) FILTER (WHERE soft AND NOT hard) AS soft_bounces,
           count(*) FILTER (WHERE complained) AS complaints,
           count(*) FILTER (WHERE rejected) AS rejects,
           count(*) FILTER (WHERE delayed) AS delivery_delays,
           count(*) FILTER (WHERE render_failed) AS rendering_failures,
           count(*) FILTER (WHERE opened) AS unique_opens,
           count(*) FILTER (WHERE human_opened) AS human_opens,
           count(*) FILTER (WHERE opened AND NOT human_opened) AS machine_opens,
           count(*) FILTER (WHERE clicked) AS unique_clicks,
           count(*) FILTER (WHERE unsubscribed) AS unsubscribes
      FROM message
     GROUP BY day, flow, step, variant, locale
)
SELECT day, flow, step, variant, locale, sent, delivered, hard_bounces, soft_bounces, complaints,
       rejects, delivery_delays, rendering_failures, unique_opens, human_opens, machine_opens,
       unique_clicks, unsubscribes,
       round(delivered::numeric / nullif(sent, 0), 4),
       round((hard_bounces + soft_bounces)::numeric / nullif(sent, 0), 4),
       round(complaints::numeric / nullif(delivered, 0), 4),
       round(unique_opens::numeric / nullif(delivered, 0), 4),
       round(human_opens::numeric / nullif(delivered, 0), 4),
       round(unique_clicks::numeric / nullif(delivered, 0), 4),
       round(unique_clicks::numeric / nullif(unique_opens, 0), 4),
       round(unsubscribes::numeric / nullif(delivered, 0), 4)
  FROM counts;
