-- Recompute reporting.flow_trends for the flows in %(flows)s, one row per flow and calendar
-- day from its first to its last day of data (days without mail count as zero).
DELETE FROM reporting.flow_trends WHERE flow = ANY(%(flows)s);

INSERT INTO reporting.flow_trends (
    day, flow, sent_7d, delivered_7d, human_open_rate_7d, open_rate_7d, click_rate_7d,
    bounce_rate_7d, complaint_rate_7d, sent_28d, delivered_28d, human_open_rate_28d, open_rate_28d,
    click_rate_28d, bounce_rate_28d, complaint_rate_28d, sent_prev_7d, human_open_rate_prev_7d,
    click_rate_prev_7d, sent_wow, human_open_rate_wow, click_rate_wow)
WITH daily AS (
    SELECT flow, day, sum(sent) AS sent, sum(delivered) AS delivered, sum(human_opens) AS human,
           sum(unique_opens) AS opens, sum(unique_clicks) AS clicks,
           sum(hard_bounces + soft_bounces) AS bounces, sum(complaints) AS complaints
      FROM reporting.flow_daily WHERE flow = ANY(%(flows)s)
     GROUP BY flow, day
),
span AS (SELECT flow, min(day) AS lo, max(day) AS hi FROM daily GROUP BY flow),
filled AS (
    SELECT s.flow, d::date AS day, coalesce(x.sent, 0) AS sent, coalesce(x.delivered, 0) AS delivered,
           coalesce(x.human, 0) AS human, coalesce(x.opens, 0) AS opens, coalesce(x.clicks, 0) AS clicks,
           coalesce(x.bounces, 0) AS bounces, coalesce(x.complaints, 0) AS complaints
      FROM span s
     CROSS JOIN LATERAL generate_series(s.lo, s.hi, interval '1 day') AS d
      LEFT JOIN daily x ON x.flow = s.flow AND x.day = d::date
),
windows AS (
    SELECT flow, day,
           sum(sent) OVER w7 AS sent7, sum(delivered) OVER w7 AS del7, sum(human) OVER w7 AS human7,
           sum(opens) OVER w7 AS opens7, sum(clicks) OVER w7 AS clicks7,
           sum(bounces) OVER w7 AS bounces7, sum(complaints) OVER w7 AS complaints7,
           sum(sent) OVER w28 AS sent28, sum(delivered) OVER w28 AS del28, sum(human) OVER w28 AS human28,
           sum(opens) OVER w28 AS opens28, sum(clicks) OVER w28 AS clicks28,
           sum(bounces) OVER w28 AS bounces28, sum(complaints) OVER w28 AS complaints28,
           coalesce(sum(sent) OVER p7, 0) AS sentp, coalesce(sum(delivered) OVER p7, 0) AS delp,
           coalesce(sum(human) OVER p7, 0) AS humanp, coalesce(sum(clicks) OVER p7, 0) AS clicksp
      FROM filled
    WINDOW w7 AS (PARTITION BY flow ORDER BY day ROWS BETWEEN 6 PRECEDING AND CURRENT ROW),
           w28 AS (PARTITION BY flow ORDER BY day ROWS BETWEEN 27 PRECEDING AND CURRENT ROW),
           p7 AS (PARTITION BY flow ORDER BY day ROWS BETWEEN 13 PRECEDING AND 7 PRECEDING)
),
rates AS (
    SELECT *,
           round(human7 / nullif(del7, 0), 4) AS hr7, round(clicks7 / nullif(del7, 0), 4) AS cr7,
           round(humanp / nullif(delp, 0), 4) AS hrp, round(clicksp / nullif(delp, 0), 4) AS crp
      FROM windows
)
SELECT day, flow, sent7, del7, hr7, round(opens7 / nullif(del7, 0), 4), cr7,
       round(bounces7 / nullif(sent7, 0), 4), round(complaints7 / nullif(del7, 0), 4),
       sent28, del28, round(human28 / nullif(del28, 0), 4), round(opens28 / nullif(del28, 0), 4),
       round(clicks28 / nullif(del28, 0), 4), round(bounces28 / nullif(sent28, 0), 4),
       round(complaints28 / nullif(del28, 0), 4),
       sentp, hrp, crp, round(sent7 / nullif(sentp, 0) - 1, 4), hr7 - hrp, cr7 - crp
  FROM rates;
