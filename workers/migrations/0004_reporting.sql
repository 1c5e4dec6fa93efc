-- Reporting: SES notifications (raw, one row per notification and recipient) and the trend
-- tables analysts query. Documented column by column in docs/reporting.md.

CREATE SCHEMA IF NOT EXISTS reporting;

-- Raw events, partitioned by month of occurred_at so old months can be detached or dropped
-- whole. Partitions are created on demand by reporting.ensure_month() before each write.
CREATE TABLE reporting.email_events (
    id              bigint GENERATED ALWAYS AS IDENTITY,
    -- sha256 of (message id, type, recipient, time, link or feedback id): a notification
    -- delivered twice (SNS is at-least-once; SQS and HTTPS both subscribed) is stored once.
    event_key       text NOT NULL,
    event_type      text NOT NULL CHECK (event_type IN
                        ('send', 'delivery', 'bounce', 'complaint', 'reject', 'open', 'click',
                         'rendering_failure', 'delivery_delay', 'subscription')),
    occurred_at     timestamptz NOT NULL,
    sent_at         timestamptz,          -- mail.timestamp: when SES accepted the message
    -- The cohort day: the UTC day the message was sent, so an open on Tuesday of Monday's
    -- email counts for Monday's open rate.
    sent_day        date NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    ses_message_id  text NOT NULL,
    sns_message_id  text,
    recipient       text NOT NULL,        -- lower-cased address
    send_id         uuid,                 -- sends.id, from the send_id tag or the message id
    contact_id      text,
    flow            text,
    step            text,
    variant         text,
    locale          text,
    subject         text,
    bounce_type     text CHECK (bounce_type IN ('permanent', 'transient', 'undetermined')),
    bounce_subtype  text,
    feedback_type   text,
    link            text,
    user_agent      text,
    ip_address      text,
    machine_reason  text,                 -- apple_mpp, google_proxy, yahoo_proxy, scanner
    unsubscribed    boolean NOT NULL DEFAULT false,
    detail          text,
    raw             jsonb NOT NULL,
    PRIMARY KEY (id, occurred_at),
    UNIQUE (event_key, occurred_at)
) PARTITION BY RANGE (occurred_at);

CREATE INDEX email_events_message ON reporting.email_events (ses_message_id);
CREATE INDEX email_events_cohort ON reporting.email_events (sent_day, flow);
CREATE INDEX email_events_unjoined ON reporting.email_events (received_at) WHERE send_id IS NULL;

