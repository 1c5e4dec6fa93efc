-- Recompute reporting.password_resets_daily for the UTC days in %(days)s, from every
-- password-reset event (sent or not: the frequency cap drops some, and they still count).
DELETE FROM reporting.password_resets_daily WHERE day = ANY(%(days)s::date[]);

INSERT INTO reporting.password_resets_daily (day, contact_id, requests, sent, first_at, last_at)
SELECT (e.occurred_at AT TIME ZONE 'UTC')::date, e.contact_id, count(*),
       count(*) FILTER (WHERE EXISTS (SELECT 1 FROM sends s WHERE s.event_id = e.id AND s.state = 'sent')),
       min(e.occurred_at), max(e.occurred_at)
  FROM events e
 WHERE e.type = ANY(%(types)s)
   AND e.occurred_at >= (SELECT min(d) FROM unnest(%(days)s::date[]) d)::timestamp AT TIME ZONE 'UTC'
   AND e.occurred_at < ((SELECT max(d) FROM unnest(%(days)s::date[]) d) + 1)::timestamp AT TIME ZONE 'UTC'
   AND (e.occurred_at AT TIME ZONE 'UTC')::date = ANY(%(days)s::date[])
 GROUP BY 1, 2;
