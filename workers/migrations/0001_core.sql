-- The core pipeline: events, contacts, sends, suppressions and dead letters.
-- Postgres is the source of truth; the broker only carries work that is due now.

CREATE TABLE events (
    id          text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 255),  -- the producer's key
    type        text NOT NULL,
    occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    contact_id  text NOT NULL,
    payload     jsonb NOT NULL
);
CREATE INDEX events_contact ON events (contact_id, occurred_at);

CREATE TABLE contacts (
    id               text PRIMARY KEY,
    email            text NOT NULL,
    locale           text,
    timezone         text,
    attributes       jsonb NOT NULL DEFAULT '{}',
    opt_in           boolean NOT NULL DEFAULT false,
    unsubscribed_at  timestamptz,
    purchases        integer NOT NULL DEFAULT 0,
    total_spent      numeric(16, 4) NOT NULL DEFAULT 0,
    last_purchase_at timestamptz,
    last_activity_at timestamptz,
    -- occurred_at of the event the profile fields came from: an older event arriving late
    -- does not overwrite a newer address or locale.
    profile_at       timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX contacts_email ON contacts (lower(email));

CREATE TABLE sends (
    id             uuid PRIMARY KEY,
    -- (event, flow, step): claimed before SES is called, so nothing is sent twice.
    send_key       text NOT NULL UNIQUE,
    event_id       text NOT NULL REFERENCES events (id),
    contact_id     text NOT NULL REFERENCES contacts (id),
    flow           text NOT NULL,
    step           text NOT NULL,
    variant        text NOT NULL,
    category       text NOT NULL,
    queue          text NOT NULL,
    state          text NOT NULL CHECK (state IN
                       ('scheduled', 'pending', 'sending', 'retry', 'sent', 'skipped', 'failed')),
    reason         text,
    due_at         timestamptz NOT NULL,
    attempts       integer NOT NULL DEFAULT 0,
    locale         text,
    subject        text,
    ses_message_id text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    claimed_at     timestamptz,
    sent_at        timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sends_event ON sends (event_id);
CREATE INDEX sends_contact_flow ON sends (contact_id, flow, created_at);
CREATE INDEX sends_due ON sends (due_at) WHERE state IN ('scheduled', 'pending', 'retry');
CREATE INDEX sends_message ON sends (ses_message_id) WHERE ses_message_id IS NOT NULL;

CREATE TABLE suppressions (
    email      text PRIMARY KEY,  -- lower-cased
    reason     text NOT NULL,     -- hard_bounce, complaint, manual
    source     text,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE dead_letters (
    id          bigserial PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('event', 'send')),
    ref         text,               -- the event id or the send id, when known
    flow        text,
    reason      text NOT NULL,
    payload     jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    replayed_at timestamptz
);
CREATE INDEX dead_letters_open ON dead_letters (created_at) WHERE replayed_at IS NULL;
