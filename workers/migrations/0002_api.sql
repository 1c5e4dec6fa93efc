-- The HTTP API: keys, stored as SHA-256 hashes with their scopes and own rate limit.
-- The key itself is shown once, at creation; only its hash and a short prefix (to recognise
-- it in `declic keys list`) are kept.

CREATE TABLE api_keys (
    id              bigserial PRIMARY KEY,
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    prefix          text NOT NULL,                    -- first characters, for people
    key_hash        text NOT NULL UNIQUE,             -- hex SHA-256 of the whole key
    scopes          text[] NOT NULL CHECK (cardinality(scopes) > 0),
    rate_per_minute integer CHECK (rate_per_minute IS NULL OR rate_per_minute > 0),  -- NULL: the default
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz
);
CREATE INDEX api_keys_active ON api_keys (name) WHERE revoked_at IS NULL;