CREATE FUNCTION reporting.ensure_month(at timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    first date := date_trunc('month', at AT TIME ZONE 'UTC')::date;
    name text := format('email_events_%s', to_char(first, 'YYYY_MM'));
BEGIN
    IF to_regclass('reporting.' || name) IS NOT NULL THEN
        RETURN;
    END IF;
    -- Two ingesters meeting a new month at once: the lock makes the second one wait and see it.
    PERFORM pg_advisory_xact_lock(hashtext('reporting.' || name));
    IF to_regclass('reporting.' || name) IS NULL THEN
        EXECUTE format(
            'CREATE TABLE reporting.%I PARTITION OF reporting.email_events FOR VALUES FROM (%L) TO (%L)',
            name, (first::timestamp AT TIME ZONE 'UTC'), ((first + interval '1 month')::timestamp AT TIME ZONE 'UTC'));
    END IF;
END $$;

-- SNS message ids already processed: a redelivery is recognised before any work is done.
CREATE TABLE reporting.sns_messages (
    message_id  text PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sns_messages_age ON reporting.sns_messages (received_at);

-- Bodies that could not be understood, with the reason; never dropped silently.
CREATE TABLE reporting.ingest_dead_letters (
    id          bigserial PRIMARY KEY,
    source      text NOT NULL,   -- sqs, sns_http
    ref         text,            -- the SQS or SNS message id, when known
    reason      text NOT NULL,
    body        text NOT NULL,   -- as received: it may not even be JSON
    created_at  timestamptz NOT NULL DEFAULT now(),
    replayed_at timestamptz
);
CREATE INDEX ingest_dead_letters_open ON reporting.ingest_dead_letters (created_at) WHERE replayed_at IS NULL;

-- Cohort days whose figures changed since the last aggregation; filled in the same
-- transaction as the events, emptied by the aggregation in the transaction that recomputes them.
CREATE TABLE reporting.pending_days (
    day  date NOT NULL,
    flow text NOT NULL,
    PRIMARY KEY (day, flow)
);

-- When each periodic job last ran and how far it got.
CREATE TABLE reporting.watermarks (
    name       text PRIMARY KEY,
    position   timestamptz,
    rows       bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE reporting.flow_daily (
    day                 date NOT NULL,
    flow                text NOT NULL,
    step                text NOT NULL,
    variant             text NOT NULL,
    locale              text NOT NULL,
    sent                integer NOT NULL,
    delivered           integer NOT NULL,
    hard_bounces        integer NOT NULL,
    soft_bounces        integer NOT NULL,
    complaints          integer NOT NULL,
    rejects             integer NOT NULL,
    delivery_delays     integer NOT NULL,
    rendering_failures  integer NOT NULL,
    unique_opens        integer NOT NULL,   -- raw: any open, machine or human
    human_opens         integer NOT NULL,
    machine_opens       integer NOT NULL,   -- opened, but only ever by machines
    unique_clicks       integer NOT NULL,
    unsubscribes        integer NOT NULL,
    delivery_rate       numeric(7, 4),
    bounce_rate         numeric(7, 4),
    complaint_rate      numeric(7, 4),
    open_rate           numeric(7, 4),      -- raw
    human_open_rate     numeric(7, 4),
    click_rate          numeric(7, 4),
    click_to_open_rate  numeric(7, 4),
    unsubscribe_rate    numeric(7, 4),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (day, flow, step, variant, locale)
);
CREATE INDEX flow_daily_flow ON reporting.flow_daily (flow, day);

CREATE TABLE reporting.flow_trends (
    day                      date NOT NULL,
    flow                     text NOT NULL,
    sent_7d                  integer NOT NULL,
    delivered_7d             integer NOT NULL,
    human_open_rate_7d       numeric(7, 4),
    open_rate_7d             numeric(7, 4),
    click_rate_7d            numeric(7, 4),
    bounce_rate_7d           numeric(7, 4),
    complaint_rate_7d        numeric(7, 4),
    sent_28d                 integer NOT NULL,
    delivered_28d            integer NOT NULL,
    human_open_rate_28d      numeric(7, 4),
    open_rate_28d            numeric(7, 4),
    click_rate_28d           numeric(7, 4),
    bounce_rate_28d          numeric(7, 4),
    complaint_rate_28d       numeric(7, 4),
    sent_prev_7d             integer NOT NULL,
    human_open_rate_prev_7d  numeric(7, 4),
    click_rate_prev_7d       numeric(7, 4),
    sent_wow                 numeric(9, 4),  -- relative change of sent_7d vs the 7 days before
    human_open_rate_wow      numeric(7, 4),  -- change in rate points (0.05 = +5 points)
    click_rate_wow           numeric(7, 4),
    updated_at               timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (flow, day)
);

-- Password-reset requests per contact and UTC day, from the events table (every request,
-- including those the frequency cap or freshness limit did not send).
CREATE TABLE reporting.password_resets_daily (
    day         date NOT NULL,
    contact_id  text NOT NULL,
    requests    integer NOT NULL,
    sent        integer NOT NULL,
    first_at    timestamptz NOT NULL,
    last_at     timestamptz NOT NULL,
    PRIMARY KEY (day, contact_id)
);

CREATE TABLE reporting.insights (
    id               bigserial PRIMARY KEY,
    key              text NOT NULL UNIQUE,   -- kind:flow:...:day — stable across runs
    kind             text NOT NULL CHECK (kind IN
                         ('repeated_password_resets', 'engagement_drop', 'bounce_rate', 'complaint_rate',
                          'variant_winner')),
    severity         text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    day              date NOT NULL,
    flow             text,
    title            text NOT NULL,
    evidence         jsonb NOT NULL,
    suggested_action text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX insights_day ON reporting.insights (day DESC, kind);

-- Password resets are read from the core events table by type and arrival.
CREATE INDEX IF NOT EXISTS events_type_received ON events (type, received_at);
